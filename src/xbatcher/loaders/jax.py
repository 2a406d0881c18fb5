"""JAX: batches as ``jax.Array`` on a device, and a random-access source for grain.

* :class:`JaxLoader`: each ``iter()`` is the input generator's next epoch (a new
  order with ``shuffle=``, following its cursor: ``bgen.state_dict()`` says where
  training stands), read ahead on background threads and copied to the device
  double-buffered: the ``jax.device_put`` of the next batch is issued before the
  current one is handed over, so the copy overlaps the step.
* :class:`GrainSource`: ``__len__`` and ``__getitem__`` over the batches of one
  epoch, picklable, for ``grain.MapDataset.source(...)`` (grain then shuffles,
  repeats and runs its own workers).

Items follow :class:`~xbatcher.loaders._pairs.BatchPairs` (``inputs=`` /
``targets=`` or two aligned generators, as every xbatcher loader): ``(x, y)``, ``x``
alone without targets, or a dict of every input and target (``as_dict=True``).

Importing this module imports JAX; without it, it raises an ``ImportError`` naming
the extra to install.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any, Literal

from .._validation import check_int
from ..errors import OptionalDependencyError
from ..generator import BatchGenerator
from ._pairs import BatchPairs, Names
from ._stream import check_prefetch, epoch_items, unwrap

try:
    import jax
except ImportError as exc:
    raise OptionalDependencyError(
        "xbatcher.loaders.jax needs JAX, which is not installed. Please install JAX "
        'to proceed: pip install "xbatcher[jax]"'
    ) from exc

__all__ = ["GrainSource", "JaxLoader"]


def _pairs(
    X_generator: BatchGenerator,
    y_generator: BatchGenerator | None,
    options: dict[str, Any],
) -> BatchPairs:
    return BatchPairs(X_generator, y_generator, **options)


class JaxLoader:
    """Epochs of ``jax.Array`` batches on a device, read ahead and double-buffered.

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Inputs (and targets), as for :class:`~xbatcher.loaders._pairs.BatchPairs`.
    inputs, targets, transform, target_transform, as_dict, transform_on, channel_axis
        Which variables make ``x`` and ``y`` and how (transforms see numpy arrays,
        or xarray batches; ``channel_axis=-1`` puts stacked variables last); see
        ``docs/loaders.md``.
    device : jax.Device or jax.sharding.Sharding, optional
        Where batches go (``jax.device_put``'s ``device``); default: JAX's default
        device.
    prefetch : int, default 4
        Batches read ahead on background threads.
    threads : int, default 1
        Threads reading batches ahead.
    max_bytes : int or str, optional
        Bytes read ahead at most (e.g. ``"256MiB"``).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> ds = xr.Dataset({"a": (("s", "f"), np.ones((8, 2))), "y": ("s", np.arange(8.0))})
    >>> loader = JaxLoader(xb.BatchGenerator(ds, {"f": 2}, batch_size=4), inputs="a",
    ...                    targets="y")
    >>> [(x.shape, y.tolist()) for x, y in loader]
    [((4, 2), [0.0, 1.0, 2.0, 3.0]), ((4, 2), [4.0, 5.0, 6.0, 7.0])]
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        *,
        inputs: Names = None,
        targets: Names = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        as_dict: bool = False,
        transform_on: Literal["arrays", "xarray"] = "arrays",
        channel_axis: int = 1,
        device: Any = None,
        prefetch: int = 4,
        threads: int = 1,
        max_bytes: int | str | None = None,
    ) -> None:
        self.pairs = _pairs(
            X_generator,
            y_generator,
            {
                "inputs": inputs,
                "targets": targets,
                "transform": transform,
                "target_transform": target_transform,
                "as_dict": as_dict,
                "transform_on": transform_on,
                "channel_axis": channel_axis,
            },
        )
        self.generator = X_generator
        self.device = device
        self.prefetch, self.threads, self.max_bytes = check_prefetch(
            prefetch, threads, max_bytes
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def _put(self, item: Any) -> Any:
        """``item`` with every array sent to the device (asynchronously)."""
        return jax.tree_util.tree_map(
            lambda a: jax.device_put(a, self.device), unwrap(item)
        )

    def __iter__(self) -> Iterator[Any]:
        """The next epoch of the generator, batch by batch, on the device."""
        items = epoch_items(
            self.pairs,
            self.generator,
            prefetch=self.prefetch,
            threads=self.threads,
            max_bytes=self.max_bytes,
        )
        return _double_buffered(items, self._put)


def _double_buffered(items: Iterator[Any], put: Callable[[Any], Any]) -> Iterator[Any]:
    """``put(item)`` of each item, the next one's ``put`` issued before the current
    one is yielded (``jax.device_put`` returns at once; the copy runs meanwhile)."""
    try:
        current = put(next(items))
    except StopIteration:
        return
    try:
        for item in items:
            following = put(item)
            yield current
            current = following
        yield current
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # an abandoned epoch stops its read-ahead threads


class GrainSource:
    """Random-access batches of one epoch, for ``grain.MapDataset.source``.

    ``source[i]`` is batch ``i`` of ``epoch`` as numpy arrays (``(x, y)``, ``x`` or
    a dict, as :class:`JaxLoader` without the device). Grain then orders, repeats
    and reads the records with its own workers; the source pickles small (the
    generator's plan and engine, never the data).

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Inputs (and targets), as for :class:`~xbatcher.loaders._pairs.BatchPairs`.
    inputs, targets, transform, target_transform, as_dict, transform_on, channel_axis
        As for :class:`JaxLoader`.
    epoch : int, optional
        Whose order the batches follow (default: ``X_generator.epoch``); with a
        shuffled generator it fixes which samples each batch holds.

    Examples
    --------
    >>> import grain, numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(12.0).reshape(6, 2), dims=("s", "f"))
    >>> source = GrainSource(xb.BatchGenerator(da, {"f": 2}, batch_size=2))
    >>> dataset = grain.MapDataset.source(source).shuffle(seed=0)
    >>> sorted(int(x[0, 0]) for x in dataset)
    [0, 4, 8]
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        *,
        inputs: Names = None,
        targets: Names = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        as_dict: bool = False,
        transform_on: Literal["arrays", "xarray"] = "arrays",
        channel_axis: int = 1,
        epoch: int | None = None,
    ) -> None:
        self.pairs = _pairs(
            X_generator,
            y_generator,
            {
                "inputs": inputs,
                "targets": targets,
                "transform": transform,
                "target_transform": target_transform,
                "as_dict": as_dict,
                "transform_on": transform_on,
                "channel_axis": channel_axis,
            },
        )
        first = X_generator.epoch if epoch is None else epoch
        self.epoch = check_int(first, "epoch", fix="Epochs are numbered 0, 1, ...")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, record_key: Any) -> Any:
        """Batch ``record_key`` of the epoch (an int; negative counts from the end)."""
        return unwrap(self.pairs.read(self.epoch, operator.index(record_key)))

    def __repr__(self) -> str:
        return f"GrainSource({len(self)} batches of epoch {self.epoch})"
