"""Argument checks shared by every layer, so one mistake always raises one type.

A value of the wrong type raises :class:`~xbatcher.errors.InputTypeError` (a
``TypeError``); a value of the right type outside the allowed range raises
:class:`~xbatcher.errors.SchemaError` (a ``ValueError``). Messages name the argument,
the value, the allowed range and the fix.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from .errors import DimensionError, InputTypeError, SchemaError

if TYPE_CHECKING:  # the sampling layer imports this module and must not import xarray
    import xarray as xr

__all__ = [
    "check_bool",
    "check_filter_names",
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


def check_filter_names(data: xr.Dataset, skip_nan: object, mask: object) -> None:
    """Check the names given to ``skip_nan=`` and ``mask=`` before any data is read.

    ``skip_nan`` names data variables of ``data``, ``mask`` any variable. A missing
    name raises :class:`~xbatcher.errors.DimensionError` (a ``KeyError``) listing the
    variables; a value of the wrong type an ``InputTypeError``.
    """
    known = list(data.data_vars)
    if skip_nan is not None:
        names = [skip_nan] if isinstance(skip_nan, str) else skip_nan
        if not isinstance(names, Sequence) or not all(
            isinstance(n, Hashable) and not isinstance(n, bool) for n in names
        ):
            raise InputTypeError(
                f"skip_nan must be a variable name or a list of names; got "
                f"{skip_nan!r} of type {type(skip_nan).__name__}."
            )
        for name in names:
            if name not in known:
                raise DimensionError(
                    f"skip_nan names {name!r}, which is not a variable of the data; "
                    f"variables are {known}. Pass one of them."
                )
    if mask is None:
        return
    known = list(data.variables)
    import xarray as xr

    if isinstance(mask, xr.DataArray):
        return
    if not isinstance(mask, str):
        raise InputTypeError(
            f"mask must be the name of a boolean variable or a boolean DataArray; "
            f"got {mask!r} of type {type(mask).__name__}."
        )
    if mask not in known:
        raise DimensionError(
            f"mask {mask!r} is not a variable of the data; variables are {known}. "
            "Pass the name of a boolean variable of ds, or a boolean DataArray."
        )
