"""Checks of a generator's batches against the xbatcher 0.4 batching rules.

These are the public test helpers of xbatcher 0.4 (``xbatcher.testing``), with the same
names and signatures, so test suites written for 0.4 run unchanged. They compute what a
batch and the generator's length must be from the generator's 0.4 arguments
(``ds``, ``input_dims``, ``input_overlap``, ``batch_dims``, ``concat_input_dims``) by
the rules in ``docs/batching.md``, independently of how the generator computes them,
and raise ``AssertionError`` on a mismatch.

They describe the 0.4 layouts only (no ``batch_size``, shuffling, sharding or
``keep_remainder``).

Examples
--------
>>> import numpy as np, xarray as xr, xbatcher
>>> from xbatcher.testing import get_batch_dimensions, validate_batch_dimensions
>>> da = xr.DataArray(np.zeros((4, 12)), dims=("t", "x"), name="a")
>>> bgen = xbatcher.BatchGenerator(da, input_dims={"x": 4})
>>> get_batch_dimensions(bgen)
{'t': 4, 'x': 4}
>>> validate_batch_dimensions(expected_dims=get_batch_dimensions(bgen), batch=bgen[0])
>>> xbatcher.testing.validate_generator_length(bgen)
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING

import xarray as xr

if TYPE_CHECKING:
    from .generator import BatchGenerator

__all__ = [
    "get_batch_dimensions",
    "validate_batch_dimensions",
    "validate_generator_length",
]


def _data_sizes(generator: BatchGenerator) -> dict[Hashable, int]:
    """Sizes of the dims of the data (the data variables of a Dataset), in order."""
    ds = generator.ds
    if isinstance(ds, xr.DataArray):
        return dict(ds.sizes)
    used = {d for var in ds.data_vars.values() for d in var.dims}
    return {d: n for d, n in ds.sizes.items() if d in used}


def _n_windows(generator: BatchGenerator, dim: Hashable, size: int) -> int:
    """Windows of ``input_dims[dim]`` points, ``input_overlap[dim]`` shared, in ``size``."""
    window = generator.input_dims[dim]
    stride = window - generator.input_overlap.get(dim, 0)
    return (size - window) // stride + 1


def _windows_per_batch(generator: BatchGenerator, dim: Hashable) -> int:
    """Windows along input dim ``dim`` that one concatenated batch holds.

    Along a dim also in ``batch_dims`` (block ``B``), 0.4 puts ``ceil(B / stride)``
    consecutive windows in a batch; otherwise a batch holds every window of the dim.
    """
    size = _data_sizes(generator)[dim]
    block = generator.batch_dims.get(dim)
    if block is None:
        return _n_windows(generator, dim, size)
    stride = generator.input_dims[dim] - generator.input_overlap.get(dim, 0)
    return -(-block // stride)


def get_batch_dimensions(generator: BatchGenerator) -> dict[Hashable, int]:
    """Return the dims (names, sizes, order) that every batch of ``generator`` has.

    Parameters
    ----------
    generator : xbatcher.BatchGenerator
        A generator built with the 0.4 arguments only.

    Returns
    -------
    dict
        Dim name -> size, in the order of the dims of each variable of a batch:

        * without ``concat_input_dims``, when at most one dim of the data is not an
          input dim: the data's own dims (``batch_dims`` blocks, full other dims and
          the input windows);
        * without ``concat_input_dims``, otherwise: ``sample`` (the other dims stacked)
          followed by the input dims, in the order of ``input_dims``;
        * with ``concat_input_dims``: ``sample`` holding the windows of the batch
          and the other dims, followed by ``<dim>_input`` for each input dim; when
          every dim is an input dim, ``input_batch`` followed by the ``<dim>_input``
          in the data's order.
    """
    sizes = _data_sizes(generator)
    inputs = generator.input_dims
    blocks = generator.batch_dims
    # dims that are not input dims: whole (not in batch_dims) or in blocks
    others = {d: blocks.get(d, n) for d, n in sizes.items() if d not in inputs}
    if generator.concat_input_dims:
        n = math.prod(others.values()) * math.prod(
            _windows_per_batch(generator, d) for d in inputs
        )
        if not others:  # windows concatenated along input_batch, in the data's order
            return {"input_batch": n, **{f"{d}_input": inputs[d] for d in sizes}}
        return {"sample": n, **{f"{d}_input": w for d, w in inputs.items()}}
    if len(sizes) - len(inputs) > 1:
        return {"sample": math.prod(others.values()), **inputs}
    return {d: inputs.get(d, others.get(d, 0)) for d in sizes}


def validate_batch_dimensions(
    *, expected_dims: dict[Hashable, int], batch: xr.Dataset | xr.DataArray
) -> None:
    """Raise ``AssertionError`` unless ``batch`` has exactly ``expected_dims``.

    Checks the dim names and sizes of the batch, and that each data variable (or the
    DataArray) has them in the order of ``expected_dims``.

    Parameters
    ----------
    expected_dims : dict
        Dim name -> size, e.g. from :func:`get_batch_dimensions`.
    batch : xarray.Dataset or xarray.DataArray
        One batch of a generator.
    """
    sizes = dict(batch.sizes)
    if sizes != dict(expected_dims):
        raise AssertionError(
            f"Dimension names and/or lengths differ: expected {dict(expected_dims)}, "
            f"the batch has {sizes}"
        )
    arrays = (
        {batch.name: batch}
        if isinstance(batch, xr.DataArray)
        else dict(batch.data_vars.items())
    )
    want = tuple(expected_dims.items())
    for name, var in arrays.items():
        got = tuple(var.sizes.items())
        if got != want:
            raise AssertionError(
                f"Order differs for dimensions of {name!r}: expected {dict(want)}, "
                f"got {dict(got)}"
            )


def validate_generator_length(generator: BatchGenerator) -> None:
    """Raise ``AssertionError`` unless ``len(generator)`` follows the 0.4 rules.

    The length is the product, over the dims in ``batch_dims``, of the number of
    whole blocks (``size // block``), times, without ``concat_input_dims``, the
    number of windows along each input dim that is not in ``batch_dims``.

    Parameters
    ----------
    generator : xbatcher.BatchGenerator
        A generator built with the 0.4 arguments only.
    """
    sizes = _data_sizes(generator)
    expected = math.prod(sizes[d] // b for d, b in generator.batch_dims.items())
    if not generator.concat_input_dims:
        expected *= math.prod(
            _n_windows(generator, d, sizes[d])
            for d in generator.input_dims
            if d not in generator.batch_dims
        )
    if len(generator) != expected:
        raise AssertionError(
            f"Batch generator length differs: expected {expected} batches, "
            f"len(generator) is {len(generator)}"
        )
