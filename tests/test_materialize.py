"""Shuffled materialisation to Zarr: content, resume, a lost worker, the reader."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import assert_batches_equal
from xbatcher.errors import SchemaError, StateError
from xbatcher.transforms import Cast, Compose, FillNaN

mat = importlib.import_module("xbatcher.materialize")  # xb.materialize: the function

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_bgen(n: int = 23, **kw: Any) -> xb.BatchGenerator:
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {
            "a": (("time", "x"), rng.random((n, 12))),
            "b": (("time", "x"), rng.integers(0, 99, (n, 12)).astype(np.int16)),
        }
    ).chunk(time=4)
    kw.setdefault("shuffle", True)
    kw.setdefault("seed", 7)
    return xb.BatchGenerator(ds, {"x": 4}, batch_size=5, **kw)


def store_files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


class Slow:
    def __call__(self, batch: Any) -> Any:
        time.sleep(0.3)
        return batch


@pytest.mark.parametrize("bpc", [1, 2, 4])
def test_store_holds_the_generators_batches_in_order(tmp_path: Path, bpc: int) -> None:
    bgen = make_bgen()
    want = list(make_bgen().arrays)  # epoch 0's order
    store = xb.materialize(
        bgen, str(tmp_path / "m.zarr"), batches_per_chunk=bpc, progress=False
    )
    assert len(store) == len(want) == 14  # 69 samples, the last batch of 4
    assert_batches_equal(list(store), want)
    ds = store.dataset()
    assert ds["a"].chunks[0][0] == 5 * bpc
    np.testing.assert_array_equal(
        ds["a"].values, np.concatenate([w["a"] for w in want])
    )


def test_transform_and_epoch(tmp_path: Path) -> None:
    bgen = make_bgen()
    t = Compose(FillNaN(0.0), Cast("float32"))
    store = xb.materialize(
        bgen, str(tmp_path / "m.zarr"), epoch=3, transform=t, progress=False
    )
    ref = make_bgen()
    ref.set_epoch(3)
    assert_batches_equal(list(store), [t(b) for b in ref.arrays])
    assert store.dataset()["b"].dtype == np.float32


def test_interrupted_then_resumed_equals_a_clean_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = tmp_path / "clean.zarr"
    xb.materialize(make_bgen(), str(clean), batches_per_chunk=2, progress=False)
    real = mat.write_chunk
    written: list[int] = []

    def failing(payload: Any, spec: Any, k: int) -> int:
        if len(written) >= 3:
            raise RuntimeError("simulated crash")
        written.append(k)
        return real(payload, spec, k)

    resumed = tmp_path / "resumed.zarr"
    monkeypatch.setattr(mat, "write_chunk", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        xb.materialize(
            make_bgen(),
            str(resumed),
            batches_per_chunk=2,
            progress=False,
            max_workers=1,
        )
    with pytest.raises(StateError, match="is incomplete: 4 of 7 chunks"):
        xb.open_materialized(str(resumed))
    # a chunk half written when the run stopped: data there, no marker
    import zarr

    group = zarr.open_group(str(resumed), mode="r+")
    group["a"][30:35] = -1.0
    calls: list[int] = []

    def counting(payload: Any, spec: Any, k: int) -> int:
        calls.append(k)
        return real(payload, spec, k)

    monkeypatch.setattr(mat, "write_chunk", counting)
    xb.materialize(make_bgen(), str(resumed), batches_per_chunk=2, progress=False)
    assert sorted(calls) == sorted(set(range(7)) - set(written))  # done ones skipped
    assert store_files(resumed) == store_files(clean)  # bit for bit


def test_a_store_of_another_run_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "m.zarr")
    xb.materialize(make_bgen(), url, progress=False)
    with pytest.raises(StateError, match="holds a materialisation of another run"):
        xb.materialize(make_bgen(seed=8), url, progress=False)
    xb.materialize(make_bgen(seed=8), url, progress=False, overwrite=True)
    assert_batches_equal(
        list(xb.open_materialized(url, shuffle=False)), list(make_bgen(seed=8).arrays)
    )


def test_errors(tmp_path: Path) -> None:
    da = xr.DataArray(np.zeros((4, 6)), dims=("t", "x"))
    with pytest.raises(SchemaError, match="materialize needs sample batches"):
        xb.materialize(xb.BatchGenerator(da, {"x": 2}), str(tmp_path / "a"))
    with pytest.raises(SchemaError, match="batches_per_chunk must be an int >= 1"):
        xb.materialize(make_bgen(), str(tmp_path / "b"), batches_per_chunk=0)
    (tmp_path / "c").mkdir()
    import zarr

    zarr.open_group(str(tmp_path / "c"), mode="w")
    with pytest.raises(StateError, match="is not a store written by"):
        xb.open_materialized(str(tmp_path / "c"))


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    within=st.booleans(),
    bpc=st.integers(1, 3),
)
def test_reader_visits_every_sample_once_in_a_new_order_each_epoch(
    tmp_path_factory: pytest.TempPathFactory, seed: int, within: bool, bpc: int
) -> None:
    url = str(_store(tmp_path_factory, bpc))
    reader = xb.open_materialized(url, seed=seed, within_chunk=within)
    ds = reader.dataset()
    rows = ds["a"].values
    orders = []
    for epoch in range(3):
        got = np.concatenate([b["a"] for b in reader])
        assert reader.epoch == epoch + 1
        order = reader.sample_order(epoch)
        assert sorted(order.tolist()) == list(range(rows.shape[0]))  # once each
        np.testing.assert_array_equal(got, rows[order])
        orders.append(order.tolist())
    assert orders[0] != orders[1] or orders[1] != orders[2]
    reader.set_epoch(1)
    np.testing.assert_array_equal(
        reader[0]["a"], rows[orders[1][:5]][: len(reader[0]["a"])]
    )


_STORES: dict[int, Path] = {}


def _store(factory: pytest.TempPathFactory, bpc: int) -> Path:
    if bpc not in _STORES:
        path = factory.mktemp("m") / "m.zarr"
        xb.materialize(
            make_bgen(n=40), str(path), batches_per_chunk=bpc, progress=False
        )
        _STORES[bpc] = path
    return _STORES[bpc]


@pytest.mark.parametrize("kill", ["one", "all"])
def test_on_a_cluster_with_workers_killed_equals_a_clean_run(
    tmp_path: Path, dask_client: Any, kill: str
) -> None:
    """One worker killed: its tasks run again elsewhere. Every worker killed: the
    scattered plan and engine are lost with them and sent again."""
    clean = tmp_path / "clean.zarr"
    xb.materialize(make_bgen(), str(clean), progress=False)
    url = tmp_path / "cluster.zarr"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            xb.materialize(
                make_bgen(),
                str(url),
                client=dask_client,
                transform=Slow(),
                progress=False,
            )
        except BaseException as err:  # re-raised by the assert below
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    import zarr

    while time.monotonic() < deadline:  # wait for a few chunks, then kill
        try:
            done = zarr.open_group(str(url), mode="r")["_done"][:]
            if done.sum() >= 2:
                break
        except Exception:  # the store is not created yet
            pass
        time.sleep(0.05)
    pids = sorted(set(dask_client.run(os.getpid).values()))
    assert thread.is_alive()  # mid-run: chunks still to write
    for pid in pids if kill == "all" else pids[:1]:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not errors, errors
    assert store_files(url) == store_files(clean)
    dask_client.wait_for_workers(2, timeout=120)


def test_on_s3(s3_endpoint: dict[str, Any]) -> None:
    url = "s3://xbatcher-test/materialized.zarr"
    store = xb.materialize(
        make_bgen(),
        url,
        storage_options=s3_endpoint,
        batches_per_chunk=3,
        progress=False,
    )
    assert_batches_equal(list(store), list(make_bgen().arrays))
    again = xb.open_materialized(url, seed=1, storage_options=s3_endpoint)
    rows = np.concatenate([b["a"] for b in store])
    got = np.concatenate([b["a"] for b in again])
    np.testing.assert_array_equal(got, rows[again.sample_order(0)])


class ToPair:
    """Inputs and targets of one Dataset batch, as a tuple (as a loader gives)."""

    def __call__(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        return {"a": batch["a"]}, batch["b"]


def test_a_tuple_of_inputs_and_targets_comes_back_as_it_went_in(
    tmp_path: Path,
) -> None:
    store = xb.materialize(
        make_bgen(), str(tmp_path / "m.zarr"), transform=ToPair(), progress=False
    )
    want = [ToPair()(b) for b in make_bgen().arrays]
    got = list(store)
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert list(gx) == ["a"]
        np.testing.assert_array_equal(gx["a"], wx["a"])
        np.testing.assert_array_equal(gy, wy)
        assert gy.dtype == wy.dtype
