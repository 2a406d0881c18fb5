"""Framework loaders over batch generators.

* :mod:`xbatcher.loaders.torch`: PyTorch ``MapDataset`` and ``IterableDataset``
  (needs ``pip install "xbatcher[torch]"``);
* :mod:`xbatcher.loaders.keras`: the Keras 3 ``PyDataset`` and 0.4's
  ``CustomTFDataset`` (needs ``pip install "xbatcher[tensorflow]"``);
* :mod:`xbatcher.loaders.tensorflow`: ``to_tf_dataset`` (a ``tf.data.Dataset``);
* :mod:`xbatcher.loaders.jax`: ``JaxLoader`` (``jax.Array`` batches on a device) and
  ``GrainSource`` (for ``grain.MapDataset.source``; needs ``pip install
  "xbatcher[jax]"``).

Importing this package imports no framework: each submodule imports its own when it is
imported, and raises an ``ImportError`` naming the extra to install if it is missing.
"""

from __future__ import annotations

__all__: list[str] = []
