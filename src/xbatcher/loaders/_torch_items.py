"""What the PyTorch datasets share: read items as tensors, transforms, epochs.

Private to :mod:`xbatcher.loaders.torch`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

import numpy as np
import torch

from .._validation import check_int
from ..errors import SchemaError
from ..generator import BatchGenerator
from ._arrays import native_array
from ._pairs import BatchPairs
from ._torch_device import to_tensor

__all__ = ["Transform", "TransformOn", "as_tensor", "check_epoch", "item", "pairs_for"]

Transform = Callable[[Any], Any]
TransformOn = Literal["xarray", "tensors"]


def as_tensor(value: Any) -> Any:
    """``value`` with numpy arrays (also inside dicts) as tensors sharing memory."""
    if isinstance(value, np.ndarray):
        array = native_array(value)
        if not array.flags.writeable:  # torch cannot share read-only memory
            array = array.copy()
        return torch.from_numpy(array)
    if isinstance(value, dict):
        return {k: as_tensor(v) for k, v in value.items()}
    return value


def pairs_for(
    X_generator: BatchGenerator,
    y_generator: BatchGenerator | None,
    transform: Transform | None,
    target_transform: Transform | None,
    transform_on: str,
    **kwargs: Any,
) -> tuple[BatchPairs, Transform | None, Transform | None]:
    """The pairs to read, and the tensor transforms to apply after reading."""
    if transform_on not in ("xarray", "tensors"):
        raise SchemaError(
            f"transform_on must be 'xarray' (the transform takes the xarray batch, "
            f"as in 0.4) or 'tensors' (it takes the tensor: faster); got "
            f"{transform_on!r}."
        )
    on_xarray = transform_on == "xarray"
    x_fn = None if transform is to_tensor else transform
    y_fn = None if target_transform is to_tensor else target_transform
    pairs = BatchPairs(
        X_generator,
        y_generator,
        transform=x_fn if on_xarray else None,
        target_transform=y_fn if on_xarray else None,
        transform_on="xarray",
        **kwargs,
    )
    if on_xarray:
        return pairs, None, None
    return pairs, x_fn, y_fn


def item(
    pairs: BatchPairs,
    values: tuple[Any, ...] | dict[Hashable, Any],
    x_fn: Transform | None,
    y_fn: Transform | None,
) -> Any:
    """A read item as tensors: ``x``, ``(x, y)`` or a dict."""
    if isinstance(values, dict):
        out = as_tensor(values)
        if x_fn is not None or y_fn is not None:
            n_x = len(pairs.x.names or (pairs.x.key,))
            keys = list(out)
            xs = {k: out[k] for k in keys[:n_x]}
            ys = {k: out[k] for k in keys[n_x:]}
            out = {
                **(xs if x_fn is None else x_fn(xs)),
                **(ys if y_fn is None or not ys else y_fn(ys)),
            }
        return out
    tensors = [as_tensor(v) for v in values]
    if x_fn is not None:
        tensors[0] = x_fn(tensors[0])
    if y_fn is not None and len(tensors) > 1:
        tensors[1] = y_fn(tensors[1])
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def check_epoch(epoch: Any) -> int:
    """``epoch`` as an int >= 0 (a typed error otherwise)."""
    return check_int(epoch, "epoch", minimum=0, fix="Epochs are numbered 0, 1, 2, ...")
