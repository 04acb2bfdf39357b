"""The checker engine: run a learner's function and the package's reference on varied inputs, explain the difference.

An `Exercise` declares a reference, cases that vary every size and argument the exercise allows (`vary` +
`build_cases`), the arguments the exercise may write into, and a list of named `Mistake`s: wrong variants that
a learner plausibly writes. A check runs the learner's function on every case and prints one verdict:
  ✅  right on every case, and no input changed in place;
  ❌  the likely mistake, named only when that variant reproduces the learner's result on EVERY case (a hint
      chosen on one case can name a mistake the learner did not make); otherwise what differs (which returned
      tensor, shape, dtype, NaN, values) and on which inputs, or the error the function raised;
  ⏳  the function is still a stub ("not implemented yet").
MINIMODELS_CHECK_MODE decides what a failure does:
  student (default)  print only, never raise, so "Run All" reaches the end of an unsolved notebook;
  solution           raise AssertionError unless the check passes (CI runs solutions/ this way);
  exercise           raise AssertionError unless the function is still an unimplemented stub
                     (CI runs exercises/ this way, so a leaked solution fails the run);
  auto               solution inside a solutions/ folder, exercise inside exercises/, else student.
Used by the exercise notebooks through the lesson modules (lesson01.py, lesson02.py, ...).
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from .messages import describe_value, ordinal, plain_signature, sizes_label, varied_names

MODE_ENV = "MINIMODELS_CHECK_MODE"


def check_mode() -> str:
    mode = os.environ.get(MODE_ENV, "student")
    if mode == "auto":
        parts = Path.cwd().parts
        mode = "solution" if "solutions" in parts else "exercise" if "exercises" in parts else "student"
    if mode not in ("student", "solution", "exercise"):
        raise ValueError(f"{MODE_ENV}={mode!r}: use student, solution, exercise or auto")
    return mode


@dataclass
class CheckResult:
    name: str
    status: str  # "passed", "failed" or "not implemented"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---------------------------------------------------------------- cases


class _Default:
    """Marks an argument a case leaves out, so the function's own default is used."""

    def __repr__(self) -> str:
        return "default"


DEFAULT = _Default()


@dataclass(frozen=True)
class Case:
    """One call: positional args (trailing DEFAULTs are left out) and the sizes they were built from."""

    args: tuple
    sizes: Mapping[str, object] = field(default_factory=dict)

    def fresh_args(self) -> list:
        """A private copy per call: a function may write into its inputs."""
        args = list(self.args)
        while args and args[-1] is DEFAULT:
            args.pop()
        return [a.clone() if isinstance(a, Tensor) else a for a in args]


def vary(base: Mapping[str, object], *joint: Mapping[str, object], **alternatives: Sequence) -> list[dict]:
    """The base sizes, then one set per alternative value (one name changed at a time), then each joint change.

    vary(dict(B=2, K=4), K=[8, 16]) -> [{B: 2, K: 4}, {B: 2, K: 8}, {B: 2, K: 16}]. Changing one size at a time
    lets a failure say which size the learner's code does not follow.
    """
    unknown = [name for change in (alternatives, *joint) for name in change if name not in base]
    if unknown:
        raise ValueError(f"vary(): {unknown} are not in the base sizes {list(base)}")
    sets = [dict(base)]
    sets += [{**base, name: value} for name, values in alternatives.items() for value in values]
    sets += [{**base, **change} for change in joint]
    return sets


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build_cases(size_sets: Sequence[Mapping], build: Callable[..., tuple], seed: int) -> list[Case]:
    """Case(build(generator, **sizes), sizes) for every size set, each with its own seed."""
    return [Case(tuple(build(generator(seed + i), **sizes)), dict(sizes)) for i, sizes in enumerate(size_sets)]


@dataclass(frozen=True)
class Mistake:
    """A wrong variant with the reference's signature, and the hint to print when it explains the learner's result."""

    name: str
    fn: Callable
    hint: str
    atol: float | None = None  # its own tolerance (a half-precision variant matches up to rounding)


# ---------------------------------------------------------------- running one call


@dataclass
class Outcome:
    """What one call did: its return value or error, the written arguments, and read-only arguments it changed."""

    returned: object = None
    error: Exception | None = None
    written: tuple = ()
    modified: tuple[str, ...] = ()


def _unchanged(after: Tensor, before: Tensor) -> bool:
    return after.shape == before.shape and after.dtype == before.dtype and torch.equal(after, before)


def call(fn: Callable, case: Case, names: Sequence[str], writes: Sequence[int]) -> Outcome:
    """Run fn on a fresh copy of the case; NotImplementedError propagates (the stub case)."""
    args = case.fresh_args()
    before = {i: a.clone() for i, a in enumerate(args) if isinstance(a, Tensor) and i not in writes}
    try:
        returned = fn(*args)
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code crashed: say how, don't crash the notebook
        return Outcome(error=e)
    modified = tuple(names[i] for i, a in before.items() if not _unchanged(args[i], a))
    return Outcome(returned, None, tuple(args[i] for i in writes if i < len(args)), modified)


