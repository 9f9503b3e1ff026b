"""Seeing inside every built-in model: the DeconvNet walk through batch norm, average pooling and residual blocks
(checked against a PyTorch DeconvNet), saliency and guided backprop with the model's state, and the vision
transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import models, visualize as V
from tinyfn.layers import (
    GELU,
    Add,
    AvgPool2D,
    BatchNorm2D,
    Concat,
    Conv2D,
    FanOut,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    Linear,
    MaxPool2D,
    ReLU,
    apply_with_state,
    branch,
    init_with_state,
    parallel,
    residual,
    serial,
)


def _small_resnet():
    """conv - bn - relu - maxpool - a residual block with a 1x1 projection - relu - avgpool - global pool - linear."""
    body = serial(Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), Conv2D(4, 3, padding=1), BatchNorm2D())
    return serial(
        Conv2D(3, 3, padding=1),
        BatchNorm2D(),
        ReLU(),
        MaxPool2D(2),
        residual(body, serial(Conv2D(4, 1), BatchNorm2D())),
        ReLU(),
        AvgPool2D(2),
        GlobalAvgPool2D(),
        Linear(5),
    )


def _random_state(tree, rng):
    """Every batch norm's running statistics and affine params made non-trivial, in float64."""

    def fill(path, a):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return jnp.asarray(rng.uniform(0.5, 2.0, a.shape))
        if "gamma" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape) * rng.choice([-1.0, 1.0], a.shape))
        return jnp.asarray(rng.standard_normal(a.shape))

    return jax.tree_util.tree_map_with_path(fill, tree)


