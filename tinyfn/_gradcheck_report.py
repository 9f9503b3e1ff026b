"""The reports ``tinyfn.gradcheck.check_vjp`` returns (re-exported there): one per argument, one per check."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ArgReport:
    """Errors of one argument's gradient: largest absolute and (normwise) relative."""

    name: str
    shape: tuple
    ref_abs: float | None = None
    ref_rel: float | None = None
    ref_ok: bool | None = None
    fd_abs: float | None = None
    fd_rel: float | None = None
    fd_ok: bool | None = None
    fd_checked: int = 0
    ref_worst: tuple | None = None  # the entry farthest outside the element-wise bound, vs the reference
    fd_worst: tuple | None = None  # likewise vs finite differences

    @property
    def passed(self) -> bool:
        return self.ref_ok is not False and self.fd_ok is not False


@dataclasses.dataclass
class GradcheckReport:
    """Result of ``check_vjp``: one ``ArgReport`` per checked argument."""

    args: list[ArgReport]
    ref_tolerance: tuple[float, float] | None
    fd_tolerance: tuple[float, float] | None
    forward_abs: float | None = None  # max |f(args) - reference(args)| over the float outputs
    forward_rel: float | None = None
    forward_ok: bool | None = None  # None without a reference
    forward_worst: str | None = None  # the output leaf and index farthest outside the element-wise bound

    @property
    def passed(self) -> bool:
        return self.forward_ok is not False and all(a.passed for a in self.args)

    @property
    def max_ref_rel(self) -> float | None:
        vals = [a.ref_rel for a in self.args if a.ref_rel is not None]
        return max(vals) if vals else None

    @property
    def max_fd_rel(self) -> float | None:
        vals = [a.fd_rel for a in self.args if a.fd_rel is not None]
        return max(vals) if vals else None

    def __str__(self) -> str:
        fmt = lambda v: "-" if v is None else f"{v:.1e}"
        lines = [f"{'arg':<10} {'shape':<18} {'vs autodiff abs/rel':<22} {'vs finite diff abs/rel':<24} ok"]
        for a in self.args:
            lines.append(
                f"{a.name:<10} {a.shape!s:<18} {fmt(a.ref_abs) + ' / ' + fmt(a.ref_rel):<22} "
                f"{fmt(a.fd_abs) + ' / ' + fmt(a.fd_rel):<24} {'yes' if a.passed else 'NO'}"
            )
        if self.forward_ok is not None:
            lines.append(
                f"{'forward':<10} {'':<18} {fmt(self.forward_abs) + ' / ' + fmt(self.forward_rel):<22} {'-':<24} "
                f"{'yes' if self.forward_ok else 'NO'}"
            )
        return "\n".join(lines)
