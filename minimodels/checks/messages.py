"""The words of a checker's verdict: what differs in a value, and which inputs a failure depends on.

Kept apart from the engine so every phrase a learner reads is in one place. Used by checks/engine.py.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

NAN_CAUSES = ("NaN usually comes from a row of scores that is entirely -inf (a query that may see no key: the "
              "softmax divides 0 by 0), from -inf minus -inf, or from the log or square root of 0 or of a "
              "negative number")

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def ordinal(i: int) -> str:
    """0 -> 'first'."""
    return _ORDINALS[i] if i < len(_ORDINALS) else f"#{i + 1}"


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def sizes_label(sizes: Mapping[str, object]) -> str:
    """{'B': 2, 'theta': 500.0} -> 'B=2, theta=500'."""
    return ", ".join(f"{name}={_format(value)}" for name, value in sizes.items())


def varied_names(base: Mapping[str, object], failing: Sequence[Mapping[str, object]]) -> str:
    """The base values of every size that the failing cases change, e.g. 'K=4 or theta=default'."""
    changed = [name for name in base if any(s.get(name) != base[name] for s in failing)]
    return " or ".join(f"{name}={_format(base[name])}" for name in changed)


def plain_signature(fn: Callable) -> str:
    """'x, weight, eps=1e-06': the argument names and defaults, without annotations."""
    params = inspect.signature(fn).parameters.values()
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={_format(p.default)}" for p in params)


def _number_text(got: object, want: numbers.Number) -> str:
    if got is None:
        return "is None: did you forget `return`?"
    if isinstance(got, Tensor) and got.dim() == 0:
        got = got.item()
    if isinstance(want, numbers.Integral) and isinstance(got, float):
        return f"is {got!r}, a float: the answer is a whole number, an int (use `//` or int arithmetic, not `/`)"
    if not isinstance(got, numbers.Real) or isinstance(got, bool):
        return f"is a {type(got).__name__}, expected a number"
    text = f"is {_format(got)}, expected {_format(want)}"
    if got and want and got != want:
        ratio = want / got if abs(want) > abs(got) else got / want
        if float(ratio).is_integer():
            text += f" ({'too small' if abs(want) > abs(got) else 'too large'} by a factor of {int(ratio)})"
    return text


def describe_value(got: object, want: object) -> str:
    """What is wrong with got, as the end of a sentence that starts with its name ('your result ...')."""
    if not isinstance(want, Tensor):
        return _number_text(got, want)
    if got is None:
        return "is None: did you forget `return`?"
    if not isinstance(got, Tensor):
        return f"is a {type(got).__name__}, not a tensor"
    if got.shape != want.shape:
        return f"has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return (f"has dtype {got.dtype}, expected {want.dtype} (the inputs' dtype): keep every step in the "
                f"inputs' dtype, or cast back with `.to(x.dtype)`")
    new_nan = got.isnan() & ~want.isnan()
    if new_nan.any():
        return f"contains NaN ({int(new_nan.sum())} of {got.numel()} values): {NAN_CAUSES}"
    new_inf = got.isinf() & ~want.isinf()
    if new_inf.any():
        return f"contains inf ({int(new_inf.sum())} of {got.numel()} values): a division by 0 or an overflow?"
    diff = (got.double() - want.double()).abs().max().item()
    return f"has wrong values (max difference {diff:.3g})"
