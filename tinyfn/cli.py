"""The ``tinyfn`` command line: ``python -m tinyfn <command>`` or ``tinyfn <command>``."""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args) -> int:
    import time

    from tinyfn import gradcheck
    from tinyfn._gradcheck_cases import cases

    t0 = time.perf_counter()
    header = f"{'op':<26} {'configuration':<56} {'vs autodiff':>11} {'vs fin.diff':>11}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    all_cases = list(cases(seed=args.seed, repeats=args.repeats))
    for case in all_cases:
        try:
            rep = gradcheck.check_vjp(case.f, case.args, reference=case.reference, argnames=case.argnames, seed=args.seed, raise_on_failure=False)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyfn", description="tinyfn: a small functional deep-learning library with handwritten gradients.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("gradcheck", help="check every built-in op's handwritten gradient against autodiff and finite differences")
    p.add_argument("--seed", type=int, default=0, help="seed of the random configurations (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="random configurations per op (default 3)")
    p.set_defaults(run=_gradcheck)

    from tinyfn.train import command as train_command

    p = sub.add_parser("train", help="train a CNN (lenet5 on the embedded Fashion-MNIST subset by default) and write a run directory")
    train_command.add_train_arguments(p)
    p.set_defaults(run=train_command.train)
    p = sub.add_parser("evaluate", help="test loss, accuracy and per-class accuracy of a checkpoint")
    train_command.add_evaluate_arguments(p)
    p.set_defaults(run=train_command.evaluate_command)

    from tinyfn.visualize import command as visualize_command

    p = sub.add_parser("visualize", help="DeconvNet projections, filters, feature maps and saliency figures of a trained model")
    visualize_command.add_arguments(p)
    p.set_defaults(run=visualize_command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as exc:  # bad input, missing or unreadable files, full disks
        if args.debug:
            raise
        print(f"error: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
