"""Argument checks shared by every layer, so one mistake always raises one type.

A value of the wrong type raises :class:`~xbatcher.errors.InputTypeError` (a
``TypeError``); a value of the right type outside the allowed range raises
:class:`~xbatcher.errors.SchemaError` (a ``ValueError``). Messages name the argument,
the value, the allowed range and the fix.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np

from .errors import InputTypeError, SchemaError

__all__ = [
    "check_bool",
    "check_int",
    "check_seed",
    "is_int",
]

SEED_MAX = 2**64 - 1


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for Python and numpy integers, False for bools (``True`` is not a 1)."""
    return isinstance(value, int | np.integer) and not isinstance(
        value, bool | np.bool_
    )


def check_int(
    value: object,
    what: str,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    fix: str = "",
) -> int:
    """``value`` as a Python int if it is an integer in ``[minimum, maximum]``.

    Raises
    ------
    InputTypeError
        ``value`` is not an integer (floats, strings and bools are refused, even
        ``2.0`` or ``"2"``: a silent conversion would hide a bug).
    SchemaError
        ``value`` is an integer outside the range.

    Examples
    --------
    >>> check_int(np.int64(3), "n", minimum=1)
    3
    >>> check_int("3", "n")
    Traceback (most recent call last):
    ...
    xbatcher.errors.InputTypeError: n must be an int >= 0; got '3' of type str.
    """
    if (
        type(value) is int
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        return value  # the common case, checked on hot paths: no message to build
    allowed = (
        f"an int >= {minimum}"
        if maximum is None
        else f"an int in [{minimum}, {maximum}]"
    )
    tail = f" {fix}" if fix else ""
    if not is_int(value):
        raise InputTypeError(
            f"{what} must be {allowed}; got {value!r} of type "
            f"{type(value).__name__}.{tail}"
        )
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise SchemaError(f"{what} must be {allowed}; got {number}.{tail}")
    return number


def check_bool(value: object, what: str) -> bool:
    """``value`` as a bool if it is ``True``/``False`` (numpy bools too).

    Strings are refused: ``bool("False")`` is True, so taking one would silently
    turn an option on.

    Examples
    --------
    >>> check_bool(np.True_, "drop_last")
    True
    >>> check_bool("False", "drop_last")
    Traceback (most recent call last):
    ...
    xbatcher.errors.InputTypeError: drop_last must be True or False; got 'False' of type str. Pass a bool (drop_last=False), not a string.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InputTypeError(
        f"{what} must be True or False; got {value!r} of type "
        f"{type(value).__name__}. Pass a bool ({what}=False), not a string."
        if isinstance(value, str)
        else f"{what} must be True or False; got {value!r} of type "
        f"{type(value).__name__}. Pass a bool."
    )


def check_seed(value: object, what: str = "seed") -> int:
    """A seed: an int in ``[0, 2**64)`` (numpy integers accepted, bools refused)."""
    return check_int(
        value,
        what,
        minimum=0,
        maximum=SEED_MAX,
        fix="Pass a non-negative int below 2**64, or None for a fresh random seed.",
    )
