"""The transformer layers: MultiHeadAttention loads PyTorch's nn.MultiheadAttention weights and matches its outputs and
gradients (plain, causal, key padding); PatchEmbedding matches a torch Conv2d + cat + add; the block's handwritten
VJP equals autodiff of a block written from tinyfn.reference; params checks and spec round-trips; and causality:
a future token never moves an earlier output, and a tiny causal model learns to emit the previous token; attention maps
match PyTorch's weights, rollout matches a hand computation, and saliency on a ViT is the gradient of a reference."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import reference as R, visualize as V
from tinyfn.layers import (
    Embedding,
    Linear,
    MultiHeadAttention,
    PatchEmbedding,
    PositionEmbedding,
    TakeToken,
    TransformerBlock,
    from_spec,
    multi_head_attention,
    serial,
    to_spec,
)
from tinyfn.layers.transformer import params_from_torch
from tinyfn.models import vit

torch = pytest.importorskip("torch")

E, H, N, T = 8, 2, 2, 5


def _torch_mha(seed=0, bias=True):
    torch.manual_seed(seed)
    m = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=True).double()
    with torch.no_grad():  # PyTorch starts the biases at 0: make them count
        for name, p in m.named_parameters():
            if "bias" in name:
                p.normal_()
    return m


@pytest.mark.parametrize("case", ["plain", "causal", "key_padding", "no_bias", "blocked"])
def test_mha_matches_torch_outputs_and_gradients(x64, rng, case):
    m = _torch_mha(bias=case != "no_bias")
    params = params_from_torch(m.state_dict())
    x = rng.standard_normal((N, T, E))
    r = rng.standard_normal((N, T, E))  # a random cotangent: the loss is <out, r>
    kpm = np.zeros((N, T), bool)
    kpm[0, -2:] = True  # PyTorch: True = ignore this key
    torch_kwargs, ours = {}, {}
    if case == "causal":
        torch_kwargs = {"attn_mask": torch.ones(T, T, dtype=torch.bool).triu(1), "is_causal": True}
        ours = {"causal": True}
    elif case == "key_padding":
        torch_kwargs = {"key_padding_mask": torch.from_numpy(kpm)}
        ours = {"mask": ~kpm[:, None, None, :]}
    elif case == "blocked":
        ours = {"formulation": "blocked"}

    xt = torch.tensor(x, requires_grad=True)
    out_t = m(xt, xt, xt, need_weights=False, **torch_kwargs)[0]
    (out_t * torch.from_numpy(r)).sum().backward()

    def loss(p, x):
        y = multi_head_attention(
            x,
            p["in_proj_weight"],
            p.get("in_proj_bias"),
            p["out_proj_weight"],
            p.get("out_proj_bias"),
            num_heads=H,
            **ours,
        )
        return jnp.sum(y * r), y

    (_, y), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, jnp.asarray(x))
    np.testing.assert_allclose(y, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(gp[name.replace(".", "_")], p.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_mha_layer_loads_torch_weights_float32(rng):
    """The layer (not just the op) with a PyTorch module's weights, in float32: the same outputs."""
    m = _torch_mha().float()
    layer = MultiHeadAttention(E, H, causal=True)
    params = params_from_torch(m.state_dict())
    _, expected = layer.init(jax.random.key(0), (None, T, E))
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape, expected)
    x = rng.standard_normal((N, T, E)).astype(np.float32)
    xt = torch.from_numpy(x)
    want = m(xt, xt, xt, attn_mask=torch.ones(T, T, dtype=torch.bool).triu(1), need_weights=False)[0].detach().numpy()
    np.testing.assert_allclose(layer.apply(params, jnp.asarray(x)), want, rtol=1e-5, atol=1e-6)


