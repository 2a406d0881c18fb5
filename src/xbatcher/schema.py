"""The batch schema: pure index arithmetic over the dims of a dataset.

A :class:`BatchSchema` knows the sizes of the dataset's dims and the windowing rules
(``input_dims``, ``input_overlap``, ``batch_dims``, ``concat_input_dims``,
``batch_size``...). It never touches data. It answers "how many units (batches or
samples) are there" and "which windows does unit ``i`` cover" with numpy arithmetic,
in O(1) time and memory in the number of windows. The rules are documented in
``docs/batching.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ._validation import check_bool, check_int
from .errors import DimensionError, InputTypeError, SchemaError, XbatcherWarning
from .windows import Window, anchor_ranges, normalise_windows

__all__ = ["BatchSchema", "DimWindows", "Windows", "canonical_dims"]

Mode = Literal["window", "concat", "sample"]
_FORMAT_VERSION = 2  # 2: dims as JSON objects (0.4's form); 1: [dim, n] pairs


def _check_int(value: object, what: str, *, minimum: int, fix: str) -> int:
    """Return ``value`` as an int if it is an integer >= minimum, else raise."""
    return check_int(value, what, minimum=minimum, fix=fix)


def _name_key(name: Hashable) -> tuple[str, str]:
    return (str(name), type(name).__name__)


def canonical_dims(obj: Any) -> tuple[list[Hashable], list[Hashable]]:
    """The dims of an xarray object in an order that does not depend on how it was
    opened: ``(data_dims, coordinate_only_dims)``.

    ``data_dims`` are the dims of the data variables in order of first appearance over
    the variables sorted by number of dims (most first), then by name; so the order
    of a Dataset whose variables share their dims (or whose largest variable has them
    all) is that variable's. ``coordinate_only_dims`` are dims found only on
    coordinates (e.g. ``bnds`` of a CF ``time_bnds``), in order of first appearance
    over the coordinates sorted by name. Only data dims define the sample space.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"lsm": (("lat", "lon"), np.zeros((2, 3))),
    ...                  "t2m": (("time", "lat", "lon"), np.zeros((4, 2, 3)))},
    ...                 coords={"time_bnds": (("time", "bnds"), np.zeros((4, 2)))})
    >>> canonical_dims(ds)
    (['time', 'lat', 'lon'], ['bnds'])
    """
    if hasattr(obj, "data_vars"):
        variables = obj.data_vars.variables  # no DataArray built per variable
        data = [(name, tuple(v.dims)) for name, v in variables.items()]
    else:
        data = [(obj.name, tuple(obj.dims))]
    data.sort(key=lambda nv: (-len(nv[1]), _name_key(nv[0])))
    order: dict[Hashable, None] = {}
    for _, dims in data:
        order.update(dict.fromkeys(dims))
    extra: dict[Hashable, None] = {}
    coords = obj.coords.variables  # obj.coords[name] would build a DataArray each time
    for name in sorted(coords, key=_name_key):
        extra.update(dict.fromkeys(d for d in coords[name].dims if d not in order))
    return list(order), list(extra)


def sample_space_sizes(obj: Any, sliced: Any = ()) -> dict[Hashable, int]:
    """Dim sizes of the sample space of ``obj``: its data dims (canonical order) and
    any coordinate-only dim named in ``sliced``."""
    data_dims, coord_only = canonical_dims(obj)
    sizes = obj.sizes
    dims = data_dims + [d for d in coord_only if d in set(sliced)]
    return {d: int(sizes[d]) for d in dims}


def _as_pairs(
    mapping: Mapping[Hashable, int] | None, what: str
) -> tuple[tuple[Hashable, int], ...]:
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise InputTypeError(
            f"{what} must be a dict of dim name -> int; got {type(mapping).__name__} "
            f"{mapping!r}. Example: {what}={{'lat': 32}}."
        )
    return tuple(
        (dim, int(value) if isinstance(value, np.integer) else value)  # type: ignore[redundant-expr, unreachable, unused-ignore]
        for dim, value in mapping.items()
    )


@dataclass(frozen=True, slots=True)
class DimWindows:
    """Window arithmetic along one sliced dimension.

    Parameters
    ----------
    dim : hashable
        Dimension name.
    size : int
        Length of the dimension in the dataset.
    window : int
        Window length.
    stride : int
        Distance between consecutive window starts (``window - overlap``).
    group : int
        Windows per batch along this dim (``concat_input_dims``); 1 otherwise.
    keep_remainder : bool
        Add a last window ending at ``size`` when the grid leaves points uncovered.
    max_groups : int, optional
        At most this many groups (0.4's count along a batch-only dim in concat mode
        with a dim in both ``input_dims`` and ``batch_dims``).

    Examples
    --------
    >>> w = DimWindows("x", size=10, window=4, stride=3, group=1, keep_remainder=True)
    >>> w.n_windows, w.starts(np.arange(w.n_windows)).tolist()
    (3, [0, 3, 6])
    >>> DimWindows("x", 11, 4, 3, 1, True).starts(np.arange(4)).tolist()
    [0, 3, 6, 7]
    """

    dim: Hashable
    size: int
    window: int
    stride: int
    group: int
    keep_remainder: bool
    max_groups: int | None = None
    n_regular: int = field(init=False)
    n_windows: int = field(init=False)
    n_groups: int = field(init=False)

    def __post_init__(self) -> None:
        n_regular = (self.size - self.window) // self.stride + 1
        extra = self.keep_remainder and (self.size - self.window) % self.stride != 0
        n_windows = n_regular + int(extra)
        if self.keep_remainder:
            n_groups = -(-n_windows // self.group)
        else:
            n_groups = n_windows // self.group
        if self.max_groups is not None:
            n_groups = min(n_groups, self.max_groups)
        object.__setattr__(self, "n_regular", n_regular)
        object.__setattr__(self, "n_windows", n_windows)
        object.__setattr__(self, "n_groups", n_groups)

    def starts(self, k: NDArray[np.int64]) -> NDArray[np.int64]:
        """Start index of window number ``k`` (vectorised)."""
        k = np.asarray(k, dtype=np.int64)
        starts = k * self.stride
        if self.n_windows > self.n_regular:
            starts = np.where(k >= self.n_regular, self.size - self.window, starts)
        return starts

    def group_windows(self, g: int) -> NDArray[np.int64]:
        """Window numbers of group ``g`` (a batch along this dim in concat mode)."""
        lo = g * self.group
        return np.arange(lo, min(lo + self.group, self.n_windows), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Windows:
    """A set of windows over the dims of the dataset, ready for the reader.

    ``starts[d]`` holds one start per window for every dim ``d`` that is cut
    (sliced dims, and unsliced dims in sample mode); ``lengths[d]`` is the window
    length along ``d``. Dims absent from ``starts`` are taken whole.
    """

    starts: dict[Hashable, NDArray[np.int64]]
    lengths: dict[Hashable, int]
    count: int


@dataclass(frozen=True, slots=True)
class BatchSchema:
    """The rules that cut a dataset into windows, samples and batches.

    Pure arithmetic: building a schema never reads data and costs O(number of dims).
    ``len(schema)`` is the number of batches of one in-order epoch.

    Parameters
    ----------
    sizes : mapping or xarray object
        Dim name -> length, in sample-numbering order. An xarray object is accepted:
        its data dims are used, in :func:`canonical_dims` order (plus coordinate-only
        dims named in ``input_dims`` / ``batch_dims``).
    input_dims, input_overlap, batch_dims, concat_input_dims
        As for :class:`xbatcher.BatchGenerator`.
    keep_remainder : bool
        Keep a last window (and a last short group) covering leftover points.
    batch_size : int, optional
        Sample-level batching: ``batch_size`` samples per batch.
    drop_last : bool
        With ``batch_size``: drop a last batch smaller than ``batch_size``.
    windows : dict of str to Window, optional
        Several windows per sample (needs ``batch_size``): role name ->
        :class:`~xbatcher.windows.Window`. Samples are then the *anchors* whose
        every window fits in the data (see ``docs/targets.md``).

    Examples
    --------
    >>> s = BatchSchema({"time": 10, "x": 100}, input_dims={"x": 30})
    >>> len(s), s.mode, s.n_units
    (3, 'window', 3)
    >>> BatchSchema.from_json(s.to_json()) == s
    True
    """

    sizes: tuple[tuple[Hashable, int], ...]
    input_dims: tuple[tuple[Hashable, int], ...]
    input_overlap: tuple[tuple[Hashable, int], ...] = ()
    batch_dims: tuple[tuple[Hashable, int], ...] = ()
    concat_input_dims: bool = False
    keep_remainder: bool = False
    batch_size: int | None = None
    drop_last: bool = False
    windows: tuple[tuple[str, Window], ...] = ()
    sliced: tuple[DimWindows, ...] = field(init=False, repr=False, compare=False)
    unsliced: tuple[tuple[Hashable, int], ...] = field(
        init=False, repr=False, compare=False
    )
    _grid: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # several windows: (dim, first anchor, anchors) along each dim with offsets
    anchors: tuple[tuple[Hashable, int, int], ...] = field(
        init=False, repr=False, compare=False
    )

    def __init__(
        self,
        sizes: Mapping[Hashable, int] | Any,
        input_dims: Mapping[Hashable, int] | tuple[tuple[Hashable, int], ...],
        input_overlap: Mapping[Hashable, int]
        | tuple[tuple[Hashable, int], ...]
        | None = None,
        batch_dims: Mapping[Hashable, int]
        | tuple[tuple[Hashable, int], ...]
        | None = None,
        concat_input_dims: bool = False,
        keep_remainder: bool = False,
        batch_size: int | None = None,
        drop_last: bool = False,
        windows: Mapping[str, Window] | None = None,
    ) -> None:
        if hasattr(sizes, "sizes") and hasattr(sizes, "dims"):
            named = [*dict(input_dims or {}), *dict(batch_dims or {})]
            sizes = sample_space_sizes(sizes, named)
        setattr_ = object.__setattr__
        setattr_(self, "sizes", _normalise(sizes, "sizes"))
        setattr_(self, "input_dims", _normalise(input_dims, "input_dims"))
        setattr_(self, "input_overlap", _normalise(input_overlap, "input_overlap"))
        setattr_(self, "batch_dims", _normalise(batch_dims, "batch_dims"))
        setattr_(
            self,
            "concat_input_dims",
            check_bool(concat_input_dims, "concat_input_dims"),
        )
        setattr_(self, "keep_remainder", check_bool(keep_remainder, "keep_remainder"))
        setattr_(
            self,
            "batch_size",
            None
            if batch_size is None
            else _check_int(
                batch_size, "batch_size", minimum=1, fix="Use e.g. batch_size=32."
            ),
        )
        setattr_(self, "drop_last", check_bool(drop_last, "drop_last"))
        setattr_(self, "windows", normalise_windows(windows))
        self._validate_and_derive()

    # ------------------------------------------------------------------ validation
    def _validate_and_derive(self) -> None:
        sizes = dict(self.sizes)
        if not sizes:
            raise SchemaError(
                "the dataset has no dimensions; xbatcher needs at least the dims "
                "named in input_dims."
            )
        for dim, n in sizes.items():
            if n == 0:
                raise SchemaError(
                    f"dimension {dim!r} has length 0; every dimension must have at "
                    "least one element. Select a non-empty range before batching."
                )
        input_dims = dict(self.input_dims)
        overlap = dict(self.input_overlap)
        batch_dims = dict(self.batch_dims)
        known = list(sizes)
        for what, mapping in (
            ("input_dims", input_dims),
            ("input_overlap", overlap),
            ("batch_dims", batch_dims),
        ):
            for dim in mapping:
                if dim not in sizes:
                    raise DimensionError(
                        f"{what} names dimension {dim!r}, which is not in the dataset; "
                        f"the dataset's dimensions are {known}. Fix the name or "
                        "transpose/rename the data."
                    )
        for what, mapping in (("input_dims", input_dims), ("batch_dims", batch_dims)):
            for dim, value in mapping.items():
                size = sizes[dim]
                v = _check_int(
                    value,
                    f"{what}[{dim!r}]",
                    minimum=1,
                    fix=f"Use a positive window no larger than the dimension size ({size}).",
                )
                if v > size:
                    raise SchemaError(
                        f"{what}[{dim!r}] must be a positive int no larger than the "
                        f"dimension size ({size}); got {v}. Use a smaller window or "
                        "more data."
                    )
        if self.batch_size is not None and self.concat_input_dims:
            raise SchemaError(
                "batch_size and concat_input_dims=True are two ways of grouping "
                "windows into batches and cannot be combined; got "
                f"batch_size={self.batch_size}, concat_input_dims=True. Use "
                "batch_size (sample-level batches) or concat_input_dims, not both."
            )
        duplicate = [d for d in batch_dims if d in input_dims]
        if duplicate and not self.concat_input_dims:
            warnings.warn(
                "The following dimensions were included in both ``input_dims`` and "
                "``batch_dims``. Since ``concat_input_dims`` is ``False``, these "
                f"dimensions will not impact batch generation: "
                f"{ {d: batch_dims[d] for d in duplicate} }",
                XbatcherWarning,
                stacklevel=4,
            )
        unique_batch = [d for d in batch_dims if d not in input_dims]
        order = unique_batch + list(input_dims)
        for dim, value in overlap.items():
            if dim not in order:
                raise SchemaError(
                    f"input_overlap[{dim!r}] is given but {dim!r} is not sliced (not in "
                    f"input_dims or batch_dims; sliced dims: {order}). Remove it or add "
                    f"{dim!r} to input_dims."
                )
            window = input_dims.get(dim, batch_dims.get(dim, 0))
            ov = _check_int(
                value,
                f"input_overlap[{dim!r}]",
                minimum=0,
                fix=f"Use an overlap in [0, {window - 1}].",
            )
            if ov >= window:
                raise SchemaError(
                    f"input_overlap[{dim!r}] must be in [0, {window - 1}] (less than the "
                    f"window {window}); got {ov}. Use a smaller overlap."
                )
        sliced = []
        for dim in order:
            window = input_dims[dim] if dim in input_dims else batch_dims[dim]
            stride = window - overlap.get(dim, 0)
            group = 1
            max_groups = None
            if self.concat_input_dims and dim in input_dims:
                if dim in batch_dims:
                    # 0.4's rule: ceil(B / stride) consecutive windows per batch
                    group = -(-batch_dims[dim] // stride)
                else:
                    group = DimWindows(
                        dim, sizes[dim], window, stride, 1, self.keep_remainder
                    ).n_windows
            elif self.concat_input_dims and duplicate and not self.keep_remainder:
                # 0.4 keeps size // B blocks along a batch-only dim here (fewer than
                # the windows when batch dims overlap)
                max_groups = sizes[dim] // window
            sliced.append(
                DimWindows(
                    dim,
                    sizes[dim],
                    window,
                    stride,
                    group,
                    self.keep_remainder,
                    max_groups,
                )
            )
        object.__setattr__(self, "sliced", tuple(sliced))
        object.__setattr__(
            self,
            "unsliced",
            tuple((d, n) for d, n in self.sizes if d not in order),
        )
        anchors = self._derive_anchors(sizes, order)
        object.__setattr__(self, "anchors", anchors)
        n_anchors = {d: n for d, _, n in anchors}  # fewer samples along them
        if self.batch_size is None:
            grid = tuple(w.n_groups for w in sliced)
        else:
            grid = tuple(n_anchors.get(d, n) for d, n in self.unsliced) + tuple(
                w.n_windows for w in sliced
            )
        object.__setattr__(self, "_grid", grid)

    def _derive_anchors(
        self, sizes: dict[Hashable, int], sliced: list[Hashable]
    ) -> tuple[tuple[Hashable, int, int], ...]:
        """Several windows per sample: the anchors along each dim with offsets."""
        if not self.windows:
            return ()
        if self.batch_size is None:
            raise SchemaError(
                "windows= gives each sample several windows and needs sample-level "
                "batches; pass batch_size=N as well (e.g. batch_size=32)."
            )
        return anchor_ranges(self.windows, sizes, sliced)

    # ------------------------------------------------------------------ structure
    @property
    def mode(self) -> Mode:
        """``"window"`` (0.4 default), ``"concat"`` or ``"sample"`` (``batch_size``)."""
        if self.batch_size is not None:
            return "sample"
        return "concat" if self.concat_input_dims else "window"

    @property
    def sliced_dims(self) -> tuple[Hashable, ...]:
        """Sliced dims in slicing order: batch-only dims, then input dims."""
        return tuple(w.dim for w in self.sliced)

    @property
    def unit_shape(self) -> tuple[int, ...]:
        """Shape of the grid of units: batches (0.4 layouts) or samples (batch_size).

        In sample mode the axes are the unsliced dims (dataset order) followed by the
        sliced dims; unit numbers are row-major over this shape.
        """
        return self._grid

    @property
    def n_units(self) -> int:
        """Number of units: batches (0.4 layouts) or samples (``batch_size``)."""
        return math.prod(self._grid)

    @property
    def windows_per_unit(self) -> int:
        """Windows in one full unit (1 except in concat mode)."""
        if self.mode != "concat":
            return 1
        return math.prod(w.group for w in self.sliced)

    def num_batches(self, n_units: int) -> int:
        """Batches formed from an epoch of ``n_units`` units."""
        if self.batch_size is None:
            return n_units
        if self.drop_last:
            return n_units // self.batch_size
        return -(-n_units // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches(self.n_units)

    # ------------------------------------------------------------------ arithmetic
    def unit_windows(self, units: NDArray[np.int64]) -> Windows:
        """Windows covered by the given units, in order.

        In window and sample mode each unit is one window; in concat mode a unit
        (batch) expands to its group of windows (row-major over the sliced dims).
        """
        units = np.asarray(units, dtype=np.int64).reshape(-1)
        lengths = {w.dim: w.window for w in self.sliced}
        if self.mode == "sample":
            idx = (
                np.unravel_index(units, self._grid)
                if units.size
                else [np.empty(0, np.int64) for _ in self._grid]
            )
            starts: dict[Hashable, NDArray[np.int64]] = {}
            n_un = len(self.unsliced)
            first = {d: a for d, a, _ in self.anchors}
            for (dim, _), k in zip(self.unsliced, idx[:n_un], strict=True):
                starts[dim] = np.asarray(k, dtype=np.int64) + first.get(dim, 0)
                lengths[dim] = 1
            for w, k in zip(self.sliced, idx[n_un:], strict=True):
                starts[w.dim] = w.starts(np.asarray(k, dtype=np.int64))
            return Windows(starts, lengths, int(units.size))
        if not self.sliced:
            return Windows({}, {}, int(units.size))
        gidx = np.unravel_index(units, self._grid)
        if self.mode == "window":
            starts = {
                w.dim: w.starts(np.asarray(g, dtype=np.int64))
                for w, g in zip(self.sliced, gidx, strict=True)
            }
            return Windows(starts, lengths, int(units.size))
        # concat: expand each batch to the product of its per-dim window groups
        per_dim: list[list[NDArray[np.int64]]] = [[] for _ in self.sliced]
        for u in range(units.size):
            ranges = [
                w.group_windows(int(g[u]))
                for w, g in zip(self.sliced, gidx, strict=True)
            ]
            mesh = np.meshgrid(*ranges, indexing="ij")
            for j, m in enumerate(mesh):
                per_dim[j].append(m.reshape(-1))
        starts = {
            w.dim: w.starts(np.concatenate(per_dim[j]))
            for j, w in enumerate(self.sliced)
        }
        count = int(next(iter(starts.values())).size)
        return Windows(starts, lengths, count)

    def window_starts(self, unit: int) -> dict[Hashable, int]:
        """Start of window ``unit`` along each sliced dim (window mode, scalar)."""
        out: dict[Hashable, int] = {}
        rest = int(unit)
        for w in reversed(self.sliced):
            rest, k = divmod(rest, w.n_groups)
            out[w.dim] = k * w.stride if k < w.n_regular else w.size - w.window
        return out

    def unit_window_counts(self, units: NDArray[np.int64]) -> NDArray[np.int64]:
        """Number of windows in each unit (differs only for short concat groups)."""
        units = np.asarray(units, dtype=np.int64).reshape(-1)
        if self.mode != "concat":
            return np.ones(units.size, dtype=np.int64)
        gidx = np.unravel_index(units, self._grid)
        counts = np.ones(units.size, dtype=np.int64)
        for w, g in zip(self.sliced, gidx, strict=True):
            counts *= np.minimum(w.group, w.n_windows - np.asarray(g) * w.group)
        return counts

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; :meth:`from_dict` rebuilds an equal schema."""
        return _schema_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchSchema:
        """Rebuild a schema from :meth:`to_dict` output."""
        return _schema_from_dict(cls, data)

    def to_json(self) -> str:
        """Serialise the schema to JSON (lossless, unlike 0.4's ``to_json``).

        ``input_dims``, ``input_overlap`` and ``batch_dims`` are JSON objects as in
        0.4 (``{"x": 20}``) when all dim names are strings, in their order (keys are
        not sorted: the order of ``input_dims`` is the slicing order).
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> BatchSchema:
        """Rebuild a schema from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def to_file(self, path: str) -> None:
        """Write :meth:`to_json` to ``path`` (0.4 compatible)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @property
    def fingerprint(self) -> str:
        """Stable short hash of the schema (same on every machine and run).

        Computed from a canonical form (version-1 pairs, sorted keys) that does not
        follow changes of the ``to_json`` layout, so saved fingerprints stay valid.
        """
        canonical = {
            **self.to_dict(),
            "version": 1,
            **{
                key: [[_dim_to_json(d), n] for d, n in getattr(self, key)]
                for key in ("sizes", "input_dims", "input_overlap", "batch_dims")
            },
        }
        return hashlib.sha256(
            json.dumps(canonical, sort_keys=True).encode()
        ).hexdigest()[:16]


# ---------------------------------------------------------------------- JSON form


def _schema_to_dict(schema: BatchSchema) -> dict[str, Any]:
    """:meth:`BatchSchema.to_dict`."""
    # 0.4 wrote input_dims etc. as JSON objects ({"x": 20}); so do we when every
    # dim name is a str (object keys are strings), keeping the dims' order;
    # otherwise as [[dim, n], ...] pairs, which keep int and tuple names exact
    as_object = all(isinstance(d, str) for d, _ in schema.sizes)

    def pairs(p: tuple[tuple[Hashable, int], ...]) -> Any:
        if as_object:
            return {str(d): n for d, n in p}
        return [[_dim_to_json(d), n] for d, n in p]

    return {
        "format": "xbatcher.BatchSchema",
        "version": _FORMAT_VERSION,
        "sizes": pairs(schema.sizes),
        "input_dims": pairs(schema.input_dims),
        "input_overlap": pairs(schema.input_overlap),
        "batch_dims": pairs(schema.batch_dims),
        "concat_input_dims": schema.concat_input_dims,
        "keep_remainder": schema.keep_remainder,
        "batch_size": schema.batch_size,
        "drop_last": schema.drop_last,
        # only when given: the JSON form and fingerprint of other schemas stay as they were
        **(
            {"windows": {n: w.to_dict() for n, w in schema.windows}}
            if schema.windows
            else {}
        ),
    }


def _schema_from_dict(cls: type[BatchSchema], data: Mapping[str, Any]) -> BatchSchema:
    """:meth:`BatchSchema.from_dict`."""
    if data.get("format") != "xbatcher.BatchSchema":
        raise SchemaError(
            f"not an xbatcher BatchSchema description (format={data.get('format')!r}); "
            "pass the output of BatchSchema.to_json()."
        )
    if data.get("version") not in (1, _FORMAT_VERSION):
        raise SchemaError(
            f"BatchSchema format version {data.get('version')!r} is not supported; "
            f"this xbatcher reads versions 1 and {_FORMAT_VERSION}."
        )

    def pairs(key: str) -> tuple[tuple[Hashable, int], ...]:
        value = data[key]
        items = value.items() if isinstance(value, Mapping) else value
        return tuple((_dim_from_json(d), int(n)) for d, n in items)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XbatcherWarning)
        return cls(
            dict(pairs("sizes")),
            pairs("input_dims"),
            pairs("input_overlap"),
            pairs("batch_dims"),
            concat_input_dims=bool(data["concat_input_dims"]),
            keep_remainder=bool(data["keep_remainder"]),
            batch_size=data["batch_size"],
            drop_last=bool(data["drop_last"]),
            windows={n: Window.from_dict(w) for n, w in data.get("windows", {}).items()}
            or None,
        )


def _dim_to_json(dim: Hashable) -> Any:
    if isinstance(dim, str | int):
        return dim
    raise SchemaError(
        f"dimension name {dim!r} ({type(dim).__name__}) cannot be written to JSON; "
        "only str and int dimension names can. Rename the dimension."
    )


def _dim_from_json(dim: Any) -> Hashable:
    return tuple(dim) if isinstance(dim, list) else dim


def _normalise(
    value: Mapping[Hashable, int] | tuple[tuple[Hashable, int], ...] | None, what: str
) -> tuple[tuple[Hashable, int], ...]:
    if isinstance(value, tuple):
        return tuple((d, n) for d, n in value)
    if what == "sizes":
        return tuple((d, int(n)) for d, n in dict(value or {}).items())
    return _as_pairs(value, what)