def _torch_deconvnet(params, state, x, unit):
    """Zeiler & Fergus's DeconvNet of the small ResNet in float64 PyTorch ops, from the same weights."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    (stem, bn0, _, _, block, _, _, _, lin), (_, st0, _, _, block_state, *_) = params, state
    body, short = block["body"], block["shortcut"]

    def bn(p, s, h):
        return F.batch_norm(h, t(s["mean"]), t(s["var"]), t(p["gamma"]), t(p["beta"]), training=False, eps=1e-5)

    def scale(p, s, g):  # the transposed map of y = a x + b: a g, a = gamma / sqrt(var + eps)
        return g * (t(p["gamma"]) / torch.sqrt(t(s["var"]) + 1e-5))[None, :, None, None]

    def conv(p, h, pad):
        return F.conv2d(h, t(p["w"]), t(p["b"]), padding=pad)

    def deconv(p, g, pad):
        return F.conv_transpose2d(g, t(p["w"]), padding=pad)  # the transposed filters, no bias

    h = F.relu(bn(bn0, st0, conv(stem, t(x), 1)))
    pooled, switches = F.max_pool2d(h, 2, return_indices=True)
    sb, ss = block_state["body"], block_state["shortcut"]
    a = F.relu(bn(body[1], sb[1], conv(body[0], pooled, 1)))
    y = F.relu(bn(body[4], sb[4], conv(body[3], a, 1)) + bn(short[1], ss[1], conv(short[0], pooled, 0)))
    logits = F.avg_pool2d(y, 2).mean(dim=(2, 3)) @ t(lin["w"]) + t(lin["b"])
    g = torch.zeros_like(logits)
    g[:, unit] = logits[:, unit]  # the one unit, with its value
    g = g @ t(lin["w"]).T  # linear: W^T
    g = (g / 4)[:, :, None, None].expand(-1, -1, 2, 2)  # global pool over 2x2: g / HW everywhere
    g = F.conv_transpose2d(g, torch.full((4, 1, 2, 2), 0.25, dtype=torch.float64), stride=2, groups=4)  # avg pool
    g = F.relu(g)
    g_body = deconv(body[0], scale(body[1], sb[1], F.relu(deconv(body[3], scale(body[4], sb[4], g), 1))), 1)
    g_short = deconv(short[0], scale(short[1], ss[1], g), 0)
    g = F.max_unpool2d(g_body + g_short, switches, 2, output_size=h.shape[2:])  # the two paths summed, unpooled
    return deconv(stem, scale(bn0, st0, F.relu(g)), 1).numpy()


def test_deconvnet_through_batch_norm_pools_and_a_residual_block_matches_pytorch(rng, x64):
    model = _small_resnet()
    _, params, state = init_with_state(model, jax.random.key(0), (None, 2, 8, 8))
    params, state = _random_state(params, rng), _random_state(state, rng)
    x = rng.standard_normal((2, 2, 8, 8))
    unit = 3
    ours = np.asarray(V.deconvnet(model, params, x, "linear1", unit, model_state=state))
    assert ours.dtype == np.float64
    expected = _torch_deconvnet(params, state, x, unit)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_saliency_and_guided_backprop_take_model_state_and_run_in_evaluation_mode(rng, x64):
    model = _small_resnet()
    _, params, state = init_with_state(model, jax.random.key(1), (None, 2, 8, 8))
    params, state = _random_state(params, rng), _random_state(state, rng)
    x = jnp.asarray(rng.standard_normal((1, 2, 8, 8)))
    grad = jax.jit(jax.grad(lambda a: apply_with_state(model, params, state, a, train=False)[0][0, 2]))(x)
    np.testing.assert_allclose(V.saliency(model, params, x, 2, model_state=state), grad, rtol=1e-10, atol=1e-13)
    guided = np.asarray(V.guided_backprop(model, params, x, 2, model_state=state))
    assert guided.shape == x.shape and np.abs(guided).max() > 0 and not np.allclose(guided, grad)
    for fn in (V.saliency, V.guided_backprop):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: the model carries state.*pass model_state="):
            fn(model, params, x, 2)
    with pytest.raises(ValueError, match=r"deconvnet: the model carries state.*pass model_state="):
        V.deconvnet(model, params, x, "linear1", 2)


@pytest.fixture(scope="module")
def tiny_resnet():
    model = models.resnet(num_classes=3, width=2, blocks_per_stage=1, stages=2)
    _, params, state = jax.jit(lambda k: init_with_state(model, k, (None, 1, 8, 8)))(jax.random.key(2))
    state = jax.tree_util.tree_map(lambda a: a + 0.3, state)  # running statistics unlike the initial ones
    return model, params, state, jax.random.normal(jax.random.key(3), (2, 1, 8, 8))


def test_the_resnets_last_block_and_global_pool_can_be_projected_and_stay_one_table_entry(tiny_resnet):
    model, params, state, x = tiny_resnet
    names = [t.name for t in V.layer_table(model)]
    assert names == [
        "conv1",
        "bn1",
        "relu1",
        "block1.residual1",
        "block1.relu2",
        "block2.residual1",
        "block2.relu2",
        "gap1",
        "linear1",
    ]
    for layer in ("block2.residual1", "gap1"):  # the last block, and the global pool above it
        proj = np.asarray(V.deconvnet(model, params, x, layer, 1, model_state=state))
        assert proj.shape == x.shape and np.isfinite(proj).all() and np.abs(proj).max() > 0


def test_the_walk_through_residual_branch_and_fan_combinators_is_the_transpose_of_their_linear_part(rng, x64):
    # without ReLUs a model of residual blocks, branches and fans in evaluation mode is affine, y = A x + b: the
    # walk must give A^T g exactly, which is the gradient of <g, y>
    block = residual(
        serial(Conv2D(3, 3, padding=1), BatchNorm2D(), AvgPool2D(3, 1, 1)), serial(Conv2D(3, 1), BatchNorm2D())
    )
    fan = (FanOut(2), parallel(Conv2D(3, 1), Identity()), Add())
    model = serial(block, branch(Conv2D(2, 1), Conv2D(1, 3, padding=1)), Concat(), *fan, GlobalAvgPool2D())
    _, params, state = init_with_state(model, jax.random.key(4), (None, 2, 5, 5))
    params, state = _random_state(params, rng), _random_state(state, rng)
    x = jnp.asarray(rng.standard_normal((1, 2, 5, 5)))
    g = jnp.asarray(rng.standard_normal((1, 3)))

    @jax.jit
    def walk_and_gradient(params, state, x, g):
        rec = V.record(model, params, x, model_state=state)
        walked = V.project_down(model, params, rec, "gap1", g, model_state=state)
        return walked, jax.vjp(lambda a: apply_with_state(model, params, state, a)[0], x)[1](g)[0]

    walked, expected = walk_and_gradient(params, state, x, g)
    np.testing.assert_allclose(walked, expected, rtol=1e-10, atol=1e-13)


def test_the_deconvnet_refuses_a_gelu_by_name_and_guided_backprop_gates_it(rng, x64):
    model = serial(Flatten(), Linear(3), GELU(), Linear(2))
    _, params = model.init(jax.random.key(5), (None, 1, 2, 2))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x = jnp.asarray(rng.standard_normal((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"deconvnet: cannot project through layer 'gelu1' \(GELU\)"):
        V.deconvnet(model, params, x, "linear2", 0)
    w1, w2 = np.asarray(params[1]["w"]), np.asarray(params[3]["w"])
    h = np.asarray(x).reshape(1, 4) @ w1 + np.asarray(params[1]["b"])
    g = w2[:, 1][None]  # the signal reaching the GELU for class 1
    slope = np.asarray(
        jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(jnp.asarray(h[0])).reshape(1, -1), np.float64
    )
    grad = (g * slope) @ w1.T
    guided = (np.where(g > 0, g, 0) * slope) @ w1.T  # g · gelu'(h) · [g > 0]
    assert (g > 0).any() and (g < 0).any()
    np.testing.assert_allclose(V.saliency(model, params, x, 1), grad.reshape(x.shape), rtol=1e-10)
    np.testing.assert_allclose(V.guided_backprop(model, params, x, 1), guided.reshape(x.shape), rtol=1e-10)


def test_the_receptive_field_of_a_residual_block_is_the_union_of_its_paths():
    model = serial(MaxPool2D(2), residual(serial(Conv2D(2, 3, padding=1), Conv2D(2, 3, padding=1)), Conv2D(2, 1)))
    # unit (1, 1) of the block: two 3x3 convs see rows 0..3 of the 5x5 pooled map (the 1x1 shortcut row 1 only),
    # i.e. pixels 0..7; unit (4, 0): pooled rows 2..4 (shortcut 4) and columns 0..2, pixels 4..9 and 0..5
    assert V.receptive_field(model, (None, 1, 10, 10), "residual1", (1, 1)) == (0, 8, 0, 8)
    assert V.receptive_field(model, (None, 1, 10, 10), "residual1", (4, 0)) == (4, 10, 0, 6)


def _run_dir(tmp_path, model, state_key=7):
    """A run directory as ``python -m tinyfn train`` writes it (untrained weights), for the embedded data."""
    from tinyfn.data import load_embedded
    from tinyfn.train import model_record, save_checkpoint

    _, params, state = init_with_state(model, jax.random.key(state_key), (None, 1, 28, 28))
    state = jax.tree_util.tree_map(lambda a: a + 0.5, state)
    metadata = {
        "model": model_record(model, (1, 28, 28)),
        "data": "embedded",
        "normalization": {"mean": 0.3, "std": 0.35},
        "classes": list(load_embedded("test").classes),
    }
    save_checkpoint(tmp_path / "checkpoint.safetensors", params, model_state=state or None, metadata=metadata)
    return tmp_path


def _visualize(run, capsys, *flags):
    from tinyfn.cli import main

    assert main(["visualize", str(run), "--k", "2", "--images", "2", *flags]) == 0
    captured = capsys.readouterr()
    written = [line for line in captured.out.splitlines() if line.endswith(".png")]
    return sorted(p.rsplit("/", 1)[1] for p in written), captured.err


@pytest.mark.slow
def test_the_visualize_command_draws_every_figure_of_a_resnet_run(tmp_path, capsys):
    run = _run_dir(tmp_path, models.resnet(width=2, blocks_per_stage=1, stages=2))
    names, err = _visualize(run, capsys, "--channels", "0", "1")
    assert names == [
        "comparison.png",
        "deconv_block1.residual1.png",
        "deconv_block2.residual1.png",
        "deconv_conv1.png",
        "feature_maps_block1.residual1.png",
        "feature_maps_block2.residual1.png",
        "feature_maps_conv1.png",
        "filters_conv1.png",
    ], err
    assert sorted(p.name for p in (run / "visualize").iterdir()) == names
    assert "cannot project" not in err and "visualize: block2.residual1: the top 2 of 2000 test images" in err
    assert err.count("visualize: ") >= 6  # a line per stage as it works


@pytest.mark.slow
def test_the_visualize_command_draws_saliency_and_attention_for_a_vit_run(tmp_path, capsys):
    run = _run_dir(tmp_path, models.vit(patch=7, embed_dim=8, depth=2, num_heads=2))
    names, err = _visualize(run, capsys)
    assert names == ["attention_maps.png", "attention_rollout.png", "comparison.png"], err
    assert "comparison.png without the DeconvNet: visualize: cannot project through layer 'patches1'" in err
    assert "visualize: saliency, guided backprop of the predicted class" in err


@pytest.fixture(scope="module")
def tiny_vit():
    model = models.vit(num_classes=3, patch=4, embed_dim=8, depth=1, num_heads=2)
    params = jax.jit(lambda k: model.init(k, (None, 1, 8, 8))[1])(jax.random.key(8))  # one compilation, not eager
    return model, params, jax.random.normal(jax.random.key(9), (1, 1, 8, 8))


def test_saliency_on_a_vit_is_the_gradient_and_guided_backprop_gates_its_gelus(tiny_vit):
    model, params, x = tiny_vit
    grad = jax.jit(jax.grad(lambda a: model.apply(params, a)[0, 1]))(x)
    np.testing.assert_allclose(V.saliency(model, params, x, 1), grad, rtol=1e-4, atol=1e-6)
    block = V.layer_table(model)[1]
    inner = V.transformer_block_inner(block.layer)  # the walk's view of a block computes what the block computes
    embed = model.children[0]

    @jax.jit
    def both(p, a):
        h = embed.apply(p[0], a)
        return inner.apply(p[1], h), block.layer.apply(p[1], h)

    ours, theirs = both(params, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    guided = np.asarray(V.guided_backprop(model, params, x, 1))
    assert guided.shape == x.shape and np.isfinite(guided).all() and not np.allclose(guided, grad, atol=1e-6)
    with pytest.raises(ValueError, match=r"deconvnet: cannot project through layer 'patches1' \(PatchEmb"):
        V.deconvnet(model, params, x, "linear1", 1)