def test_patch_embedding_matches_torch(x64, rng):
    layer = PatchEmbedding(2, E)
    shape, params = layer.init(jax.random.key(1), (None, 3, 4, 6))
    assert shape == (None, 7, E)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)
    x = rng.standard_normal((N, 3, 4, 6))
    r = rng.standard_normal((N, 7, E))
    conv = torch.nn.Conv2d(3, E, 2, stride=2).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.array(params["w"])))
        conv.bias.copy_(torch.from_numpy(np.array(params["b"])))
    cls = torch.tensor(np.asarray(params["cls"]), requires_grad=True)
    pos = torch.tensor(np.asarray(params["pos"]), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    tokens = conv(xt).flatten(2).transpose(1, 2)
    want = torch.cat([cls.expand(N, 1, E), tokens], dim=1) + pos
    (want * torch.from_numpy(r)).sum().backward()

    y, vjp = jax.vjp(lambda p, x: layer.apply(p, x), params, jnp.asarray(x))
    gp, gx = vjp(jnp.asarray(r))
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, t in (("w", conv.weight), ("b", conv.bias), ("cls", cls), ("pos", pos)):
        np.testing.assert_allclose(gp[name], t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def _reference_block(p, x, num_heads):
    """The pre-norm block from tinyfn.reference's ops (no custom rules), params as TransformerBlock's tree."""
    (ln1, att), (ln2, fc1, _, fc2) = p[0]["body"], p[1]["body"]
    n, t, e = x.shape
    h = R.layer_norm(x, ln1["gamma"], ln1["beta"])
    qkv = R.linear(h, att["in_proj_weight"].T, att["in_proj_bias"]).reshape(n, t, 3, num_heads, e // num_heads)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    o = R.dot_product_attention(q, k, v).transpose(0, 2, 1, 3).reshape(n, t, e)
    x = x + R.linear(o, att["out_proj_weight"].T, att["out_proj_bias"])
    h = R.gelu(R.linear(R.layer_norm(x, ln2["gamma"], ln2["beta"]), fc1["w"], fc1["b"]))
    return x + R.linear(h, fc2["w"], fc2["b"])


def test_block_vjp_matches_reference_autodiff(x64, rng):
    block = TransformerBlock(E, H, mlp_ratio=2)
    _, params = block.init(jax.random.key(2), (None, T, E))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)) * 0.5, params)
    x = jnp.asarray(rng.standard_normal((N, T, E)))
    r = jnp.asarray(rng.standard_normal((N, T, E)))
    y, vjp = jax.vjp(lambda p, x: block.apply(p, x), params, x)
    y_ref, vjp_ref = jax.vjp(lambda p, x: _reference_block(p, x, H), params, x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(jax.tree_util.tree_leaves(vjp(r)), jax.tree_util.tree_leaves(vjp_ref(r))):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_params_checks_name_the_wrong_entry():
    layer = MultiHeadAttention(E, H)
    _, params = layer.init(jax.random.key(0), (None, T, E))
    x = jnp.zeros((N, T, E))
    renamed = {("in_proj_w" if k == "in_proj_weight" else k): v for k, v in params.items()}
    with pytest.raises(ValueError, match="in_proj_w"):
        layer.apply(renamed, x)
    with pytest.raises(ValueError, match=r"out_proj_weight.*\(4, 8\)"):
        layer.apply({**params, "out_proj_weight": jnp.zeros((4, 8))}, x)
    with pytest.raises(ValueError, match="embed_dim = 8"):
        layer.init(jax.random.key(0), (None, T, 6))
    with pytest.raises(ValueError, match="divisible by num_heads = 3"):
        MultiHeadAttention(E, 3)
    with pytest.raises(ValueError, match="not a multiple of patch = 3"):
        PatchEmbedding(3, E).init(jax.random.key(0), (None, 1, 8, 8))
    block = TransformerBlock(E, H)
    _, bp = block.init(jax.random.key(0), (None, T, E))
    with pytest.raises(ValueError, match="TransformerBlock"):
        block.apply(bp[:1], x)
    with pytest.raises(ValueError, match=r"TransformerBlock: input_shape \(2, 5, 6\) has E = 6 .* embed_dim = 8"):
        block.apply(bp, jnp.zeros((N, T, 6)))
    with pytest.raises(ValueError, match="index 5 is out of range for 5 tokens"):
        TakeToken(5).init(jax.random.key(0), (None, T, E))


def test_vit_spec_round_trip(rng):
    model = vit(num_classes=3, patch=4, embed_dim=16, depth=2, num_heads=2)
    spec = json.loads(json.dumps(to_spec(model)))
    rebuilt = from_spec(spec)
    assert to_spec(rebuilt) == spec
    _, params = model.init(jax.random.key(0), (None, 1, 8, 8))
    _, params2 = rebuilt.init(jax.random.key(0), (None, 1, 8, 8))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, params2))
    x = jnp.asarray(rng.standard_normal((2, 1, 8, 8)), jnp.float32)
    np.testing.assert_array_equal(model.apply(params, x), rebuilt.apply(params, x))


