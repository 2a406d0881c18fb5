"""xbatcher: fast batches from xarray objects for machine learning."""

from __future__ import annotations

from . import accessors as _accessors  # noqa: F401  (registers ds.batch)
from ._version import __version__
from ._versions import show_versions
from .generator import ArrayBatches, BatchGenerator
from .sampling import (
    BlockShuffleSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Shard,
    ShuffleSampler,
)
from .schema import BatchSchema

__all__ = [
    "ArrayBatches",
    "BatchGenerator",
    "BatchSchema",
    "BlockShuffleSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Shard",
    "ShuffleSampler",
    "__version__",
    "show_versions",
]
