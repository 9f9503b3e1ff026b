"""XLA's own profile of one compiled training step: every thunk the CPU runtime executes, timed by ``jax.profiler``.

    import xla_profile
    thunks, wall = xla_profile.trace_thunks(step, args, steps=10)
    xla_profile.print_profile(thunks, wall, top=30)

The step is run ``steps`` times under ``jax.profiler.trace`` (a Perfetto trace, no TensorBoard needed); each thunk
(a fusion, a GEMM, a loop) is joined with its instruction in the compiled HLO: its output shape, the JAX operation
it came from (``jvp()/dot_general`` is the forward, ``transpose(jvp())/...`` the backward), and for a GEMM its
multiply-adds, so its GFLOP/s. The thunks are grouped by what they do:

* **GEMM, forward / backward**: the products ``W X*``, ``W*ᵀ g`` and ``g X*ᵀ`` (and the linear layer's);
* **tap loops, forward / backward**: the bodies of the loops that build ``X*`` (im2col) and the pooling maximum,
  and col2im's shifted adds in the backward;
* **buffer fills**: a loop's result buffer set to zero before the loop overwrites it;
* **layout copies**: transposes and copies between the public NCHW and the kernels' (C, H, W, N);
* **reductions**: batch norm's statistics and the bias/γ/β gradients;
* **elementwise**: batch norm's normalisation, ReLU, the residual adds, the loss, the optimizer.

A ``while`` thunk contains its body's thunks, so it is listed but not added to the groups. The runtime runs
independent thunks side by side on the cores, so the thunks' times may add up to more than the step's wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import numpy as np

GROUPS = (
    "GEMM, forward",
    "GEMM, backward",
    "tap loops, forward",
    "tap loops, backward",
    "buffer fills",
    "layout copies",
    "reductions",
    "elementwise",
)

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$", re.M)
_COMP = re.compile(r"^%?([\w.\-]+) \(.*?\) -> .*?\{\n(.*?)^\}", re.M | re.S)


def _shape_dims(shape: str) -> tuple[int, ...]:
    m = re.match(r"\w+\[([\d,]*)\]", shape)
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def _dot_flops(shape: str, rest: str, shapes: dict) -> int:
    """2 x multiply-adds of a ``dot`` of output ``shape`` whose operands and attributes are ``rest``; ``shapes``
    gives each operand's shape by name."""
    lhs = re.match(r"%([\w.\-]+)", rest).group(1)
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
    k = int(np.prod([_shape_dims(shapes[lhs])[int(d)] for d in contracting.split(",") if d]))
    return 2 * int(np.prod(_shape_dims(shape))) * k


def hlo_instructions(hlo_text: str) -> dict:
    """``{name: (shape, op, op_name, flops)}`` for every instruction of the compiled module's text; a fusion
    counts the flops of the ``dot`` in the computation it calls."""
    instructions = _INSTR.findall(hlo_text)
    shapes = {name: shape for name, shape, _, _ in instructions}  # instruction names are unique in a module
    dot_flops = {
        comp: sum(_dot_flops(shape, rest, shapes) for _, shape, op, rest in _INSTR.findall(body) if op == "dot")
        for comp, body in _COMP.findall(hlo_text)
    }
    out = {}
    for name, shape, op, rest in instructions:
        op_name = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        flops = _dot_flops(shape, rest, shapes) if op == "dot" else dot_flops.get(calls.group(1), 0) if calls else 0
        out[name] = (shape, op, op_name.group(1) if op_name else "", flops)
    return out


def group_of(name: str, op: str, op_name: str, flops: int) -> str | None:
    """Which of ``GROUPS`` a thunk belongs to (``None`` for a ``while`` thunk, which contains others)."""
    backward = "transpose(" in op_name
    if name.startswith("while") or op == "while":
        return None
    if flops:
        return "GEMM, backward" if backward else "GEMM, forward"
    if "/while/" in op_name:
        return "tap loops, backward" if backward else "tap loops, forward"
    if name.startswith("wrapped_broadcast") or (op_name.endswith("broadcast_in_dim") and "fusion" not in name):
        return "buffer fills"
    if name.startswith(("copy", "transpose")) or op_name.endswith("transpose"):
        return "layout copies"
    if "reduce" in name or "reduce" in op_name.rsplit("/", 1)[-1]:
        return "reductions"
    return "elementwise"


def trace_thunks(step, args, steps: int = 10):
    """Run the jitted ``step(*args)`` ``steps`` times under the profiler; returns ``(thunks, wall)``: a list of
    ``(name, seconds per step, calls per step, shape, op_name, flops, group)``, longest first, and the median wall
    time of a step measured just before, without the profiler."""
    jax.block_until_ready(step(*args))
    walls = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(step(*args))
        walls.append(time.perf_counter() - t)
    info = hlo_instructions(step.lower(*args).compile().as_text())
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(step(*args))
        (path,) = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    dur, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in info:
            dur[e["name"]] += e.get("dur", 0) * 1e-6
            calls[e["name"]] += 1
    thunks = []
    for name, total in dur.most_common():
        shape, op, op_name, flops = info[name]
        op_name = op_name.replace("jit(stateful_step)/", "").replace("jit(stateless_step)/", "")
        group = group_of(name, op, op_name, flops)
        thunks.append((name, total / steps, calls[name] / steps, shape, op_name, flops, group))
    return thunks, float(np.median(walls))


def print_profile(thunks, wall: float, top: int = 30):
    """The groups' totals against the step's wall time, then the ``top`` longest thunks."""
    totals, flops = collections.Counter(), collections.Counter()
    for _, s, n, _, _, f, group in thunks:
        if group:
            totals[group] += s
            flops[group] += f * n
    summed = sum(totals.values())
    print(f"\nXLA's profile of the whole step: {wall * 1e3:.1f} ms wall a step, thunks {summed * 1e3:.1f} ms in all")
    print(f"{'group':22s} {'ms/step':>8s} {'share':>6s} {'GFLOP/s':>8s}")
    for group in GROUPS:
        s = totals.get(group, 0.0)
        rate = f"{flops[group] / s / 1e9:8.1f}" if flops[group] and s else f"{'-':>8s}"
        print(f"{group:22s} {s * 1e3:8.2f} {s / summed if summed else 0:6.1%} {rate}")
    print(f"\nthe {top} longest thunks (fwd: jvp(); bwd: transpose(jvp()))")
    print(f"{'thunk':40s} {'ms/step':>8s} {'calls':>5s} {'output':32s} {'GFLOP/s':>8s}  from")
    for name, s, n, shape, op_name, f, _ in thunks[:top]:
        rate = f"{f * n / s / 1e9:8.1f}" if f and s else f"{'-':>8s}"
        print(f"{name[:40]:40s} {s * 1e3:8.2f} {n:5.0f} {shape[:32]:32s} {rate}  {op_name[-44:]}")