def _causal_lm(vocab, e=16, heads=2, depth=2, formulation=None):
    blocks = [TransformerBlock(e, heads, mlp_ratio=2, causal=True, formulation=formulation) for _ in range(depth)]
    return serial(Embedding(vocab, e), PositionEmbedding(), *blocks, Linear(vocab, w_init="glorot_uniform"))


@pytest.mark.parametrize("formulation", ["plain", "blocked"])
def test_a_future_token_never_moves_an_earlier_output(rng, formulation):
    vocab, t_len = 7, 9
    model = _causal_lm(vocab, formulation=formulation)
    _, params = model.init(jax.random.key(3), (None, t_len))
    ids = rng.integers(0, vocab, (3, t_len))
    apply = jax.jit(model.apply)
    base = np.asarray(apply(params, jnp.asarray(ids)))
    for t in (1, 4, t_len - 1):
        changed = ids.copy()
        changed[:, t] = (changed[:, t] + 1 + rng.integers(0, vocab - 1, 3)) % vocab
        out = np.asarray(apply(params, jnp.asarray(changed)))
        np.testing.assert_array_equal(out[:, :t], base[:, :t], err_msg=f"position < {t} moved")
        assert np.all(np.abs(out[:, t] - base[:, t]).max(axis=-1) > 1e-4), f"position {t} did not see its own token"


def test_a_causal_model_learns_the_previous_token(rng):
    """Target at position i is the token at i - 1: only a model that attends one step back can learn it."""
    from tinyfn.losses import softmax_cross_entropy
    from tinyfn.train import adam

    vocab, t_len, batch = 6, 8, 64
    model = _causal_lm(vocab, e=16, heads=2, depth=1)
    _, params = model.init(jax.random.key(4), (None, t_len))
    opt = adam(1e-2)
    state = opt.init(params)

    def loss_fn(p, ids):
        logits = model.apply(p, ids)[:, 1:].reshape(-1, vocab)
        return softmax_cross_entropy(logits, ids[:, :-1].reshape(-1))

    @jax.jit
    def step(p, s, ids):
        loss, g = jax.value_and_grad(loss_fn)(p, ids)
        u, s = opt.update(g, s, p)
        return jax.tree_util.tree_map(jnp.add, p, u), s, loss

    losses = []
    for _ in range(300):
        params, state, loss = step(params, state, jnp.asarray(rng.integers(0, vocab, (batch, t_len))))
        losses.append(float(loss))
    assert losses[0] > 1.5  # about log 6 = 1.79: chance
    assert np.mean(losses[-20:]) < 0.2, f"the loss did not fall: first {losses[0]:.3f}, last {losses[-20:]}"


# ---- seeing inside: attention maps, rollout, saliency on a ViT ----