# ---------------------------------------------------------------- comparing outcomes


def _close(got, want, atol: float, rtol: float) -> bool:
    """Same type, shape, dtype and values (NaN equal to NaN), for tensors and numbers."""
    if isinstance(want, Tensor):
        return (isinstance(got, Tensor) and got.shape == want.shape and got.dtype == want.dtype
                and torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol, equal_nan=True))
    if isinstance(got, Tensor) and got.dim() == 0 and not got.dtype.is_floating_point:
        got = got.item()  # a 0-d integer tensor is as good as an int
    if isinstance(want, numbers.Integral):
        return isinstance(got, numbers.Integral) and not isinstance(got, bool) and got == want
    return isinstance(got, numbers.Real) and abs(got - want) <= atol + rtol * abs(want)


def _parts(outcome: Outcome, n_returned: int) -> list | None:
    """Returned values (a tuple of n_returned, or one value) then the written arguments; None if the shape is off."""
    returned = outcome.returned
    if n_returned > 1:
        if not isinstance(returned, tuple | list) or len(returned) != n_returned:
            return None
        return [*returned, *outcome.written]
    return [returned, *outcome.written]


def same_outcome(a: Outcome, b: Outcome, n_returned: int, atol: float, rtol: float) -> bool:
    """Both raised the same kind of error, or both returned (and wrote) the same values."""
    if a.error is not None or b.error is not None:
        return a.error is not None and b.error is not None and type(a.error) is type(b.error)
    pa, pb = _parts(a, n_returned), _parts(b, n_returned)
    if pa is None or pb is None:
        return pa is None and pb is None and type(a.returned) is type(b.returned)
    return all(_close(x, y, atol, rtol) for x, y in zip(pa, pb))


# ---------------------------------------------------------------- the exercise


