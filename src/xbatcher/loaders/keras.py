"""Keras datasets over batch generators.

* :class:`PyDataset`: a Keras 3 ``keras.utils.PyDataset`` over
  :class:`~xbatcher.loaders._pairs.BatchPairs` (``inputs=`` / ``targets=`` or two
  aligned generators, as every xbatcher loader): item ``i`` is batch ``i`` of the
  current epoch as numpy arrays (any Keras backend), Keras' ``workers`` /
  ``use_multiprocessing`` read items in parallel, and each epoch Keras runs moves it
  to the generator's next epoch (a new order with ``shuffle=``).
* :class:`CustomTFDataset`: the ``xbatcher.loaders.keras`` class of 0.4, unchanged:
  item ``i`` is ``(x, y)``, batch ``i`` of both generators as ``tf.Tensor``;
  ``transform`` / ``target_transform`` take and return tensors.

Importing this module imports TensorFlow; without it, it raises an ``ImportError``
naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import xarray as xr

from .._validation import check_int
from ..errors import OptionalDependencyError
from ..generator import BatchGenerator
from ._arrays import check_aligned, native_array, single_array
from ._pairs import BatchPairs, Item, Names

try:
    import tensorflow as tf

    from .tensorflow import to_tensor
except ImportError as exc:
    raise OptionalDependencyError(
        "xbatcher.loaders.keras needs TensorFlow, which is not installed. Please "
        'install TensorFlow to proceed: pip install "xbatcher[tensorflow]"'
    ) from exc

__all__ = ["CustomTFDataset", "PyDataset"]


def _tf_tensor(obj: xr.DataArray | xr.Dataset) -> Any:
    """A ``tf.Tensor`` holding a DataArray or a one-variable Dataset (computed)."""
    return to_tensor(obj)


class PyDataset(tf.keras.utils.PyDataset):  # type: ignore[misc]
    """Keras 3 dataset: item ``i`` is batch ``i`` of the current epoch.

    Items are ``(x, y)``, ``(x,)`` (no targets), or with ``as_dict=True``
    ``({inputs}, {targets})`` (dicts by variable name: Keras takes inputs and
    targets apart), numpy arrays holding the values of ``BatchPairs.read``. Pass it
    to ``model.fit``; each epoch Keras runs (``on_epoch_begin`` ..
    ``on_epoch_end``) moves to the next epoch, so a shuffled generator gives a new
    order every epoch (Keras may also permute the batches of an epoch: each still
    comes exactly once).

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Inputs (and targets), as for :class:`~xbatcher.loaders._pairs.BatchPairs`.
    inputs, targets, transform, target_transform, as_dict, transform_on, channel_axis
        Which variables make ``x`` and ``y`` and how; see ``docs/loaders.md``
        (``channel_axis=-1`` puts stacked variables last, as Keras layers expect).
    epoch : int, optional
        The first epoch (default: ``X_generator.epoch``).
    workers, use_multiprocessing, max_queue_size
        Keras' own parallel reading (``keras.utils.PyDataset``): threads, or
        processes with ``use_multiprocessing=True``.

    Raises
    ------
    xbatcher.errors.SchemaError, xbatcher.errors.InputTypeError
        Bad arguments (as for ``BatchPairs``), a negative ``epoch``.
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
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ) -> None:
        super().__init__(
            workers=workers,
            use_multiprocessing=use_multiprocessing,
            max_queue_size=max_queue_size,
        )
        self.pairs = BatchPairs(
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
        first = X_generator.epoch if epoch is None else epoch
        self.epoch = check_int(first, "epoch", fix="Epochs are numbered 0, 1, ...")
        self._in_epoch = False

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        return _keras_item(self.pairs, self.pairs.read(self.epoch, index))

    def on_epoch_begin(self) -> None:
        """Keras starts an epoch (it follows :attr:`epoch`)."""
        self._in_epoch = True

    def on_epoch_end(self) -> None:
        """Keras finished an epoch: the next one follows the next epoch's order.

        Only an epoch begun with :meth:`on_epoch_begin` ends (``model.fit`` also
        calls ``on_epoch_end`` once before its first epoch).
        """
        if self._in_epoch:
            self.epoch += 1
            self._in_epoch = False

    def set_epoch(self, epoch: int) -> None:
        """Follow ``epoch``'s order from the next item on."""
        self.epoch = check_int(epoch, "epoch", fix="Epochs are numbered 0, 1, ...")


def _keras_item(pairs: BatchPairs, item: Item) -> Any:
    """``item`` as Keras takes it: a dict becomes ``({inputs}, {targets})``."""
    if not isinstance(item, dict) or pairs.y is None:
        return item
    n_inputs = len(pairs.x.names or (pairs.x.key,))
    keys = list(item)
    return (
        {k: item[k] for k in keys[:n_inputs]},
        {k: item[k] for k in keys[n_inputs:]},
    )


def _tensor_at(generator: BatchGenerator, idx: int) -> Any:
    """Batch ``idx`` as a tensor: from ``bgen.arrays`` where that gives the same values."""
    if isinstance(generator, BatchGenerator) and generator.cache is None:
        return tf.convert_to_tensor(native_array(single_array(generator.arrays[idx])))
    return _tf_tensor(generator[idx])


class CustomTFDataset(tf.keras.utils.Sequence):  # type: ignore[misc]
    """Keras dataset: item ``i`` is ``(x, y)``, batch ``i`` of both generators.

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Batches of inputs and of targets, with the same number of batches.
    transform, target_transform : callable, optional
        Applied to the ``x`` / ``y`` tensor of each item.

    Raises
    ------
    xbatcher.errors.SchemaError
        If the two generators give different numbers of batches.
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator,
        *,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__()
        check_aligned(X_generator, y_generator)
        self.X_generator = X_generator
        self.y_generator = y_generator
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.X_generator)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x = _tensor_at(self.X_generator, idx)
        y = _tensor_at(self.y_generator, idx)
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y
