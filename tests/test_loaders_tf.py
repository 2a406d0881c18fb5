"""TensorFlow and Keras loaders: ``to_tf_dataset``, the Keras 3 ``PyDataset``.

Values equal the generator's own batches (``bgen.arrays``, ``ds.isel``), dtypes and
static shapes round trip, every batch comes exactly once per epoch with a new order
each epoch, and small models train through ``model.fit`` on both. TensorFlow is slow
to import: everything TensorFlow is in this one module.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import InputTypeError, SchemaError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from xbatcher.loaders.keras import PyDataset  # noqa: E402
from xbatcher.loaders.tensorflow import element_spec, to_tf_dataset  # noqa: E402

DTYPES = [
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    ">f4",
]
W = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)


def _regression(n: int = 256, chunks: int | None = None) -> xr.Dataset:
    """Inputs ``x(s, f)`` and targets ``y = x @ W + 0.5``, sample ids in ``sid``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    ds = xr.Dataset(
        {
            "x": (("s", "f"), x),
            "y": ("s", (x @ W + 0.5).astype(np.float32)),
            "sid": ("s", np.arange(n)),
        }
    )
    return ds.chunk(s=chunks) if chunks else ds


@pytest.fixture(scope="module")
def regression() -> xr.Dataset:
    return _regression(chunks=64)


def _batches(bgen: xb.BatchGenerator, epoch: int) -> list[Any]:
    bgen.set_epoch(epoch)
    return list(bgen.arrays)


def _model() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _wait_threads_end(before: set[threading.Thread]) -> list[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [
            t
            for t in threading.enumerate()
            if t not in before and t.name.startswith("xbatcher-prefetcher")
        ]
        if not left:
            return []
        gc.collect()
        time.sleep(0.01)
    return [t.name for t in left]


# ----------------------------------------------------------------------- to_tf_dataset
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    n=st.integers(5, 40),
    batch_size=st.integers(1, 8),
    drop_last=st.booleans(),
    chunked=st.booleans(),
)
def test_tf_dataset_holds_the_batches_dtypes_and_static_shapes(
    dtype: str, n: int, batch_size: int, drop_last: bool, chunked: bool
) -> None:
    values = (np.arange(n * 3).reshape(n, 3) % 7).astype(dtype)
    ds = xr.Dataset({"v": (("s", "f"), values), "t": ("s", np.arange(n, dtype="i2"))})
    if chunked:
        ds = ds.chunk(s=4)
    bgen = xb.BatchGenerator(
        ds, {"f": 3}, batch_size=batch_size, drop_last=drop_last, shuffle=True, seed=1
    )
    if len(bgen) == 0:
        return
    dataset = to_tf_dataset(bgen, inputs="v", targets="t")
    x_spec, y_spec = dataset.element_spec
    assert x_spec.dtype == tf.as_dtype(np.dtype(dtype).newbyteorder("="))
    assert y_spec.dtype == tf.int16
    ragged = n % batch_size != 0 and not drop_last and len(bgen) > 1
    size = None if ragged else min(n, batch_size)  # one batch may hold fewer
    assert x_spec.shape.as_list() == [size, 3]
    assert y_spec.shape.as_list() == [size]
    got = [(x.numpy(), y.numpy()) for x, y in dataset]
    expected = _batches(bgen, 0)
    assert len(got) == len(expected)
    for (x, y), batch in zip(got, expected, strict=True):
        assert x.dtype == np.dtype(dtype).newbyteorder("=")
        np.testing.assert_array_equal(x, batch["v"])
        np.testing.assert_array_equal(y, batch["t"])
        # the batch is the windows of its samples: ds.isel of them
        np.testing.assert_array_equal(x, ds["v"].isel(s=y.astype(int)).values)


def test_each_iteration_is_the_next_epoch_every_batch_once(
    regression: xr.Dataset,
) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=2)
    dataset = to_tf_dataset(bgen, inputs="x", targets="sid")
    orders = []
    for epoch in range(3):
        ids = [y.numpy() for _, y in dataset]
        assert bgen.epoch == epoch + 1  # the generator's epoch follows
        assert sorted(np.concatenate(ids).tolist()) == list(range(256))
        expected = _batches(bgen, epoch)
        bgen.set_epoch(epoch + 1)
        assert [i.tolist() for i in ids] == [b["sid"].tolist() for b in expected]
        orders.append(np.concatenate(ids).tolist())
    assert orders[0] != orders[1] != orders[2]


def test_the_dataset_resumes_from_the_generator_state(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=2)
    full = [b["sid"].tolist() for b in _batches(bgen, 1)]
    bgen.load_state_dict({**bgen.state_dict(), "epoch": 1, "position": 3})
    dataset = to_tf_dataset(bgen, inputs="x", targets="sid")
    rest = [y.numpy().tolist() for _, y in dataset]
    assert rest == full[3:]
    assert bgen.epoch == 2