def test_attention_rollout_by_hand():
    """Two layers, two heads, two tokens: the heads average to P1 = [[1, 0], [.5, .5]] and P2 = [[.2, .8], [0, 1]];
    A1 = (P1 + I)/2 = [[1, 0], [.25, .75]], A2 = [[.6, .4], [0, 1]], R = A2 A1 = [[.7, .3], [.25, .75]]."""
    p1 = jnp.asarray([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    p2 = jnp.asarray([[[[0.4, 0.6], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    np.testing.assert_allclose(V.attention_rollout([p1, p2]), [[[0.7, 0.3], [0.25, 0.75]]], rtol=1e-6)
    np.testing.assert_allclose(V.attention_rollout([p1]), [[[1.0, 0.0], [0.25, 0.75]]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"maps\[1\] has 3 tokens"):
        V.attention_rollout([p1, jnp.ones((1, 2, 3, 3)) / 3])


def test_attention_maps_match_torch_weights(rng):
    """A one-layer model's map, averaged over heads, is nn.MultiheadAttention's need_weights output."""
    m = _torch_mha().float()
    model = serial(MultiHeadAttention(E, H))
    x = rng.standard_normal((N, T, E)).astype(np.float32)
    (p,) = V.attention_maps(model, (params_from_torch(m.state_dict()),), jnp.asarray(x))
    xt = torch.from_numpy(x)
    want = m(xt, xt, xt, need_weights=True, average_attn_weights=True)[1].detach().numpy()
    assert p.shape == (N, H, T, T)
    np.testing.assert_allclose(p.mean(axis=1), want, rtol=1e-5, atol=1e-6)


def _reference_vit(params, x, num_heads, patch):
    """models.vit's forward from tinyfn.reference's ops."""
    pe, *blocks, ln, _, head = params
    n, e = x.shape[0], pe["w"].shape[0]
    tokens = R.conv2d(x, pe["w"], pe["b"], stride=patch).reshape(n, e, -1).transpose(0, 2, 1)
    tokens = jnp.concatenate([jnp.broadcast_to(pe["cls"], (n, 1, e)), tokens], axis=1) + pe["pos"]
    for p in blocks:
        tokens = _reference_block(p, tokens, num_heads)
    return R.linear(R.layer_norm(tokens, ln["gamma"], ln["beta"])[:, 0], head["w"], head["b"])


def test_vit_maps_rollout_and_saliency(x64, rng):
    model = vit(num_classes=3, patch=4, embed_dim=8, depth=2, num_heads=2)
    _, params = model.init(jax.random.key(5), (None, 1, 8, 8))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)) * 0.3, params)
    x = jnp.asarray(rng.standard_normal((2, 1, 8, 8)))
    maps = V.attention_maps(model, params, x)
    assert [m.shape for m in maps] == [(2, 2, 5, 5)] * 2
    rollout = V.attention_rollout(maps)
    assert rollout.shape == (2, 5, 5)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(model.apply(params, x), _reference_vit(params, x, 2, 4), rtol=1e-10, atol=1e-12)

    sal = V.saliency(model, params, x, 1)
    want = jax.grad(lambda a: _reference_vit(params, a, 2, 4)[:, 1].sum())(x)
    assert sal.shape == x.shape and bool(jnp.all(jnp.isfinite(sal)))
    np.testing.assert_allclose(sal, want, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="no attention layer"):
        V.attention_maps(serial(Linear(2)), ({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)},), jnp.ones((1, 3)))


@pytest.mark.slow
def test_cli_trains_a_vit_with_its_recipe_and_the_run_reloads(tmp_path):
    """``python -m tinyfn train --model vit`` on a small IDX set: the vit recipe, a checkpoint that rebuilds from its
    spec (the transformer layers are registered), and attention maps of the reloaded model."""
    import subprocess
    import sys

    from tinyfn.data import load_embedded, write_idx
    from tinyfn.train import load_model

    for prefix, split, n in (("train", "train", 256), ("t10k", "test", 64)):
        ds = load_embedded(split)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.asarray(ds.images[:n]).reshape(n, 28, 28))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.asarray(ds.labels[:n]).astype(np.uint8))
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path), "--model", "vit", "--epochs", "1", "--batch-size", "64", "--quiet"]
    cmd = [sys.executable, "-m", "tinyfn", *args, "--out", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("test accuracy: ")
    model, params, meta = load_model(out)
    assert meta["recipe"]["optimizer"] == "adamw" and meta["recipe"]["model"] == "vit"
    x = jnp.asarray(load_embedded("test").images[:2], jnp.float32)
    assert model.apply(params, x).shape == (2, 10)
    tokens = (28 // 7) ** 2 + 1  # the recipe's model: 7x7 patches and the class token
    assert [m.shape for m in V.attention_maps(model, params, x)] == [(2, 4, tokens, tokens)] * 4
