"""Several windows per sample: inputs and targets read at offsets from one anchor.

A :class:`Window` says which variables a role of the sample reads (``"x"``: the
inputs, ``"y"``: the target...) and where, along dims such as ``time``, relative to
the sample's own point there (the *anchor*). ``BatchGenerator(...,
windows={"x": Window(...), "y": Window(...)})`` then yields batches keyed by role.
Every role shares the spatial windows of ``input_dims``; offsets move a role along
dims where a sample is one point (dims not in ``input_dims``/``batch_dims``).

This module is pure arithmetic over dim sizes (it never touches data): it validates
the specs and finds the anchors whose every window lies inside the data. The rules
are in ``docs/targets.md``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._validation import is_int
from .errors import DimensionError, InputTypeError, SchemaError

__all__ = ["Offset", "Window", "anchor_ranges", "normalise_windows"]


@dataclass(frozen=True, slots=True)
class Offset:
    """Points read along one dim, relative to the anchor: ``first .. first + count - 1``.

    ``scalar`` is True for an offset given as a single int (``offsets={"time": 6}``):
    the dim is dropped from the batch, as ``isel(time=6)`` drops it; a list or range
    (even of one element, ``[6]``) keeps it, as ``isel(time=[6])`` does.
    """

    dim: Hashable
    first: int
    count: int
    scalar: bool

    @property
    def last(self) -> int:
        """The last offset read."""
        return self.first + self.count - 1


@dataclass(frozen=True, slots=True, init=False)
class Window:
    """What one role of a sample reads: some variables, at offsets from the anchor.

    Parameters
    ----------
    variables : str or sequence of str, optional
        The data variables this role reads (all of them when None). A variable
        without a dim of ``offsets`` (a static field) is read once per sample.
    offsets : dict, optional
        Dim -> offsets from the sample's point along that dim: an int (one point,
        the dim is dropped from the batch), or consecutive increasing ints (a
        ``range`` with step 1 or a list, the dim is kept with one entry per offset).
        Dims are those along which a sample is one point (not in ``input_dims`` or
        ``batch_dims``), e.g. ``time``. Dims not named are read at the anchor.

    Examples
    --------
    >>> w = Window(variables=["t2m", "u10"], offsets={"time": range(-3, 1)})
    >>> w.variables, w.offsets
    (('t2m', 'u10'), (Offset(dim='time', first=-3, count=4, scalar=False),))
    >>> Window(variables="t2m", offsets={"time": 6}).offsets[0].scalar
    True
    """

    variables: tuple[Hashable, ...] | None
    offsets: tuple[Offset, ...]

    def __init__(
        self,
        variables: Hashable | Sequence[Hashable] | None = None,
        offsets: Mapping[Hashable, int | range | Sequence[int]] | None = None,
    ) -> None:
        object.__setattr__(self, "variables", _check_variables(variables))
        if offsets is None:
            offsets = {}
        if not isinstance(offsets, Mapping):
            raise InputTypeError(
                f"Window offsets must be a dict of dim -> offsets; got "
                f"{type(offsets).__name__} {offsets!r}. Use e.g. "
                "offsets={'time': range(-3, 1)}."
            )
        object.__setattr__(
            self,
            "offsets",
            tuple(_check_offset(dim, value) for dim, value in offsets.items()),
        )

    def offset(self, dim: Hashable) -> Offset | None:
        """The offsets along ``dim``, or None when the role reads the anchor's point."""
        for o in self.offsets:
            if o.dim == dim:
                return o
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :meth:`from_dict` rebuilds an equal window."""
        return {
            "variables": None if self.variables is None else list(self.variables),
            "offsets": [[o.dim, o.first, o.count, o.scalar] for o in self.offsets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Window:
        """Rebuild a window from :meth:`to_dict` output."""
        offsets: dict[Hashable, int | range] = {}
        for dim, first, count, scalar in data["offsets"]:
            key = tuple(dim) if isinstance(dim, list) else dim
            offsets[key] = int(first) if scalar else range(first, first + count)
        return cls(data["variables"], offsets)


def _check_variables(
    variables: Hashable | Sequence[Hashable] | None,
) -> tuple[Hashable, ...] | None:
    if variables is None:
        return None
    if isinstance(variables, str) or not isinstance(variables, Sequence):
        if not isinstance(variables, Hashable):
            raise InputTypeError(
                f"Window variables must be a variable name or a list of them; got "
                f"{type(variables).__name__}. Use e.g. variables=['t2m', 'u10']."
            )
        return (variables,)
    names = tuple(variables)
    if not names:
        raise SchemaError(
            "Window variables is an empty list; a window must read at least one "
            "variable. Name some (variables=['t2m']) or pass None for all of them."
        )
    if len(set(names)) != len(names):
        raise SchemaError(
            f"Window variables names a variable twice: {list(names)}. List each once."
        )
    return names


def _check_offset(dim: Hashable, value: Any) -> Offset:
    fix = "Use an int (e.g. 6) or consecutive ints (e.g. range(-3, 1))."
    if is_int(value):
        return Offset(dim, int(value), 1, True)
    if isinstance(value, range):
        if value.step != 1 or len(value) == 0:
            raise SchemaError(
                f"Window offsets[{dim!r}] must be a non-empty range with step 1; got "
                f"{value!r}. {fix} For points with gaps, give each its own window."
            )
        return Offset(dim, value.start, len(value), False)
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if not items or not all(is_int(v) for v in items):
            raise SchemaError(
                f"Window offsets[{dim!r}] must be consecutive ints; got {value!r}. "
                f"{fix}"
            )
        ints = [int(v) for v in items]
        if ints != list(range(ints[0], ints[0] + len(ints))):
            raise SchemaError(
                f"Window offsets[{dim!r}] must be consecutive increasing ints (each "
                f"window is one block of the data); got {ints}. {fix} For points "
                "with gaps, give each its own window, e.g. windows={'y6': "
                f"Window(offsets={{{dim!r}: 6}}), 'y12': Window(offsets={{{dim!r}: 12}})}}."
            )
        return Offset(dim, ints[0], len(ints), False)
    raise InputTypeError(
        f"Window offsets[{dim!r}] must be an int, a range or a list of ints; got "
        f"{type(value).__name__} {value!r}. {fix}"
    )


def normalise_windows(windows: Any) -> tuple[tuple[str, Window], ...]:
    """``windows=`` as ``((role, Window), ...)``: checked names and types."""
    if windows is None:
        return ()
    if isinstance(windows, Mapping):
        pairs = list(windows.items())
    elif isinstance(windows, Sequence) and not isinstance(windows, str):
        pairs = [tuple(p) for p in windows]
        if not all(len(p) == 2 for p in pairs):
            raise InputTypeError(
                "windows must be a dict of role name -> xb.Window; got a sequence "
                f"that is not of (name, Window) pairs: {windows!r}."
            )
    else:
        raise InputTypeError(
            f"windows must be a dict of role name -> xb.Window; got "
            f"{type(windows).__name__}. Use e.g. windows={{'x': xb.Window(...), "
            "'y': xb.Window(...)}."
        )
    if not pairs:
        raise SchemaError(
            "windows is empty; give at least one role, e.g. windows={'x': "
            "xb.Window(offsets={'time': range(-3, 1)}), 'y': xb.Window(offsets="
            "{'time': 6})}, or leave windows out for one window per sample."
        )
    seen: list[str] = []
    for name, window in pairs:
        if not isinstance(name, str) or not name or "/" in name:
            raise SchemaError(
                f"windows role names must be non-empty str without '/'; got "
                f"{name!r}. Use names such as 'x' and 'y'."
            )
        if name in seen:
            raise SchemaError(
                f"windows names role {name!r} twice (roles: {[n for n, _ in pairs]}); "
                "each role is one key of the batch. Give each role its own name."
            )
        seen.append(name)
        if not isinstance(window, Window):
            raise InputTypeError(
                f"windows[{name!r}] must be an xb.Window; got "
                f"{type(window).__name__} {window!r}. Use e.g. "
                "xb.Window(variables=['t2m'], offsets={'time': 6})."
            )
    return tuple((str(n), w) for n, w in pairs)


def anchor_ranges(
    windows: tuple[tuple[str, Window], ...],
    sizes: Mapping[Hashable, int],
    sliced: Sequence[Hashable],
) -> tuple[tuple[Hashable, int, int], ...]:
    """The anchors whose every window fits: ``((dim, first, count), ...)``.

    Along each dim with offsets, an anchor ``a`` is kept when ``a`` and every
    ``a + offset`` of every role lie in ``0 .. size - 1``: anchors
    ``-min(0, lowest) .. size - 1 - max(0, highest)``.
    """
    spans: dict[Hashable, tuple[int, int]] = {}
    for name, window in windows:
        for o in window.offsets:
            if o.dim not in sizes:
                raise DimensionError(
                    f"windows[{name!r}] has offsets along {o.dim!r}, which is not a "
                    f"dimension of the data variables; they are {list(sizes)}. Fix "
                    "the name."
                )
            if o.dim in sliced:
                raise SchemaError(
                    f"windows[{name!r}] has offsets along {o.dim!r}, which input_dims"
                    f"/batch_dims cut into windows (sliced dims: {list(sliced)}); "
                    "offsets move a role along a dim where a sample is one point. "
                    f"Drop {o.dim!r} from input_dims/batch_dims (the offsets give the "
                    "window's length), or from the offsets."
                )
            size = sizes[o.dim]
            for value in (o.first, o.last):
                if not -size < value < size:
                    raise SchemaError(
                        f"windows[{name!r}] offset {value} along {o.dim!r} is out of "
                        f"range: {o.dim!r} has {size} points, so offsets must lie in "
                        f"{-(size - 1)}..{size - 1}. Use a smaller offset or more data."
                    )
            lo, hi = spans.get(o.dim, (0, 0))
            spans[o.dim] = (min(lo, o.first), max(hi, o.last))
    out = []
    for dim in sizes:
        if dim not in spans:
            continue
        lo, hi = spans[dim]
        count = sizes[dim] - (hi - lo)
        if count < 1:
            raise SchemaError(
                f"the windows of a sample span {hi - lo + 1} points along {dim!r} "
                f"(offsets {lo}..{hi} around the anchor, which is always one of the "
                f"data's points) but {dim!r} has {sizes[dim]}; no sample fits. Use "
                "offsets spanning at most "
                f"{sizes[dim]} points or more data."
            )
        out.append((dim, -lo, count))
    return tuple(out)
