"""``python -m tinyfn gradcheck``: every registered op's handwritten gradient against autodiff and finite differences.

The ops are those of ``tinyfn.registry.OPS`` (the cases: ``tinyfn.cli.gradcheck_cases``).
"""

from __future__ import annotations

import time

from tinyfn.cli import positive_int, seed_int


def add_arguments(p):
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random configurations (default 0)")
    p.add_argument("--repeats", type=positive_int, default=3, help="random configurations per op (default 3)")


def run(args) -> int:
    from tinyfn import gradcheck
    from tinyfn.cli.gradcheck_cases import cases

    t0 = time.perf_counter()
    header = f"{'op':<26} {'configuration':<56} {'vs autodiff':>11} {'vs fin.diff':>11}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    all_cases = list(cases(seed=args.seed, repeats=args.repeats))
    for case in all_cases:
        try:
            rep = gradcheck.check_vjp(
                case.f,
                case.args,
                reference=case.reference,
                argnums=case.argnums,
                argnames=case.argnames,
                seed=args.seed,
                raise_on_failure=False,
            )
            ok, ref, fd = rep.passed, f"{rep.max_ref_rel:.1e}", f"{rep.max_fd_rel:.1e}"
        except Exception as exc:  # a crash is a failure of that op, not of the table
            ok, ref, fd = False, "error", type(exc).__name__
        failures += not ok
        print(f"{case.op:<26} {case.config[:56]:<56} {ref:>11} {fd:>11}  {'pass' if ok else 'FAIL'}", flush=True)
    total = len(all_cases)
    print("-" * len(header))
    print(
        f"{total - failures}/{total} passed in {time.perf_counter() - t0:.1f} s "
        "(relative errors: float32 vs autodiff of an independent reference; float64 vs central differences)"
    )
    return 1 if failures else 0
