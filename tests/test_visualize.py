"""DeconvNet projections, saliency, guided backprop, top activations and the figures."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from tinyfn import models, visualize as V
from tinyfn.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, Softmax, serial


def _set(params, index, **arrays):
    params = list(params)
    params[index] = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
    return tuple(params)


def _tiny(model, input_shape=(None, 1, 4, 4)):
    _, params = model.init(jax.random.key(0), input_shape)
    return params


X4 = np.array([[1.0, -2.0, 0.5, 3.0], [4.0, 0.0, -1.0, 2.0], [-3.0, 2.5, 6.0, -0.5], [0.2, 1.0, 0.1, 5.0]], np.float32)[
    None, None
]


def test_projection_through_pool_relu_conv_worked_by_hand():
    # conv 1x1 (w = 2, b = 0) -> relu -> pool 2x2. Pooled maps: max(2·x) per window = [[8, 6], [5, 12]].
    model = serial(Conv2D(1, 1), ReLU(), MaxPool2D(2))
    params = _set(_tiny(model), 0, w=[[[[2.0]]]], b=[0.0])
    rec = V.record(model, params, X4)
    np.testing.assert_array_equal(np.asarray(rec.outputs[2])[0, 0], [[8.0, 6.0], [5.0, 12.0]])
    proj = np.asarray(V.deconvnet(model, params, X4[0], "pool1", 0))
    # strongest = 12 from x[2, 2] = 6; unpool puts 12 at (2, 2); relu keeps it; deconv 1x1 multiplies by 2 -> 24
    expected = np.zeros((1, 4, 4), np.float32)
    expected[0, 2, 2] = 24.0
    np.testing.assert_array_equal(proj, expected)
    # "topk" with k = 2 keeps 12 and 8 (from x[1, 0] = 4): 24 at (2, 2) and 16 at (1, 0)
    expected[0, 1, 0] = 16.0
    np.testing.assert_array_equal(np.asarray(V.deconvnet(model, params, X4, "pool1", 0, mode="topk", k=2))[0], expected)


def _relu_net():
    # conv_a 1x1 (w = 1) -> relu -> conv_b 2x2 (w = [[1, -1], [0, 2]]); the 2x2 filter sends mixed signs down.
    model = serial(Conv2D(1, 1), ReLU(), Conv2D(1, 2))
    params = _set(_tiny(model), 0, w=[[[[1.0]]]], b=[0.0])
    return model, _set(params, 2, w=[[[[1.0, -1.0], [0.0, 2.0]]]], b=[0.0])


def test_deconvnet_rectifies_the_backward_signal_at_relu_regardless_of_the_forward_sign():
    model, params = _relu_net()
    x = X4
    rec = V.record(model, params, x)
    y = np.asarray(rec.outputs[2])[0, 0]
    r, q = np.unravel_index(np.argmax(y), y.shape)
    v = y[r, q]
    proj = np.asarray(V.deconvnet(model, params, x, "conv2", 0))[0, 0]
    # deconv of v at (r, q) with the 2x2 filter gives [[v, -v], [0, 2v]] at rows r..r+1, cols q..q+1;
    # the ReLU step rectifies it to [[v, 0], [0, 2v]] even where the forward input was negative.
    expected = np.zeros((4, 4), np.float32)
    expected[r, q], expected[r + 1, q + 1] = v, 2 * v
    np.testing.assert_allclose(proj, expected, rtol=1e-6)


def test_the_three_rules_differ_exactly_where_their_relu_rules_differ():
    model, params = _relu_net()
    rec = V.record(model, params, X4)
    seed = V.select(rec.outputs[2], 0, "all", values=False)  # the whole map, ones: signal below conv_b has both signs
    down = {rule: np.asarray(V.project_down(model, params, rec, "conv2", seed, rule))[0, 0] for rule in V.RULES}
    below = np.asarray(jax.vjp(lambda h: model.children[2].apply(params[2], h), rec.inputs[2])[1](seed)[0])[0, 0]
    x = X4[0, 0]  # conv_a is the identity here, so the ReLU's forward input is x itself
    assert ((x > 0) & (below < 0)).any() and ((x <= 0) & (below > 0)).any()  # both disagreements occur
    np.testing.assert_allclose(down["deconvnet"], np.maximum(below, 0), rtol=1e-6)
    np.testing.assert_allclose(down["saliency"], np.where(x > 0, below, 0), rtol=1e-6)
    np.testing.assert_allclose(down["guided"], np.where((x > 0) & (below > 0), below, 0), rtol=1e-6)
    differ = ~np.isclose(down["deconvnet"], down["saliency"])
    np.testing.assert_array_equal(differ, ((x > 0) != (below > 0)) & (below != 0))
    # where the forward input is positive and the signal coming down is positive, all three agree
    agree = (x > 0) & (below > 0)
    for rule in V.RULES:
        np.testing.assert_allclose(down[rule][agree], below[agree], rtol=1e-6)


def test_saliency_is_the_gradient_of_the_class_score():
    model = models.lenet5()
    _, params = model.init(jax.random.key(3), (None, 1, 28, 28))
    x = jax.random.normal(jax.random.key(4), (1, 1, 28, 28))
    grad = jax.grad(lambda x: model.apply(params, x)[0, 7])(x)
    np.testing.assert_allclose(V.saliency(model, params, x, 7), grad, rtol=1e-5, atol=1e-6)
    guided = np.asarray(V.guided_backprop(model, params, x, 7))
    assert guided.shape == x.shape and np.isfinite(guided).all() and np.abs(guided).max() > 0


def test_first_layer_projection_is_the_filter_at_the_receptive_field(rng):
    model = serial(Conv2D(3, 3, padding=1))
    _, params = model.init(jax.random.key(5), (None, 2, 7, 6))
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    for c in range(3):
        y = np.asarray(model.apply(params, x))[0, c]
        r, q = np.unravel_index(np.argmax(y), y.shape)
        expected = np.zeros((2, 7 + 2, 6 + 2), np.float32)  # padded canvas, then crop the padding
        expected[:, r : r + 3, q : q + 3] = y[r, q] * np.asarray(params[0]["w"][c])
        proj = np.asarray(V.deconvnet(model, params, x, 0, c))[0]
        np.testing.assert_allclose(proj, expected[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-6)
        r0, r1, c0, c1 = V.receptive_field(model, (None, 2, 7, 6), 0, (r, q))
        assert (r0, r1, c0, c1) == (max(r - 1, 0), min(r + 2, 7), max(q - 1, 0), min(q + 2, 6))
        outside = np.ones((7, 6), bool)
        outside[r0:r1, c0:c1] = False
        assert not proj[:, outside].any()


def test_top_activations_are_the_true_top_k(rng):
    model = serial(Conv2D(4, 3), ReLU(), MaxPool2D(2), Conv2D(3, 3))
    _, params = model.init(jax.random.key(6), (None, 1, 12, 12))
    images = rng.standard_normal((37, 1, 12, 12)).astype(np.float32)
    top = V.top_activations(model, params, images, "conv2", channels=[2, 0], k=5, batch_size=8)
    full = np.asarray(model.apply(params, images))  # brute force: every activation of every image
    for row, c in enumerate([2, 0]):
        per_image = full[:, c].reshape(37, -1)
        order = np.argsort(-per_image.max(axis=1), kind="stable")[:5]
        np.testing.assert_array_equal(top.images[row], order)
        np.testing.assert_allclose(top.values[row], per_image.max(axis=1)[order], rtol=1e-5)
        for (h, w), i in zip(top.positions[row], order):
            assert full[i, c, h, w] == pytest.approx(per_image[i].max(), rel=1e-5)


def test_linear_layers_are_handled_and_softmax_is_refused():
    model = serial(Conv2D(2, 3), ReLU(), Flatten(), Linear(4), Softmax())
    _, params = model.init(jax.random.key(7), (None, 1, 6, 6))
    x = jax.random.normal(jax.random.key(8), (1, 1, 6, 6))
    assert V.deconvnet(model, params, x, "linear1", 1).shape == x.shape
    with pytest.raises(ValueError, match=r"cannot project through layer 'softmax1' \(Softmax\)"):
        V.deconvnet(model, params, x, "softmax1", 0)


def test_bad_layer_and_channel_give_clear_errors():
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    x = jnp.zeros((1, 28, 28))
    with pytest.raises(ValueError, match=r"layer 'conv9' does not exist; expected one of conv1, relu1, pool1"):
        V.deconvnet(model, params, x, "conv9", 0)
    with pytest.raises(ValueError, match=r"layer index 12 is out of range: the model has 12 layers"):
        V.deconvnet(model, params, x, 12, 0)
    with pytest.raises(ValueError, match=r"channel 16 is out of range for layer 'conv2' with 16 channels"):
        V.deconvnet(model, params, x, "conv2", 16)
    with pytest.raises(ValueError, match=r"channel 6 is out of range for layer 'conv1' with 6 channels"):
        V.top_activations(model, params, np.zeros((4, 1, 28, 28), np.float32), "conv1", channels=[6], k=2)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        V.deconvnet(model, params, x, "conv2", 0, mode="best")


def _png(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def test_figures_are_written_with_the_expected_size_and_are_not_blank(tmp_path, rng):
    imgs = rng.standard_normal((9, 1, 5, 5))
    fig = V.plot_deconv_grid(
        [imgs, imgs[::-1]],
        [imgs**2, imgs],
        tmp_path / "grid.png",
        layer="conv2",
        channels=[0, 3],
        image_indices=[range(9), range(9, 18)],
    )
    assert isinstance(fig, Figure)
    pic = _png(tmp_path / "grid.png")
    assert pic.shape[:2] == (650, 640) and pic[..., :3].var() > 1e-3
    V.plot_filters(rng.standard_normal((6, 1, 5, 5)), tmp_path / "filters.png")
    pic = _png(tmp_path / "filters.png")
    assert pic.shape[:2] == (185, 780)  # figsize (1.3 * 6, 1.45 + 0.4) inches at 100 dpi
    assert pic[..., :3].var() > 1e-3
    V.plot_feature_maps(rng.standard_normal((16, 10, 10)), tmp_path / "maps.png", title="conv2 · image 0")
    pic = _png(tmp_path / "maps.png")
    assert pic.shape[:2] == (400, 1200) and pic[..., :3].var() > 1e-3  # figsize (1.5 * 8, 1.7 * 2 + 0.6)
    cols = {
        "deconvnet": rng.standard_normal((2, 1, 8, 8)),
        "saliency": rng.standard_normal((2, 1, 8, 8)),
        "guided backprop": rng.standard_normal((2, 1, 8, 8)),
    }
    V.plot_comparison(rng.standard_normal((2, 1, 8, 8)), cols, tmp_path / "cmp.png", row_titles=["image 0", "image 1"])
    pic = _png(tmp_path / "cmp.png")
    assert pic.shape[:2] == (420, 760) and pic[..., :3].var() > 1e-3


def test_plots_return_figures_without_writing_when_no_path_is_given(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = V.plot_filters(rng.standard_normal((4, 1, 3, 3)))
    assert isinstance(fig, Figure) and len(fig.axes) >= 4 and list(tmp_path.iterdir()) == []


def _boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # draws this one figure; the process's backend is untouched
    canvas.draw()
    renderer = canvas.get_renderer()
    return [
        (ax.get_title(), ax.get_window_extent(renderer), ax.title.get_window_extent(renderer))
        for ax in fig.axes
        if ax.get_title()
    ]


def test_feature_map_titles_do_not_overlap_the_row_above_and_the_input_is_shown(rng):
    fig = V.plot_feature_maps(
        rng.standard_normal((16, 10, 10)), title="conv2 · image 0", image=rng.standard_normal((1, 28, 28))
    )
    boxes = _boxes(fig)
    assert boxes[0][0] == "input" and sum(t.startswith("channel") for t, _, _ in boxes) == 16
    for title, _, title_box in boxes:  # no title runs into another axes' image
        for other, ax_box, _ in boxes:
            if other != title:
                assert not title_box.overlaps(ax_box), (title, other)


def _layer_with_three_channels():
    model = serial(Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Linear(2))
    _, params = model.init(jax.random.key(0), (None, 1, 6, 6))
    return model, params, jax.random.normal(jax.random.key(1), (2, 1, 6, 6))


@pytest.mark.parametrize("channel", [3, 7, -1])
def test_out_of_range_channels_are_refused_by_every_entry_point(channel):
    model, params, x = _layer_with_three_channels()
    message = rf"channel {channel} is out of range for layer 'pool1' with 3 channels"
    with pytest.raises(ValueError, match="make_projector: " + message):
        V.make_projector(model, "pool1")(params, x, channel)
    with pytest.raises(ValueError, match="deconvnet: " + message):
        V.deconvnet(model, params, x, "pool1", channel)
    with pytest.raises(ValueError, match="saliency: " + message):
        V.saliency(model, params, x, channel, layer="pool1")
    with pytest.raises(ValueError, match="guided_backprop: " + message):
        V.guided_backprop(model, params, x, channel, layer="pool1")
    with pytest.raises(ValueError, match=rf"select: channel {channel} is out of range"):
        V.select(jnp.ones((1, 3, 2, 2)), channel)


def test_an_out_of_range_channel_under_an_outer_jit_gives_nan_not_a_picture():
    model, params, x = _layer_with_three_channels()
    project = jax.jit(V.make_projector(model, "pool1"))
    assert np.isfinite(np.asarray(project(params, x, 2))).all()
    assert np.isnan(np.asarray(project(params, x, 7))).all()
    assert np.isnan(np.asarray(project(params, x, -1))).all()


def test_numpy_integer_channels_are_accepted_and_floats_refused():
    model, params, x = _layer_with_three_channels()
    expected = np.asarray(V.deconvnet(model, params, x, "pool1", 1))
    for channel in (np.int64(1), np.int32(1), np.array(1), jnp.asarray(1)):
        np.testing.assert_array_equal(np.asarray(V.deconvnet(model, params, x, "pool1", channel)), expected)
    with pytest.raises(TypeError, match=r"deconvnet: channel must be an int, got 1.0"):
        V.deconvnet(model, params, x, "pool1", 1.0)


def test_deconvnet_compiles_once_per_model_whatever_the_channel(monkeypatch):
    from tinyfn.visualize import project as project_module

    model, params, x = _layer_with_three_channels()
    project_module._PROJECTORS.clear()
    monkeypatch.setattr(project_module, "project_down", chex.assert_max_traces(project_module.project_down, n=1))
    for channel in (0, 1, 2, np.int64(1)):
        V.deconvnet(model, params, x, "pool1", channel)


def test_a_projector_compiles_once_across_channels(monkeypatch):
    from tinyfn.visualize import project as project_module

    model, params, x = _layer_with_three_channels()
    monkeypatch.setattr(project_module, "project_down", chex.assert_max_traces(project_module.project_down, n=1))
    project = V.make_projector(model, "conv1")
    for channel in range(3):
        project(params, x, channel)


def test_a_stateful_model_is_recorded_in_evaluation_mode_and_walked_through_batch_norm():
    from tinyfn.layers import BatchNorm2D, init_with_state, residual

    model = serial(
        Conv2D(2, 3), BatchNorm2D(), ReLU(), residual(serial(Conv2D(2, 3, padding=1), ReLU())), Flatten(), Linear(3)
    )
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 6, 6))
    state = (state[0], {"mean": jnp.asarray([0.5, -1.0]), "var": jnp.asarray([4.0, 0.25])}, *state[2:])
    x = jax.random.normal(jax.random.key(1), (2, 1, 6, 6))
    table = V.layer_table(model)
    assert [t.name for t in table] == ["conv1", "bn1", "relu1", "residual1", "flatten1", "linear1"]
    rec = V.record(model, params, x, model_state=state)
    conv = np.asarray(rec.outputs[0])
    expected = (conv - np.array([0.5, -1.0])[None, :, None, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)[
        None, :, None, None
    ]
    np.testing.assert_allclose(
        rec.outputs[1], expected, rtol=1e-5, atol=1e-6
    )  # the running statistics, not the batch's
    with pytest.raises(ValueError, match="record: the model carries state.*model_state="):
        V.record(model, params, x)
    assert V.make_projector(model, "conv1", model_state=state)(params, x, 1).shape == x.shape
    assert V.make_projector(model, "linear1", model_state=state)(params, x, 1).shape == x.shape  # bn, residual
    top = V.top_activations(model, params, np.asarray(x), "residual1", [0], k=1, model_state=state)
    assert top.images.shape == (1, 1)
