"""Checkpoints: exact round trip, atomic writes, clear errors, and PyTorch-compatible layouts."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import models
from tinyfn.train import CheckpointError, load_checkpoint, load_model, save_checkpoint, sgd


@pytest.fixture
def lenet():
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    return model, params


def test_round_trip_is_exact(lenet, tmp_path):
    _, params = lenet
    opt = sgd(0.1, momentum=0.9)
    state = opt.init(params)._asdict()  # a dict tree (checkpoints name NamedTuple fields once the format records them)
    state["velocity"] = jax.tree_util.tree_map(lambda a: a + 0.5, state["velocity"])
    key = jax.random.key(7)
    meta = {"model": {"name": "lenet5"}, "normalization": {"mean": 0.2860, "std": 0.3530}, "note": [1, 2.5, "x"]}
    save_checkpoint(tmp_path / "c.safetensors", params, opt_state=state, step=123, key=key, metadata=meta)
    ck = load_checkpoint(tmp_path / "c.safetensors", like=params)
    chex.assert_trees_all_equal(ck.params, params, strict=True)  # structure, dtypes and values
    chex.assert_trees_all_equal(ck.opt_state, state)
    assert ck.step == 123 and ck.metadata == meta
    np.testing.assert_array_equal(jax.random.key_data(ck.key), jax.random.key_data(key))


def test_tensor_names_are_the_pytree_paths(lenet, tmp_path):
    from safetensors.numpy import load_file

    _, params = lenet
    save_checkpoint(tmp_path / "c.safetensors", params)
    names = set(load_file(tmp_path / "c.safetensors"))
    assert names == {"0.w", "0.b", "3.w", "3.b", "7.w", "7.b", "9.w", "9.b", "11.w", "11.b"}


def test_a_crash_mid_write_leaves_the_old_file_intact(lenet, tmp_path, monkeypatch):
    _, params = lenet
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, params, step=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, jax.tree_util.tree_map(lambda a: a + 1, params), step=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]  # no temporary file left behind
    assert load_checkpoint(path).step == 1


def test_mismatches_name_the_first_offending_key(lenet, tmp_path):
    _, params = lenet
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, params)
    wider = models.lenet5(num_classes=12).init(jax.random.key(0), (None, 1, 28, 28))[1]
    with pytest.raises(CheckpointError, match=r"parameter '11.b' has shape \(10,\), expected \(12,\)"):
        load_checkpoint(path, like=wider)
    fewer = list(params)
    fewer[11] = {"w": params[11]["w"]}
    save_checkpoint(path, tuple(fewer))
    with pytest.raises(CheckpointError, match=r"missing parameter '11.b'"):
        load_checkpoint(path, like=params)
    save_checkpoint(path, jax.tree_util.tree_map(lambda a: a.astype(jnp.float16), params))
    with pytest.raises(CheckpointError, match=r"parameter '0.b' has dtype float16, expected float32"):
        load_checkpoint(path, like=params)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "npz", "empty", "foreign"])
def test_damaged_or_foreign_files_raise_a_clear_error(lenet, tmp_path, damage):
    _, params = lenet
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, params)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    elif damage == "npz":
        np.savez(path.with_suffix(".npz"), w=np.zeros(3))
        path.write_bytes(path.with_suffix(".npz").read_bytes())
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint("/nonexistent/c.safetensors")


def test_load_model_rebuilds_the_model_and_refuses_a_mismatch(lenet, tmp_path):
    model, params = lenet
    meta = {"model": {"name": "lenet5", "kwargs": {"num_classes": 10}, "input_shape": [1, 28, 28]}}
    save_checkpoint(tmp_path / "checkpoint.safetensors", params, metadata=meta)
    model2, params2, meta2 = load_model(tmp_path)
    x = jax.random.normal(jax.random.key(1), (2, 1, 28, 28))
    np.testing.assert_array_equal(model2.apply(params2, x), model.apply(params, x))
    save_checkpoint(
        tmp_path / "checkpoint.safetensors",
        params,
        metadata={"model": {"name": "wide_cnn", "kwargs": {"num_classes": 10}}},
    )
    with pytest.raises(CheckpointError, match=r"parameter '0.b' has shape \(6,\), expected \(32,\)"):
        load_model(tmp_path)


def test_a_lenet_checkpoint_loads_into_pytorch_with_the_same_logits(lenet, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model, params = lenet
    save_checkpoint(tmp_path / "c.safetensors", params)
    state = load_file(tmp_path / "c.safetensors")
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )
    # same layouts: conv weights as they are; tinyfn's linear keeps w as (in, out), PyTorch as (out, in)
    mapped = {}
    for name, tensor in state.items():
        layer, kind = name.split(".")
        mapped[f"{layer}.{'weight' if kind == 'w' else 'bias'}"] = (
            tensor.T if kind == "w" and tensor.ndim == 2 else tensor
        )
    net.load_state_dict(mapped)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_checkpoints_and_pngs_respect_the_umask(lenet, tmp_path, umask_022):
    from tinyfn.train import plot_history

    _, params = lenet
    save_checkpoint(tmp_path / "c.safetensors", params)
    save_checkpoint(tmp_path / "c.safetensors", params)  # replacing keeps the mode too
    plot_history({"epoch": [1], "train_loss": [1.0], "train_accuracy": [0.5]}, tmp_path / "curves.png")
    (tmp_path / "plain.json").write_text("{}")  # what open() makes under this umask
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == {"c.safetensors": "0o644", "curves.png": "0o644", "plain.json": "0o644"}


def _bn_residual_model():
    from tinyfn.layers import BatchNorm2D, Conv2D, Flatten, GlobalAvgPool2D, Linear, ReLU, residual, serial

    block = residual(serial(Conv2D(3, 3, padding=1, use_bias=False), BatchNorm2D(), ReLU()))
    return serial(Conv2D(3, 3, padding=1), BatchNorm2D(), ReLU(), block, GlobalAvgPool2D(), Flatten(), Linear(4))


def test_load_model_rebuilds_any_built_in_architecture_with_its_state(tmp_path):
    from tinyfn.layers import apply_with_state, init_with_state
    from tinyfn.train import model_record

    model = _bn_residual_model()  # in no registry: rebuilt from its recorded layer tree
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 8, 8))
    x = jax.random.normal(jax.random.key(1), (6, 1, 8, 8))
    _, state = apply_with_state(model, params, state, x, train=True)  # running statistics away from their start
    save_checkpoint(
        tmp_path / "checkpoint.safetensors",
        params,
        model_state=state,
        metadata={"model": model_record(model, (1, 8, 8))},
    )
    loaded = load_model(tmp_path)
    model2, params2, _ = loaded
    assert repr(model2) == repr(model)
    chex.assert_trees_all_equal(loaded.model_state, state)
    y, _ = apply_with_state(model, params, state, x, train=False)
    y2, _ = apply_with_state(model2, params2, loaded.model_state, x, train=False)
    np.testing.assert_array_equal(y2, y)


def test_load_model_refuses_a_stateful_checkpoint_without_its_state(tmp_path):
    from tinyfn.layers import init_with_state
    from tinyfn.train import model_record

    model = _bn_residual_model()
    _, params, _ = init_with_state(model, jax.random.key(0), (None, 1, 8, 8))
    save_checkpoint(tmp_path / "checkpoint.safetensors", params, metadata={"model": model_record(model, (1, 8, 8))})
    with pytest.raises(CheckpointError, match="carries state .* holds none"):
        load_model(tmp_path)


def test_a_layer_tinyfn_does_not_know_is_named(lenet, tmp_path):
    from tinyfn.layers import parameterless, serial
    from tinyfn.train import model_record

    model, params = lenet
    record = model_record(model, (1, 28, 28))
    record["spec"]["children"][1] = {"name": "Swish", "config": {}}
    save_checkpoint(tmp_path / "checkpoint.safetensors", params, metadata={"model": record})
    with pytest.raises(CheckpointError, match=r"unknown layer 'Swish' at model.children\[1\]"):
        load_model(tmp_path)
    odd = serial(parameterless("Swish", lambda x: x * jax.nn.sigmoid(x)))
    with pytest.raises(ValueError, match=r"model.children\[0\] is a layer named 'Swish'.*register_layer"):
        model_record(odd, (1, 28, 28))


# ----------------------------------------------------------------------------- dtypes, names, keys


def test_bfloat16_and_float16_round_trip_bit_for_bit(tmp_path):
    """Every bit pattern of both 16-bit floats (NaNs, infinities, subnormals, -0) comes back as it was saved."""
    bits = np.arange(2**16, dtype=np.uint16)
    tree = {"bf16": jnp.asarray(bits.view(jnp.bfloat16)), "f16": jnp.asarray(bits.view(np.float16))}
    save_checkpoint(tmp_path / "c.safetensors", tree, opt_state={"mu": tree["bf16"][:5]})
    ck = load_checkpoint(tmp_path / "c.safetensors", like=tree)
    for name in ("bf16", "f16"):
        assert ck.params[name].dtype == tree[name].dtype
        np.testing.assert_array_equal(np.asarray(ck.params[name]).view(np.uint16), bits)
    assert ck.opt_state["mu"].dtype == jnp.bfloat16


def test_a_dtype_the_reader_cannot_hold_is_named_with_its_tensor(tmp_path):
    import json

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.zeros(3, np.float32)})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["w"]["dtype"] = "F4"  # a dtype name no tinyfn reads
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n :])
    with pytest.raises(CheckpointError, match=r"tensor 'w' has dtype 'F4', which this tinyfn cannot read"):
        load_checkpoint(path)


def test_two_leaves_with_one_tensor_name_are_refused_naming_both_paths(tmp_path):
    path = tmp_path / "c.safetensors"
    with pytest.raises(
        ValueError, match=r"params\['a'\]\['b'\] and params\['a.b'\] would both be saved as tensor 'a.b'"
    ):
        save_checkpoint(path, {"a": {"b": np.zeros(2, np.float32)}, "a.b": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match=r"params\['opt_state'\]\['mu'\] and opt_state\['mu'\] would both be saved"):
        save_checkpoint(path, {"opt_state": {"mu": np.zeros(2, np.float32)}}, opt_state={"mu": np.ones(2, np.float32)})
    assert not path.exists()  # nothing was written


def test_a_parameter_named_key_is_not_the_random_key(tmp_path):
    params = {"key": jnp.arange(3, dtype=jnp.float32), "w": jnp.ones(2, jnp.float32)}
    save_checkpoint(tmp_path / "c.safetensors", params, key=jax.random.key(3))
    ck = load_checkpoint(tmp_path / "c.safetensors", like=params)
    chex.assert_trees_all_equal(ck.params, params, strict=True)
    np.testing.assert_array_equal(jax.random.key_data(ck.key), jax.random.key_data(jax.random.key(3)))


def test_a_format_1_checkpoint_still_loads_with_its_key(tmp_path):
    """Format 1 kept the random key's data as a tensor named "key"."""
    import json

    from safetensors.numpy import save_file

    params = {"w": np.arange(2, dtype=np.float32)}
    meta = {
        "format_version": 1,
        "tinyfn_version": "0.1.0",
        "params_structure": {"dict": {"w": {"leaf": "w"}}},
        "opt_state_structure": None,
        "step": 4,
        "has_key": True,
        "metadata": {"note": 1},
    }
    key_data = np.asarray(jax.random.key_data(jax.random.key(9)))
    save_file({"w": params["w"], "key": key_data}, tmp_path / "old.safetensors", metadata={"tinyfn": json.dumps(meta)})
    ck = load_checkpoint(tmp_path / "old.safetensors", like=params)
    np.testing.assert_array_equal(ck.params["w"], params["w"])
    np.testing.assert_array_equal(jax.random.key_data(ck.key), key_data)
    assert ck.step == 4 and ck.metadata == {"note": 1}


def test_a_float64_checkpoint_is_refused_for_a_float32_model_with_float64_off(tmp_path):
    """With jax_enable_x64 off JAX would silently narrow the float64 tensor; the stored dtype is what is checked."""
    with jax.enable_x64(True):
        save_checkpoint(tmp_path / "c.safetensors", {"w": jnp.ones(3, jnp.float64)})
    assert not jax.config.jax_enable_x64
    with pytest.raises(CheckpointError, match=r"parameter 'w' has dtype float64, expected float32"):
        load_checkpoint(tmp_path / "c.safetensors", like={"w": jnp.ones(3, jnp.float32)})
