"""JAX loader (``JaxLoader``: jax.Array batches, double-buffered device_put) and the
grain source (``GrainSource``): values equal the generator's batches, dtypes round
trip, every batch once per epoch with a new order each epoch, a model trains."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import SchemaError

jax = pytest.importorskip("jax")
grain = pytest.importorskip("grain")
import jax.numpy as jnp  # noqa: E402

from xbatcher.loaders.jax import GrainSource, JaxLoader, _double_buffered  # noqa: E402

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool"]
W = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)


def _regression(n: int = 256) -> xr.Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    ds = xr.Dataset(
        {
            "x": (("s", "f"), x),
            "y": ("s", (x @ W + 0.5).astype(np.float32)),
            "sid": ("s", np.arange(n)),
        }
    )
    return ds.chunk(s=64)


def _batches(bgen: xb.BatchGenerator, epoch: int) -> list[Any]:
    bgen.set_epoch(epoch)
    return list(bgen.arrays)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    n=st.integers(3, 30),
    batch_size=st.integers(1, 7),
    shuffle=st.booleans(),
)
def test_jax_batches_hold_the_values_and_dtypes(
    dtype: str, n: int, batch_size: int, shuffle: bool
) -> None:
    values = (np.arange(n * 2).reshape(n, 2) % 5).astype(dtype)
    ds = xr.Dataset({"v": (("s", "f"), values), "t": ("s", np.arange(n))})
    bgen = xb.BatchGenerator(ds, {"f": 2}, batch_size=batch_size, shuffle=shuffle)
    with jax.enable_x64(True):  # else JAX turns 64-bit values into 32-bit ones
        got = list(JaxLoader(bgen, inputs="v", targets="t", prefetch=2))
    expected = _batches(bgen, 0)
    assert len(got) == len(expected)
    for (x, t), batch in zip(got, expected, strict=True):
        assert isinstance(x, jax.Array) and isinstance(t, jax.Array)
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(x), batch["v"])
        np.testing.assert_array_equal(np.asarray(t), batch["t"])
        np.testing.assert_array_equal(np.asarray(x), ds["v"].isel(s=batch["t"]).values)


def test_each_iteration_is_the_next_epoch_every_batch_once() -> None:
    bgen = xb.BatchGenerator(_regression(), {"f": 4}, batch_size=32, shuffle=True)
    loader = JaxLoader(bgen, inputs="x", targets="sid", as_dict=True)
    orders = []
    for epoch in range(2):
        items = list(loader)
        assert bgen.epoch == epoch + 1
        assert all(set(item) == {"x", "sid"} for item in items)
        ids = np.concatenate([np.asarray(item["sid"]) for item in items]).tolist()
        assert sorted(ids) == list(range(256))
        expected = _batches(bgen, epoch)
        bgen.set_epoch(epoch + 1)
        assert ids == np.concatenate([b["sid"] for b in expected]).tolist()
        orders.append(ids)
    assert orders[0] != orders[1]


def test_the_next_device_put_is_issued_before_a_batch_is_handed_over() -> None:
    events: list[str] = []

    def put(item: int) -> int:
        events.append(f"put {item}")
        return item

    def items() -> Iterator[int]:
        yield from range(3)

    for item in _double_buffered(items(), put):
        events.append(f"use {item}")
    assert events == ["put 0", "put 1", "use 0", "put 2", "use 1", "use 2"]


def test_the_loader_puts_on_the_device_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = jax.devices()[0]
    calls: list[Any] = []
    real: Callable[..., Any] = jax.device_put

    def spy(value: Any, target: Any = None) -> Any:
        calls.append(target)
        return real(value, target)

    monkeypatch.setattr(jax, "device_put", spy)
    bgen = xb.BatchGenerator(_regression(64), {"f": 4}, batch_size=16)
    items = list(JaxLoader(bgen, inputs="x", targets="y", device=device))
    assert len(items) == 4 and calls == [device] * 8
    assert all(x.devices() == {device} for x, _ in items)


def test_sgd_through_the_loader_reduces_the_loss() -> None:
    bgen = xb.BatchGenerator(_regression(), {"f": 4}, batch_size=32, shuffle=True)
    loader = JaxLoader(bgen, inputs="x", targets="y")

    def loss(params: tuple[Any, Any], x: Any, y: Any) -> Any:
        w, b = params
        return jnp.mean((x @ w + b - y) ** 2)

    grad = jax.jit(jax.value_and_grad(loss))
    params = (jnp.zeros(4), jnp.zeros(()))
    losses = []
    for _ in range(4):
        epoch_loss = []
        for x, y in loader:
            value, g = grad(params, x, y)
            params = jax.tree_util.tree_map(lambda p, d: p - 0.1 * d, params, g)
            epoch_loss.append(float(value))
        losses.append(np.mean(epoch_loss))
    assert losses[-1] < 0.2 * losses[0]
    np.testing.assert_allclose(np.asarray(params[0]), W, atol=0.1)


def test_an_abandoned_epoch_stops_its_threads() -> None:
    import threading

    bgen = xb.BatchGenerator(_regression(), {"f": 4}, batch_size=8)
    before = set(threading.enumerate())
    epoch = iter(JaxLoader(bgen, inputs="x", prefetch=4))
    next(epoch)
    epoch.close()  # type: ignore[attr-defined]
    left = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in left if t.name.startswith("xbatcher-prefetcher")] == []
    assert bgen.epoch == 0


def test_loader_argument_errors() -> None:
    bgen = xb.BatchGenerator(_regression(64), {"f": 4}, batch_size=16)
    with pytest.raises(SchemaError, match=r"threads must be an int >= 1; got 0"):
        JaxLoader(bgen, inputs="x", threads=0)
    with pytest.raises(SchemaError, match="max_bytes"):
        JaxLoader(bgen, inputs="x", max_bytes="many")


# ----------------------------------------------------------------------- grain
def test_grain_reads_the_source_every_batch_once() -> None:
    bgen = xb.BatchGenerator(
        _regression(), {"f": 4}, batch_size=32, shuffle=True, seed=7
    )
    stacked = GrainSource(bgen, inputs=["x", "y"], channel_axis=-1, epoch=1)
    assert stacked[0].shape == (32, 4, 2)
    source = GrainSource(bgen, inputs="x", targets="sid", epoch=1)
    restored = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 20_000  # the plan and engine, not the data
    expected = _batches(bgen, 1)
    for i in range(len(source)):
        x, sid = restored[i]
        np.testing.assert_array_equal(x, expected[i]["x"])
        np.testing.assert_array_equal(sid, expected[i]["sid"])
    dataset = grain.MapDataset.source(source).shuffle(seed=0)
    ids = [sid.tolist() for _, sid in dataset]
    assert ids != [b["sid"].tolist() for b in expected]  # grain's own order
    assert sorted(ids) == sorted(b["sid"].tolist() for b in expected)
    two_epochs = grain.MapDataset.source(source).shuffle(seed=0).repeat(2)
    assert len(list(two_epochs)) == 2 * len(source)


def test_grain_workers_read_the_source(run_python: Any) -> None:
    """Grain's own worker processes unpickle the source and read every batch."""
    code = textwrap.dedent(
        """
        import grain, numpy as np, xarray as xr, xbatcher as xb
        from absl import flags
        from xbatcher.loaders.jax import GrainSource

        if __name__ == "__main__":
            flags.FLAGS(["test"])
            da = xr.DataArray(np.arange(200.0).reshape(100, 2), dims=("s", "f"))
            bgen = xb.BatchGenerator(
                da.chunk(s=10), {"f": 2}, batch_size=10, shuffle=True, seed=1
            )
            source = GrainSource(bgen)
            options = grain.MultiprocessingOptions(num_workers=2)
            dataset = grain.MapDataset.source(source).to_iter_dataset()
            firsts = [x[:, 0].tolist() for x in dataset.mp_prefetch(options)]
            expected = [b[:, 0].tolist() for b in bgen.arrays]
            assert firsts == expected, (firsts, expected)
            print("ok", len(firsts))
        """
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok 10" in result.stdout


def test_read_ahead_counts_the_bytes_of_the_variables_read() -> None:
    from xbatcher.loaders._pairs import BatchPairs
    from xbatcher.loaders._stream import item_nbytes

    ds = _regression(64).assign(big=(("s", "f"), np.zeros((64, 4), "float64")))
    bgen = xb.BatchGenerator(ds, {"f": 4}, batch_size=16)
    # x: 16 x 4 float32, y: 16 float32 (not big, not sid)
    assert item_nbytes(BatchPairs(bgen, inputs="x", targets="y")) == 16 * 4 * 4 + 64
    x, y = BatchPairs(bgen, inputs="x", targets="y").read(0, 0)
    assert x.nbytes + y.nbytes == 16 * 4 * 4 + 64


def test_missing_jax_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from xbatcher.errors import OptionalDependencyError

    monkeypatch.setitem(sys.modules, "jax", None)  # import of it fails
    monkeypatch.delitem(sys.modules, "xbatcher.loaders.jax")
    with pytest.raises(OptionalDependencyError, match=r'pip install "xbatcher\[jax\]"'):
        __import__("xbatcher.loaders.jax")


def test_forecast_pairs_from_a_windows_generator_every_sample_once() -> None:
    """JaxLoader over a windows= generator: roles "x" / "y" by default, channel
    last, values from ds.isel at each role's offsets, a new order each epoch."""
    from test_pairs import _fc_gen, check_forecast_epoch
    from test_targets import forecast, make_ds

    ds = make_ds()
    loader = JaxLoader(_fc_gen(ds, shuffle=True, seed=2), channel_axis=-1)
    orders = []
    for _ in range(2):
        batches = [(np.asarray(x), np.asarray(y)) for x, y in loader]
        assert all(x.shape[1:] == (4, 3, 4, 3) for x, _ in batches)
        orders.append(
            check_forecast_epoch(
                batches, ds, forecast(), ("t2m", "u10", "z_static"), ("t2m",), -1
            )
        )
    assert orders[0] != orders[1]
