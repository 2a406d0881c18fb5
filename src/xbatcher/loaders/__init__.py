"""Framework loaders over batch generators.

* :mod:`xbatcher.loaders.torch`: PyTorch ``MapDataset`` and ``IterableDataset``
  (needs ``pip install "xbatcher[torch]"``);
* :mod:`xbatcher.loaders.keras`: the Keras ``CustomTFDataset``
  (needs ``pip install "xbatcher[tensorflow]"``).

Importing this package imports no framework: each submodule imports its own when it is
imported, and raises an ``ImportError`` naming the extra to install if it is missing.
"""

from __future__ import annotations

__all__: list[str] = []
