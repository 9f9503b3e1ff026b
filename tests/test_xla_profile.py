"""XLA's per-thunk profile of a compiled step (benchmarks/xla_profile.py): the HLO join and the GEMM count."""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import xla_profile  # noqa: E402

CANNED = (
    """HloModule m

%fused_computation.3 (param_0.1: f32[24,216], param_1.1: f32[216,100]) -> f32[24,100] {
  %param_0.1 = f32[24,216]{1,0} parameter(0)
  %param_1.1 = f32[216,100]{1,0} parameter(1)
  ROOT %dot.7 = f32[24,100]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (p0: f32[24,216], p1: f32[216,100]) -> f32[24,100] {
  %p0 = f32[24,216]{1,0} parameter(0)
  %p1 = f32[216,100]{1,0} parameter(1)
  ROOT %ynn_fusion.3 = f32[24,100]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.3, """
    + ('metadata={op_name="jit(f)/transpose(jvp())/dot_general"}')
    + """
}
"""
)


def test_a_fused_gemm_is_counted_as_two_flops_per_multiply_add_and_grouped_as_backward():
    info = xla_profile.hlo_instructions(CANNED)
    shape, op, op_name, flops = info["ynn_fusion.3"]
    assert flops == 2 * 24 * 216 * 100
    assert xla_profile.group_of("ynn_fusion.3", op, op_name, flops) == "GEMM, backward"


def test_thunks_are_grouped_by_what_they_do():
    g = xla_profile.group_of
    assert g("while.3", "while", "jvp()/while", 0) is None  # contains its body's thunks
    assert g("select_dynamic-update-slice_fusion.1", "fusion", "jvp()/while/body/dynamic_update_slice", 0) == (
        "tap loops, forward"
    )
    assert g("add_dynamic-update-slice_fusion", "fusion", "transpose(jvp())/while/body/x", 0) == "tap loops, backward"
    assert g("wrapped_broadcast.1", "fusion", "jit(f)", 0) == "buffer fills"
    assert g("copy.2", "copy", "", 0) == "layout copies"
    assert g("ynn_fusion.9", "fusion", "jvp()/reduce_sum", 0) == "reductions"
    assert g("add_select_fusion.1", "fusion", "transpose(jvp())/select_n", 0) == "elementwise"


def test_the_trace_of_a_compiled_step_finds_its_gemms_with_their_multiply_adds():
    def loss(w, x):
        return jnp.sum(jnp.maximum(x @ w, 0.0) ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    w = jnp.ones((32, 16), jnp.float32)
    x = jnp.ones((64, 32), jnp.float32)
    thunks, wall = xla_profile.trace_thunks(step, (w, x), steps=2)
    assert wall > 0
    gemms = {(group, flops) for _, _, _, _, _, flops, group in thunks if group and group.startswith("GEMM")}
    assert ("GEMM, forward", 2 * 64 * 32 * 16) in gemms  # x @ w
    assert ("GEMM, backward", 2 * 64 * 32 * 16) in gemms  # xᵀ g, dW
    assert all(s >= 0 for _, s, *_ in thunks)
