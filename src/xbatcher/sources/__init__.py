"""Sources: one variable of the dataset as an n-d array read by storage chunks.

A :class:`Source` knows its shape, dtype and chunk bounds and reads regions or whole
chunks; it knows nothing of windows, batches or samplers. :func:`make_source` picks
one per variable through a registry of ``(accepts, factory)`` pairs: first the pairs
given to :func:`register_source`, then the package's own:

- :class:`DaskZarrSource` for dask-backed variables whose graph only reads a Zarr
  array (``xr.open_zarr``, perhaps behind ``isel`` slices or a rechunk),
- :class:`DaskSource` for other dask-backed variables,
- :class:`InMemorySource` for data xarray holds in memory,
- :class:`ZarrSource` for lazily opened Zarr it can decode directly,
- :class:`LazySource`, reading through xarray, for anything else.

Every source passes the same contract suite (``tests/source_contract.py``).
"""

from ._base import Source
from ._dask import DaskSource
from ._dask_zarr import DaskZarrSource
from ._lazy import LazySource
from ._memory import InMemorySource
from ._registry import (
    Accepts,
    SourceFactory,
    make_source,
    register_source,
    unregister_source,
)
from ._zarr import ZarrSource

__all__ = [
    "Accepts",
    "DaskSource",
    "DaskZarrSource",
    "InMemorySource",
    "LazySource",
    "Source",
    "SourceFactory",
    "ZarrSource",
    "make_source",
    "register_source",
    "unregister_source",
]
