"""The ``tinyfn`` application: ``python -m tinyfn <command>`` or ``tinyfn <command>``.

One module per command (``train``, ``evaluate``, ``visualize``, ``summary``, ``gradcheck``),
recipes and run directories in ``runs``. The application, not the library,
makes the process-wide choices: ``main`` tunes the allocator first thing
(``tinyfn.tune_allocator``) and figures are written as PNGs.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser", "positive_int", "seed_int"]

_COMMANDS = (
    ("gradcheck", "check every built-in op's handwritten gradient against autodiff and finite differences"),
    ("train", "train a CNN (lenet5 on the embedded Fashion-MNIST subset by default) and write a run directory"),
    ("evaluate", "test loss, accuracy and per-class accuracy of a checkpoint"),
    ("visualize", "DeconvNet projections, filters, feature maps and saliency figures of a trained model"),
    ("summary", "the table of a checkpoint's layers, output shapes and parameter counts"),
)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors on one line: ``tinyfn train: error: argument --seed: expected ..., got '-1'``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_type(expected: str, lo: int, hi: float):
    """An argparse ``type``: an integer in ``[lo, hi)``, else the value and ``expected`` (argparse names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not lo <= value < hi:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = _int_type("a positive integer", 1, float("inf"))
seed_int = _int_type("a non-negative integer below 2**63", 0, 2**63)  # what jax.random.key and numpy's generators take


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from tinyfn import __version__

    description = "tinyfn: a small functional deep-learning library with handwritten gradients."
    parser = _Parser(prog="tinyfn", description=description)
    parser.add_argument("--version", action="version", version=f"tinyfn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = _Parser(add_help=False)  # accepted after the command too; SUPPRESS keeps a --debug given before it
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in _COMMANDS:
        module = importlib.import_module(f"tinyfn.cli.{name}")
        p = sub.add_parser(name, help=help_text, parents=[common])
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tinyfn import tune_allocator

    tune_allocator()  # first, before XLA starts its threads (a no-op under TINYFN_MALLOPT=0): see README "Speed"
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
