"""xbatcher: fast batches from xarray objects for machine learning."""

from __future__ import annotations

from . import accessors as _accessors  # noqa: F401  (registers ds.batch)
from ._version import __version__
from ._versions import show_versions
from .distributed import DaskBatches
from .generator import ArrayBatches, BatchGenerator
from .materialize import MaterializedBatches, materialize, open_materialized
from .normalize import Normalizer
from .sampling import (
    BlockShuffleSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Shard,
    ShuffleSampler,
)
from .schema import BatchSchema
from .transforms import (
    Cast,
    Compose,
    FillNaN,
    Stack,
    ToFeatures,
    TransformedBatches,
    to_features,
)
from .windows import Window

__all__ = [
    "ArrayBatches",
    "BatchGenerator",
    "BatchSchema",
    "BlockShuffleSampler",
    "Cast",
    "Compose",
    "DaskBatches",
    "FillNaN",
    "MaterializedBatches",
    "Normalizer",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Shard",
    "ShuffleSampler",
    "Stack",
    "ToFeatures",
    "TransformedBatches",
    "Window",
    "__version__",
    "materialize",
    "open_materialized",
    "show_versions",
    "to_features",
]