@dataclass(frozen=True)
class Exercise:
    """A reference, its cases and its named mistakes; `check(fn)` prints and returns the verdict."""

    name: str
    reference: Callable
    make_cases: Callable[[], list[Case]]
    mistakes: Sequence[Mistake] = ()
    writes: tuple[str, ...] = ()  # arguments the exercise writes into (compared after the call, never "modified")
    returns: tuple[str, ...] = ()  # names of the returned tuple's elements; () for a single value
    atol: float = 1e-5
    rtol: float = 1e-4

    @cached_property
    def names(self) -> list[str]:
        try:
            params = inspect.signature(self.reference).parameters.values()
        except (TypeError, ValueError):
            return []
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def arg_names(self, n: int) -> list[str]:
        return [self.names[i] if i < len(self.names) else f"argument {i + 1}" for i in range(n)]

    @cached_property
    def cases(self) -> list[Case]:
        cases = [c if isinstance(c, Case) else Case(tuple(c)) for c in self.make_cases()]
        missing = [w for w in self.writes if w not in self.names]
        if missing:
            raise ValueError(f"{self.name}: writes={missing} are not arguments of the reference {self.names}")
        return cases

    def run(self, fn: Callable, case: Case) -> Outcome:
        n = len(case.args)
        names = self.arg_names(n)
        return call(fn, case, names, [names.index(w) for w in self.writes])

    @property
    def n_returned(self) -> int:
        return max(len(self.returns), 1)

    def same(self, a: Outcome, b: Outcome, atol: float | None = None) -> bool:
        return same_outcome(a, b, self.n_returned, self.atol if atol is None else atol, self.rtol)

    def reference_outcomes(self) -> list[Outcome]:
        outcomes = [self.run(self.reference, case) for case in self.cases]
        for case, out in zip(self.cases, outcomes):
            if out.error is not None:  # a bug of the checker, not of the learner
                raise RuntimeError(f"{self.name}: the reference failed on {case.sizes}") from out.error
        return outcomes

    def matching_mistake(self, got: list[Outcome]) -> Mistake | None:
        """The first mistake that reproduces the learner's outcome on every case."""
        for mistake in self.mistakes:
            if all(self.same(g, self.run(mistake.fn, case), mistake.atol) for g, case in zip(got, self.cases)):
                return mistake
        return None

    def verdict(self, fn: Callable) -> CheckResult:
        try:
            got = [self.run(fn, case) for case in self.cases]
        except NotImplementedError:
            return CheckResult(self.name, "not implemented", f"⏳ {self.name}: not implemented yet")
        want = self.reference_outcomes()
        failing = [i for i, (g, w) in enumerate(zip(got, want)) if not self.same(g, w)]
        modified = sorted({name for g in got for name in g.modified})
        if not failing and not modified:
            return CheckResult(self.name, "passed", f"✅ {self.name}: all {len(self.cases)} checks passed")
        message = self._explain(got, want, failing) if failing else self._in_place(modified, alone=True)
        if failing and modified:
            message = message.rstrip(".") + ". " + self._in_place(modified, alone=False)
        return CheckResult(self.name, "failed", f"❌ {self.name}: {message}")

    def _in_place(self, modified: list[str], *, alone: bool) -> str:
        names = ", ".join(f"`{m}`" for m in modified)
        writes = f" (only {', '.join(f'`{w}`' for w in self.writes)} may be written)" if self.writes else ""
        lead = "the values are right, but your function" if alone else "Also, your function"
        return (f"{lead} changed its input {names} in place{writes}: the caller's tensor is overwritten. "
                f"Compute into a new tensor (`y = x * s`, not `x *= s`, `x[...] = ...` or `x.mul_(s)`).")

    def _explain(self, got: list[Outcome], want: list[Outcome], failing: list[int]) -> str:
        first = failing[0]
        error = got[first].error
        mistake = self.matching_mistake(got)
        if mistake is not None:
            crash = f" (your function raised {type(error).__name__}: {error})" if error is not None else ""
            return mistake.hint + crash
        where = self._where(failing)
        if error is not None:
            signature = ""
            if isinstance(error, TypeError) and "argument" in str(error):  # called with the exercise's arguments
                signature = f"; keep the exercise's signature {self.name}({plain_signature(self.reference)})"
            return f"your function raised {type(error).__name__}: {error} ({where}{signature})"
        return f"{self._what_differs(got[first], want[first])} ({where})"

    def _where(self, failing: list[int]) -> str:
        """Which inputs fail; when the first case passes, which sizes it is that the code does not follow."""
        n, sizes = len(self.cases), [c.sizes for c in self.cases]
        label = sizes_label(sizes[failing[0]]) or self._args_label(self.cases[failing[0]])
        where = f"wrong on {len(failing)} of {n} cases, first on {label}"
        if failing[0] != 0 and sizes[0]:
            changed = varied_names(sizes[0], [sizes[i] for i in failing])
            if changed:
                where += (f"; right on the first case ({sizes_label(sizes[0])}), so check that nothing in your "
                          f"code assumes its {changed} (read every size from the inputs, use every argument)")
        return where

    def _args_label(self, case: Case) -> str:
        names = self.arg_names(len(case.args))
        return ", ".join(f"{k} {tuple(a.shape) if isinstance(a, Tensor) else a!r}" for k, a in zip(names, case.args))

    def _what_differs(self, got: Outcome, want: Outcome) -> str:
        if self.n_returned > 1:
            returned = got.returned
            if returned is None:
                return "your function returned None: did you forget `return`?"
            if not isinstance(returned, tuple | list) or len(returned) != self.n_returned:
                count = f"{len(returned)} values" if isinstance(returned, tuple | list) else type(returned).__name__
                return f"expected a tuple of {self.n_returned} ({', '.join(self.returns)}), got {count}"
        got_parts, want_parts = _parts(got, self.n_returned), _parts(want, self.n_returned)
        labels = self._part_labels()
        wrong = [i for i, (g, w) in enumerate(zip(got_parts, want_parts)) if not _close(g, w, self.atol, self.rtol)]
        i = wrong[0]
        text = f"{labels[i]} {describe_value(got_parts[i], want_parts[i])}"
        right = [f"the {ordinal(j)}" for j in range(self.n_returned) if j not in wrong]
        if self.n_returned > 1 and i < self.n_returned and right:
            text += f"; {' and '.join(right)} {'is' if len(right) == 1 else 'are'} right"
        return text

    def _part_labels(self) -> list[str]:
        if self.n_returned > 1:
            returned = [f"the {ordinal(i)} returned tensor ({name})" for i, name in enumerate(self.returns)]
        else:
            returned = ["your result"]
        return returned + [f"`{w}` after your call" for w in self.writes]

    def check(self, fn: Callable) -> CheckResult:
        """Print the verdict, then act on the check mode (see the module docstring)."""
        result = self.verdict(fn)
        print(result.message)
        mode = check_mode()
        if mode == "solution" and not result.passed:
            raise AssertionError(f"solution check failed: {result.message}")
        if mode == "exercise" and result.status != "not implemented":
            raise AssertionError(f"exercise stub of {self.name} did not raise NotImplementedError "
                                 f"({result.message}): a solution leaked into exercises/?")
        return result


def run_check(name: str, fn: Callable, reference: Callable, cases: Sequence[Case | tuple], *,
              mistakes: Sequence[Mistake] | Mapping[str, tuple[Callable, str]] | None = None,
              writes: tuple[str, ...] = (), returns: tuple[str, ...] = (), atol: float = 1e-5,
              rtol: float = 1e-4) -> CheckResult:
    """Check fn against reference on every case (an Exercise built on the spot); act on the check mode."""
    if isinstance(mistakes, Mapping):
        mistakes = [Mistake(key, wrong, hint) for key, (wrong, hint) in mistakes.items()]
    exercise = Exercise(name, reference, lambda: list(cases), tuple(mistakes or ()), writes, returns, atol, rtol)
    return exercise.check(fn)
