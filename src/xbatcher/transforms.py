"""Per-batch transforms: plain, picklable callables on numpy batches.

A transform takes a batch as :func:`~xbatcher.engine.read_batch` gives it (an
``ndarray`` for a DataArray source, a dict name -> ``ndarray`` for a Dataset) and
returns a batch. Each works on whole arrays (vectorised, no per-sample loop) and
pickles, so the same object runs in the main process, a loader worker or a Dask
worker (``DaskBatches(transform=...)``, ``materialize(transform=...)``). Compose
them with :class:`Compose`; apply one to any sequence of batches (``bgen.arrays``,
``DaskBatches``, a materialised store) with :class:`TransformedBatches`.

A fitted :class:`~xbatcher.normalize.Normalizer` is a transform too.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .errors import InputTypeError, SchemaError

__all__ = [
    "Cast",
    "Compose",
    "FillNaN",
    "Stack",
    "ToFeatures",
    "TransformedBatches",
    "to_features",
]

Batch = Any  # an ndarray, or a dict of ndarrays


class _Batches(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, idx: int) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise InputTypeError(
            f"{what} must be a callable taking and returning a batch; got "
            f"{type(fn).__name__}. Pass a function or an xbatcher transform "
            "(e.g. xb.FillNaN(0.0))."
        )


def _map_arrays(batch: Batch, fn: Callable[[NDArray[Any]], NDArray[Any]]) -> Batch:
    """``fn`` on the array of a DataArray batch or on each array of a dict batch."""
    if isinstance(batch, dict):
        return {k: fn(np.asarray(v)) for k, v in batch.items()}
    return fn(np.asarray(batch))


@dataclass(frozen=True, slots=True, init=False)
class Compose:
    """Apply transforms in order: ``Compose(f, g)(batch) == g(f(batch))``.

    Examples
    --------
    >>> import numpy as np
    >>> t = Compose(FillNaN(0.0), Cast("float32"))
    >>> t(np.array([1.0, np.nan])).tolist(), t(np.array([1.0])).dtype
    ([1.0, 0.0], dtype('float32'))
    """

    transforms: tuple[Callable[[Batch], Batch], ...]

    def __init__(self, *transforms: Callable[[Batch], Batch]) -> None:
        for k, t in enumerate(transforms):
            _check_callable(t, f"Compose transform {k}")
        object.__setattr__(self, "transforms", tuple(transforms))

    def __call__(self, batch: Batch) -> Batch:
        for t in self.transforms:
            batch = t(batch)
        return batch


@dataclass(frozen=True, slots=True)
class Cast:
    """Cast every array to ``dtype`` (e.g. ``"float32"`` for a GPU model).

    Examples
    --------
    >>> Cast("float32")({"a": np.zeros(2)})["a"].dtype
    dtype('float32')
    """

    dtype: DTypeLike

    def __call__(self, batch: Batch) -> Batch:
        dtype = np.dtype(self.dtype)
        return _map_arrays(batch, lambda a: a.astype(dtype, copy=False))


@dataclass(frozen=True, slots=True)
class FillNaN:
    """Replace NaN by ``value``; with ``mask=True`` also say where values were.

    Parameters
    ----------
    value : float
        The fill value (0.0 after a standard normalisation is the mean).
    mask : bool
        Add a mask channel (1.0 where the value was valid, 0.0 where it was NaN):
        for a dict batch a variable ``f"{name}{mask_suffix}"`` per variable; for an
        array batch a new last axis of length 2 (values, mask).
    mask_suffix : str
        Name suffix of the mask variables of a dict batch.

    Examples
    --------
    >>> FillNaN(-1.0)(np.array([1.0, np.nan])).tolist()
    [1.0, -1.0]
    >>> FillNaN(0.0, mask=True)({"t": np.array([np.nan, 2.0])})
    {'t': array([0., 2.]), 't_mask': array([0., 1.])}
    """

    value: float = 0.0
    mask: bool = False
    mask_suffix: str = "_mask"

    def _fill(self, a: NDArray[Any]) -> NDArray[Any]:
        if not np.issubdtype(a.dtype, np.floating):
            return a  # integers and bools hold no NaN
        return np.where(np.isnan(a), a.dtype.type(self.value), a)

    def __call__(self, batch: Batch) -> Batch:
        if not self.mask:
            return _map_arrays(batch, self._fill)
        if isinstance(batch, dict):
            out: dict[Hashable, NDArray[Any]] = {}
            for name, a in batch.items():
                a = np.asarray(a)
                out[name] = self._fill(a)
                out[f"{name}{self.mask_suffix}"] = _valid(a)
            return out
        a = np.asarray(batch)
        return np.stack([self._fill(a), _valid(a).astype(a.dtype, copy=False)], -1)


def _valid(a: NDArray[Any]) -> NDArray[Any]:
    dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype("float32")
    if not np.issubdtype(a.dtype, np.floating):
        return np.ones(a.shape, dtype=dtype)
    valid: NDArray[Any] = (~np.isnan(a)).astype(dtype)
    return valid


@dataclass(frozen=True, slots=True)
class Stack:
    """Stack the variables of a dict batch into one array along a channel axis.

    Parameters
    ----------
    variables : sequence of str, optional
        The variables, in channel order (all, in the batch's order, when None).
    axis : int
        Where the channel axis goes (default: last, ``(sample, ..., channel)``).

    Examples
    --------
    >>> b = {"u": np.zeros((2, 3)), "v": np.ones((2, 3))}
    >>> Stack(["v", "u"])(b)[0].tolist()
    [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    """

    variables: Sequence[Hashable] | None = None
    axis: int = -1

    def __call__(self, batch: Batch) -> NDArray[Any]:
        if not isinstance(batch, dict):
            raise InputTypeError(
                f"Stack needs a dict batch (a Dataset's); got {type(batch).__name__}. "
                "An array batch is one variable already."
            )
        names = list(batch) if self.variables is None else list(self.variables)
        missing = [n for n in names if n not in batch]
        if missing:
            raise SchemaError(
                f"Stack variables {missing} are not in the batch; it holds "
                f"{list(batch)}. Pass names of the batch's variables."
            )
        out: NDArray[Any] = np.stack([np.asarray(batch[n]) for n in names], self.axis)
        return out


def to_features(
    batch: Batch, variables: Sequence[Hashable] | None = None
) -> NDArray[Any]:
    """A batch as a 2-D ``(sample, feature)`` array for scikit-learn / xgboost.

    The first axis of every array is the sample axis (``batch_size`` batches); the
    other axes of each variable are flattened (C order) into features, and the
    variables' features follow each other (in ``variables`` order, else the batch's).

    Examples
    --------
    >>> b = {"u": np.arange(6.0).reshape(2, 3), "v": np.array([10.0, 20.0])}
    >>> to_features(b).tolist()
    [[0.0, 1.0, 2.0, 10.0], [3.0, 4.0, 5.0, 20.0]]
    """
    if not isinstance(batch, dict):
        a = np.asarray(batch)
        return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    names = list(batch) if variables is None else list(variables)
    arrays = [np.asarray(batch[n]) for n in names]
    if not arrays:
        raise SchemaError("to_features got an empty batch; pass at least one variable.")
    n = arrays[0].shape[0]
    bad = [name for name, a in zip(names, arrays, strict=True) if a.shape[:1] != (n,)]
    if bad:
        raise SchemaError(
            f"to_features needs the same number of samples ({n}) first in every "
            f"array; variables {bad} differ. Use a generator with batch_size."
        )
    return np.concatenate([a.reshape(n, -1) for a in arrays], axis=1)


@dataclass(frozen=True, slots=True)
class ToFeatures:
    """The transform of :func:`to_features`: ``(sample, feature)`` arrays."""

    variables: Sequence[Hashable] | None = None

    def __call__(self, batch: Batch) -> NDArray[Any]:
        return to_features(batch, self.variables)


class TransformedBatches:
    """A sequence of batches (``bgen.arrays``, ``DaskBatches``, a materialised
    store) seen through a transform: ``tb[i] == transform(batches[i])``; iterating
    iterates ``batches`` (its epochs and state) and transforms each batch.

    Examples
    --------
    >>> import xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(8.0), dims="x")
    >>> bgen = xb.BatchGenerator(da, {"x": 2}, batch_size=2)
    >>> tb = TransformedBatches(bgen.arrays, Cast("int8"))
    >>> len(tb), tb[1].tolist()
    (2, [[4, 5], [6, 7]])
    """

    def __init__(self, batches: _Batches, transform: Callable[[Batch], Batch]) -> None:
        _check_callable(transform, "transform")
        self.batches = batches
        self.transform = transform

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, idx: int) -> Batch:
        return self.transform(self.batches[idx])

    def __iter__(self) -> Iterator[Batch]:
        return map(self.transform, iter(self.batches))
