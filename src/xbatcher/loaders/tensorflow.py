"""TensorFlow: batches of one or two generators as a ``tf.data.Dataset``.

:func:`to_tf_dataset` streams the batches of :class:`~xbatcher.loaders._pairs.BatchPairs`
(inputs and targets by ``inputs=`` / ``targets=`` or two aligned generators, as every
xbatcher loader) into a ``tf.data.Dataset`` with a static ``element_spec``: dtypes as
stored, shapes known up to a last, smaller batch. Each iteration of the dataset (each
Keras epoch) is the next epoch of the input generator, read ahead on background
threads and then by ``tf.data``'s own ``prefetch``. :func:`to_tensor` copies an xarray
object into a ``tf.Tensor`` (``obj.tf.to_tensor()``).

Importing this module imports TensorFlow; without it, it raises an ``ImportError``
naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..errors import InputTypeError, OptionalDependencyError
from ..generator import BatchGenerator
from ._arrays import as_dataarray, native_array
from ._pairs import BatchPairs, Item, Names
from ._stream import check_prefetch, epoch_items, unwrap

try:
    import tensorflow as tf
except ImportError as exc:
    raise OptionalDependencyError(
        "xbatcher.loaders.tensorflow needs TensorFlow, which is not installed. "
        'Please install TensorFlow to proceed: pip install "xbatcher[tensorflow]"'
    ) from exc

__all__ = ["element_spec", "to_tensor", "to_tf_dataset"]


def to_tensor(xr_obj: xr.DataArray | xr.Dataset) -> Any:
    """Copy a DataArray, or a Dataset with one data variable, into a ``tf.Tensor``.

    Parameters
    ----------
    xr_obj : xarray.DataArray or xarray.Dataset
        The data; dask-backed data is computed.

    Returns
    -------
    tf.Tensor
        Same shape, dim order, dtype and values.

    Raises
    ------
    xbatcher.errors.SchemaError
        For a Dataset with several data variables.
    """
    return tf.convert_to_tensor(native_array(as_dataarray(xr_obj).to_numpy()))


def _spec(array: Any, where: str) -> Any:
    """The ``tf.TensorSpec`` of one array of an item."""
    array = np.asarray(array)
    try:
        dtype = tf.as_dtype(array.dtype)
    except TypeError:
        raise InputTypeError(
            f"{where} has dtype {array.dtype}, which TensorFlow cannot hold. Convert "
            "it with a transform (e.g. transform=lambda x: x.astype('float32')) or "
            "leave the variable out (inputs=/targets=)."
        ) from None
    return tf.TensorSpec(shape=array.shape, dtype=dtype)


def _relax(first: Any, last: Any) -> Any:
    """``first`` with each dim that differs in ``last`` set to ``None``."""
    shape = [
        a if a == b else None
        for a, b in zip(first.shape.as_list(), last.shape.as_list(), strict=True)
    ]
    return tf.TensorSpec(shape=shape, dtype=first.dtype)


def _item_spec(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: _spec(v, f"item[{k!r}]") for k, v in item.items()}
    if isinstance(item, tuple):
        return tuple(_spec(v, f"item[{k}]") for k, v in enumerate(item))
    return _spec(item, "x")


def element_spec(pairs: BatchPairs, epoch: int = 0) -> Any:
    """The ``tf.TensorSpec`` structure of the items of ``pairs``.

    Read from the first batch of ``epoch`` (so transforms are taken into account)
    and, when the last batch holds fewer units (a last, smaller batch), from the
    last one too: a dim that differs between them is ``None``.

    Raises
    ------
    xbatcher.errors.InputTypeError
        An array has a dtype TensorFlow cannot hold (strings, datetimes).
    """
    n = len(pairs)
    first = _item_spec(unwrap(pairs.read(epoch, 0)))
    units = pairs.units(epoch, 0, 1)[0].size, pairs.units(epoch, n - 1, n)[0].size
    if units[0] == units[1]:
        return first
    last = _item_spec(unwrap(pairs.read(epoch, n - 1)))
    return tf.nest.map_structure(_relax, first, last)


class _Epochs:
    """The generator function of the dataset: each call is the next epoch."""

    def __init__(
        self,
        pairs: BatchPairs,
        gen: BatchGenerator,
        prefetch: int,
        threads: int,
        max_bytes: int | None,
    ) -> None:
        self.pairs = pairs
        self.gen = gen
        self.prefetch, self.threads, self.max_bytes = prefetch, threads, max_bytes

    def __call__(self) -> Iterator[Any]:
        items: Iterator[Item] = epoch_items(
            self.pairs,
            self.gen,
            prefetch=self.prefetch,
            threads=self.threads,
            max_bytes=self.max_bytes,
        )
        return map(unwrap, items)


def to_tf_dataset(
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
    prefetch: int = 4,
    threads: int = 1,
    max_bytes: int | str | None = None,
    output_signature: Any = None,
) -> Any:
    """The batches of ``X_generator`` (and targets) as a ``tf.data.Dataset``.

    Elements are ``(x, y)``, ``x`` (no targets) or a dict of every input and target
    (``as_dict=True``), each a ``tf.Tensor`` holding the values of
    ``BatchPairs(...).read(epoch, i)``. Iterating the dataset again (each Keras epoch)
    follows the generator's next epoch (a new order with ``shuffle=``) from its
    cursor, so ``X_generator.state_dict()`` says where training stands (counting
    the batches read ahead too). The dataset's length is ``len(X_generator)``,
    unless it is built right after ``load_state_dict`` restored a position: then the
    first iteration is the rest of that epoch and the length is left unknown.

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Inputs (and targets), as for :class:`~xbatcher.loaders._pairs.BatchPairs`.
    inputs, targets, transform, target_transform, as_dict, transform_on, channel_axis
        Which variables make ``x`` and ``y`` and how; see ``docs/loaders.md``
        (``channel_axis=-1`` puts stacked variables last, as Keras layers expect).
    prefetch : int, default 4
        Batches read ahead on background threads (``tf.data`` then prefetches
        with ``AUTOTUNE`` as well).
    threads : int, default 1
        Threads reading batches ahead (chunk decoding uses its own pool).
    max_bytes : int or str, optional
        Bytes read ahead at most (e.g. ``"256MiB"``).
    output_signature : optional
        The element spec, when a transform makes shapes vary; by default it is read
        from the first (and the last) batch (:func:`element_spec`).

    Returns
    -------
    tf.data.Dataset

    Raises
    ------
    xbatcher.errors.SchemaError, xbatcher.errors.InputTypeError
        Bad arguments (as for ``BatchPairs``), ``prefetch``/``threads`` < 1, a dtype
        TensorFlow cannot hold.
    """
    pairs = BatchPairs(
        X_generator,
        y_generator,
        inputs=inputs,
        targets=targets,
        transform=transform,
        target_transform=target_transform,
        as_dict=as_dict,
        transform_on=transform_on,
        channel_axis=channel_axis,
    )
    ahead, threads, budget = check_prefetch(prefetch, threads, max_bytes)
    if output_signature is None:
        output_signature = element_spec(pairs, X_generator.epoch)
    dataset = tf.data.Dataset.from_generator(
        _Epochs(pairs, X_generator, ahead, threads, budget),
        output_signature=output_signature,
    )
    if X_generator.state_dict()["position"] == 0:  # every iteration a whole epoch
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    return dataset.prefetch(tf.data.AUTOTUNE)