def test_dict_items_and_stacked_channels(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=64)
    dataset = to_tf_dataset(bgen, inputs=["x", "y"], targets="sid", as_dict=True)
    assert set(dataset.element_spec) == {"x", "y", "sid"}
    stacked = to_tf_dataset(bgen, inputs=["x", "y"], targets="sid")
    assert stacked.element_spec[0].shape.as_list() == [64, 2, 4]
    last = to_tf_dataset(bgen, inputs=["x", "y"], channel_axis=-1)
    assert last.element_spec.shape.as_list() == [64, 4, 2]  # channels last (Keras)
    first_x = next(iter(last)).numpy()
    np.testing.assert_array_equal(first_x[..., 0], _batches(bgen, 0)[0]["x"])
    for item, (x, y), batch in zip(dataset, stacked, _batches(bgen, 0), strict=True):
        np.testing.assert_array_equal(item["x"].numpy(), batch["x"])
        np.testing.assert_array_equal(item["sid"].numpy(), batch["sid"])
        np.testing.assert_array_equal(x.numpy()[:, 0], batch["x"])
        np.testing.assert_array_equal(x.numpy()[:, 1, 2], batch["y"])  # broadcast
        np.testing.assert_array_equal(y.numpy(), batch["sid"])


def test_an_abandoned_iteration_leaves_no_thread(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=8, shuffle=True)
    dataset = to_tf_dataset(bgen, inputs="x", targets="y", prefetch=4)
    before = set(threading.enumerate())
    iterator = iter(dataset)
    next(iterator)
    del iterator
    assert _wait_threads_end(before) == []
    assert bgen.epoch == 0  # the epoch did not end


def test_tf_dataset_argument_errors(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32)
    with pytest.raises(SchemaError, match=r"prefetch must be an int >= 1; got 0"):
        to_tf_dataset(bgen, inputs="x", prefetch=0)
    times = regression.assign(when=("s", np.arange(256).astype("datetime64[s]")))
    tbgen = xb.BatchGenerator(times, {"f": 4}, batch_size=32)
    with pytest.raises(InputTypeError, match=r"dtype datetime64\[s\].*transform="):
        to_tf_dataset(tbgen, inputs="x", targets="when")


def test_element_spec_follows_the_transform(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=30)
    pairs = xb.loaders._pairs.BatchPairs(
        bgen, inputs="x", transform=lambda x: x[:, :2].astype("float16")
    )
    spec = element_spec(pairs)
    assert spec.shape.as_list() == [None, 2] and spec.dtype == tf.float16


# ----------------------------------------------------------------------- Keras
def test_keras_trains_through_the_tf_dataset(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=3)
    dataset = to_tf_dataset(bgen, inputs="x", targets="y")
    assert len(dataset) == 8  # the cardinality is known
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras' "input ran out of data"
        history = _model().fit(dataset, epochs=4, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert bgen.epoch == 4


def test_py_dataset_items_and_epochs(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=4)
    data = PyDataset(bgen, inputs="x", targets="sid", workers=2)
    assert data.workers == 2 and data.use_multiprocessing is False  # super().__init__
    orders = []
    for epoch in range(2):
        items = [data[i] for i in range(len(data))]
        expected = _batches(bgen, epoch)
        for (x, sid), batch in zip(items, expected, strict=True):
            np.testing.assert_array_equal(x, batch["x"])
            np.testing.assert_array_equal(sid, batch["sid"])
        ids = np.concatenate([sid for _, sid in items]).tolist()
        assert sorted(ids) == list(range(256))
        orders.append(ids)
        data.on_epoch_end()  # as model.fit first calls it: not an epoch
        assert data.epoch == epoch
        data.on_epoch_begin()
        data.on_epoch_end()
    assert orders[0] != orders[1]
    assert data.epoch == 2
    data.set_epoch(0)
    np.testing.assert_array_equal(data[0][1], _batches(bgen, 0)[0]["sid"])


def test_keras_trains_through_the_py_dataset_with_workers(
    regression: xr.Dataset,
) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=5)
    data = PyDataset(bgen, inputs="x", targets="y", workers=2)
    history = _model().fit(data, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert data.epoch == 4  # one epoch per epoch Keras ran
    # dicts: Keras takes ({inputs}, {targets})
    named = PyDataset(bgen, inputs=["x", "sid"], targets="y", as_dict=True)
    inputs, targets = named[0]
    assert set(inputs) == {"x", "sid"} and set(targets) == {"y"}
    np.testing.assert_array_equal(targets["y"], _batches(bgen, 0)[0]["y"])


def test_py_dataset_with_processes_covers_every_batch(regression: xr.Dataset) -> None:
    bgen = xb.BatchGenerator(regression, {"f": 4}, batch_size=32, shuffle=True, seed=6)
    data = PyDataset(
        bgen, inputs="x", targets="sid", workers=2, use_multiprocessing=True
    )
    # the adapter model.fit uses (worker processes of Keras' enqueuer), epoch
    # after epoch, as model.fit drives it
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(data, shuffle=False)
    orders = []
    for epoch in range(2):
        adapter.on_epoch_begin()
        ids = [sid for _, sid in adapter.get_numpy_iterator()]
        adapter.on_epoch_end()
        expected = _batches(bgen, epoch)
        assert [i.tolist() for i in ids] == [b["sid"].tolist() for b in expected]
        orders.append(np.concatenate(ids).tolist())
    assert orders[0] != orders[1]
    assert sorted(orders[1]) == list(range(256))


@pytest.mark.parametrize("module", ["tensorflow", "keras"])
def test_missing_tensorflow_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    import sys

    from xbatcher.errors import OptionalDependencyError

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import of it fails
    for name in ("tensorflow", "keras"):
        monkeypatch.delitem(sys.modules, f"xbatcher.loaders.{name}", raising=False)
    with pytest.raises(
        OptionalDependencyError, match=r'pip install "xbatcher\[tensorflow\]"'
    ):
        __import__(f"xbatcher.loaders.{module}")
