"""Keras dataset over batch generators (the ``xbatcher.loaders.keras`` of 0.4).

``CustomTFDataset(X_generator, y_generator)`` is a ``keras.utils.Sequence`` (Keras 3:
``PyDataset``) whose item ``i`` is ``(x, y)``, batch ``i`` of both generators as
``tf.Tensor``; pass it to ``model.fit``. ``transform`` / ``target_transform`` take and
return tensors, as in 0.4.

Importing this module imports TensorFlow; without it, it raises an ``ImportError``
naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xarray as xr

from ..errors import OptionalDependencyError
from ..generator import BatchGenerator
from ._arrays import as_dataarray, check_aligned, native_array, single_array

try:
    import tensorflow as tf
except ImportError as exc:
    raise OptionalDependencyError(
        "xbatcher.loaders.keras needs TensorFlow, which is not installed. Please "
        'install TensorFlow to proceed: pip install "xbatcher[tensorflow]"'
    ) from exc

__all__ = ["CustomTFDataset"]


def _tf_tensor(obj: xr.DataArray | xr.Dataset) -> Any:
    """A ``tf.Tensor`` holding a DataArray or a one-variable Dataset (computed)."""
    return tf.convert_to_tensor(native_array(as_dataarray(obj).to_numpy()))


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
