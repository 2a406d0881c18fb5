"""The PyTorch loaders with real DataLoader workers, DDP ranks and StatefulDataLoader.

Data: ``x(n, f) = 10 n + f`` and ``y(n) = n``, so a batch's ``y`` names its samples
and its ``x`` can be checked against ``ds.isel(n=y)``. Worker tests are few and small
(the CI machine has 2 cores).
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import SchemaError, StateError, StateTypeError

torch = pytest.importorskip("torch")
from xbatcher.loaders.torch import (  # noqa: E402
    DevicePrefetcher,
    IterableDataset,
    MapDataset,
)

N, F, B = 60, 3, 7  # samples, features, batch size: 9 batches, the last one of 4


def _ds(n: int = N, dtype: str = "float64") -> xr.Dataset:
    values = (10 * np.arange(n)[:, None] + np.arange(F)[None, :]).astype(dtype)
    return xr.Dataset(
        {"x": (("n", "f"), values), "y": ("n", np.arange(n, dtype="int64"))}
    )


def _gen(ds: xr.Dataset | None = None, **kw: Any) -> xb.BatchGenerator:
    kw.setdefault("batch_size", B)
    kw.setdefault("shuffle", True)
    if kw["shuffle"]:
        kw.setdefault("seed", 11)
    return xb.BatchGenerator(_ds() if ds is None else ds, {"f": F}, **kw)


def _check(ds: xr.Dataset, x: Any, y: Any) -> list[int]:
    """``x`` is ``ds.isel(n=y)`` and ``y`` the sample ids; returns them."""
    ids = y.numpy().tolist()
    np.testing.assert_array_equal(x.numpy(), ds["x"].isel(n=ids).values)
    return ids


def _epoch_ids(loader: Any, ds: xr.Dataset) -> list[list[int]]:
    return [_check(ds, x, y) for x, y in loader]


def _flat(batches: list[list[int]]) -> list[int]:
    return list(itertools.chain.from_iterable(batches))


def _loader(dataset: Any, workers: int = 0, **kw: Any) -> Any:
    if workers:
        kw.setdefault("multiprocessing_context", "fork")
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, **kw
    )


# ----------------------------------------------------------------------- values
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(epoch=st.integers(0, 4), shuffle=st.booleans(), chunked=st.booleans())
def test_items_are_isel_of_their_samples(
    epoch: int, shuffle: bool, chunked: bool
) -> None:
    ds = _ds()
    bgen = _gen(ds.chunk(n=16) if chunked else ds, shuffle=shuffle)
    mapped = MapDataset(bgen, inputs="x", targets="y")
    mapped.set_epoch(epoch)
    iterable = IterableDataset(bgen, inputs="x", targets="y")
    iterable.set_epoch(epoch)
    got = list(iterable)
    assert len(got) == len(mapped) == len(bgen) == 9
    for i, (x, y) in enumerate(got):
        units = bgen.plan.batch_units(epoch, i, i + 1)[0].tolist()
        assert _check(ds, x, y) == units
        xm, ym = mapped[i]
        assert torch.equal(xm, x) and torch.equal(ym, y)


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(
        [
            "float16",
            "float32",
            "float64",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "bool",
            ">f4",
            "<i8",
        ]
    )
)
def test_dtypes_and_values_round_trip(dtype: str) -> None:
    ds = _ds(dtype=dtype)
    x, _ = MapDataset(_gen(ds, shuffle=False), inputs="x", targets="y")[1]
    want = ds["x"].values[B : 2 * B]
    assert x.dtype == torch.from_numpy(want.astype(want.dtype.newbyteorder("="))).dtype
    np.testing.assert_array_equal(x.numpy(), want)


def test_tensors_wrap_the_read_arrays_without_a_copy(monkeypatch: Any) -> None:
    seen: list[tuple[int, int]] = []
    real = torch.from_numpy

    def spy(array: np.ndarray) -> Any:
        tensor = real(array)
        seen.append((array.ctypes.data, tensor.data_ptr()))
        return tensor

    monkeypatch.setattr(torch, "from_numpy", spy)
    x, y = MapDataset(_gen(), inputs="x", targets="y")[0]
    assert len(seen) == 2 and all(a == t for a, t in seen)
    assert [t for _, t in seen] == [x.data_ptr(), y.data_ptr()]


def test_as_dict_stacked_inputs_and_tensor_transforms() -> None:
    ds = _ds()
    ds["z"] = -ds["x"]
    bgen = _gen(ds, shuffle=False)
    d = MapDataset(bgen, inputs=["x", "z"], targets="y", as_dict=True)[0]
    assert list(d) == ["x", "z", "y"] and all(torch.is_tensor(v) for v in d.values())
    x, y = MapDataset(
        bgen,
        inputs=["x", "z"],
        targets="y",
        transform=lambda t: t * 2,
        transform_on="tensors",
    )[0]
    assert x.shape == (B, 2, F)  # (batch, channel, feature)
    np.testing.assert_array_equal(x[:, 1].numpy(), -2 * ds["x"].values[:B])
    np.testing.assert_array_equal(y.numpy(), np.arange(B))
    xi = next(iter(IterableDataset(bgen, inputs=["x", "z"], channel_axis=-1)))
    assert xi.shape == (B, F, 2)


# ----------------------------------------------------------------------- workers
@pytest.mark.parametrize(
    ("context", "persistent"), [("fork", True), ("spawn", True), ("fork", False)]
)
def test_workers_give_the_one_process_batches_and_a_new_order_each_epoch(
    context: str, persistent: bool, tmp_path: Path
) -> None:
    """Spawned workers get a Zarr-backed dataset: its engine travels as the store's
    path and reopens it in the worker."""
    ds = _ds()
    data = ds
    if context == "spawn":
        ds.to_zarr(tmp_path / "data.zarr", consolidated=False)
        data = xr.open_dataset(tmp_path / "data.zarr", engine="zarr", chunks=None)
    one = IterableDataset(_gen(data), inputs="x", targets="y")
    expected = [_epoch_ids(_loader(one), ds) for _ in range(2)]
    dataset = IterableDataset(_gen(data), inputs="x", targets="y")
    loader = _loader(
        dataset, 2, multiprocessing_context=context, persistent_workers=persistent
    )
    got = [_epoch_ids(loader, ds) for _ in range(2)]
    assert got == expected  # batch for batch, in the same order
    for epoch in got:  # every sample exactly once per epoch
        assert sorted(_flat(epoch)) == list(range(N))
    assert got[0] != got[1]
    assert dataset.epoch == 2


def test_set_epoch_reaches_persistent_workers_of_a_map_dataset() -> None:
    ds = _ds()
    bgen = _gen()
    dataset = MapDataset(bgen, inputs="x", targets="y")
    loader = _loader(dataset, 2, persistent_workers=True)
    for epoch in (3, 1):
        dataset.set_epoch(epoch)
        ids = _epoch_ids(loader, ds)
        assert ids == [u.tolist() for u in bgen.plan.batch_units(epoch, 0, 9)]


def _explode(x: Any) -> Any:
    raise ValueError("bad batch from the transform")


def test_a_worker_error_reaches_the_main_process_with_its_traceback() -> None:
    dataset = IterableDataset(
        _gen(), inputs="x", transform=_explode, transform_on="tensors"
    )
    with pytest.raises(ValueError, match="DataLoader worker process") as info:
        next(iter(_loader(dataset, 2)))
    message = str(info.value)
    assert "bad batch from the transform" in message
    assert "_explode" in message and "Traceback" in message


def test_pin_memory_and_the_cpu_prefetcher_keep_values() -> None:
    ds = _ds()
    dataset = IterableDataset(_gen(), inputs="x", targets="y")
    with warnings.catch_warnings():  # no accelerator to pin for: torch says so
        warnings.simplefilter("ignore", UserWarning)
        loader = _loader(dataset, pin_memory=True)
        got = _epoch_ids(DevicePrefetcher(loader, "cpu"), ds)
    assert sorted(_flat(got)) == list(range(N))
    batch = (torch.zeros(2), {"a": torch.ones(1)})
    (same,) = DevicePrefetcher([batch], "cpu")
    assert same[0] is batch[0] and same[1]["a"] is batch[1]["a"]  # no copy on CPU


# ----------------------------------------------------------------------- resume
def _stateful(dataset: Any, workers: int) -> Any:
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )


def _train(loader: Any, steps: int) -> tuple[list[list[int]], dict[str, Any]]:
    """``steps`` batches over as many epochs as needed; the state after them."""
    ids: list[list[int]] = []
    while len(ids) < steps:
        for _, y in loader:
            ids.append(y.tolist())
            if len(ids) == steps:
                return ids, loader.state_dict()
    return ids, loader.state_dict()


def _resume_case(workers: int, stop: int, total: int = 2 * 9) -> None:
    full, _ = _train(
        _stateful(IterableDataset(_gen(), inputs="x", targets="y"), workers), total
    )
    head, state = _train(
        _stateful(IterableDataset(_gen(), inputs="x", targets="y"), workers), stop
    )
    state = json.loads(json.dumps(state))  # a checkpoint on disk
    loader = _stateful(IterableDataset(_gen(), inputs="x", targets="y"), workers)
    loader.load_state_dict(state)
    tail, _ = _train(loader, total - stop)
    assert head + tail == full


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop=st.integers(1, 17))
def test_stateful_resume_equals_uninterrupted_in_one_process(stop: int) -> None:
    _resume_case(0, stop)


@pytest.mark.parametrize("stop", [5, 12])
def test_stateful_resume_equals_uninterrupted_with_two_workers(stop: int) -> None:
    _resume_case(2, stop)


def test_plain_dataloader_resumes_from_a_step_count() -> None:
    ds = _ds()
    full = _epoch_ids(_loader(IterableDataset(_gen(), inputs="x", targets="y"), 2), ds)
    dataset = IterableDataset(_gen(), inputs="x", targets="y")
    dataset.set_epoch(0, position=4)  # 4 steps were trained before the crash
    assert _epoch_ids(_loader(dataset, 2), ds) == full[4:]


def test_resume_state_mismatch_is_refused() -> None:
    dataset = IterableDataset(_gen(), inputs="x", targets="y")
    state = dataset.state_dict()
    assert state == {"epoch": 0, "position": 0, "num_batches": 9, "seed": 11}
    other = IterableDataset(_gen(seed=12), inputs="x", targets="y")
    with pytest.raises(
        StateError, match=r"seed=11 \(checkpoint\).*seed=12 \(current\)"
    ):
        other.load_state_dict(state)
    with pytest.raises(StateError, match=r"num_batches=9 \(checkpoint\).*has 5"):
        IterableDataset(_gen(batch_size=12), inputs="x").load_state_dict(state)
    with pytest.raises(
        StateTypeError, match=r"state\['epoch'\] must be an int >= 0; got -1"
    ):
        dataset.load_state_dict({**state, "epoch": -1})
    with pytest.raises(StateError, match=r"lacks \['seed'\]"):
        dataset.load_state_dict({"epoch": 0, "position": 0, "num_batches": 9})
    with pytest.raises(
        SchemaError, match=r"position must be an int in 0 \.\. 9.*got 10"
    ):
        dataset.set_epoch(0, position=10)
    with pytest.raises(SchemaError, match=r"rank must be an int in \[0, 2\).*got 2"):
        IterableDataset(_gen(), inputs="x", rank=2, world_size=2)
    with pytest.raises(SchemaError, match=r"both rank= and world_size= or neither"):
        IterableDataset(_gen(), inputs="x", rank=1)
    with pytest.raises(
        SchemaError, match=r"transform_on must be 'xarray'.*got 'numpy'"
    ):
        IterableDataset(_gen(), inputs="x", transform_on="numpy")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- DDP
def _ddp_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dataset = IterableDataset(_gen(), inputs="x", targets="y")  # ranks read here
        loader = _loader(dataset, 2)
        ds = _ds()
        epochs = [_epoch_ids(loader, ds) for _ in range(2)]
        Path(out, f"{rank}.json").write_text(json.dumps(epochs))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_cover_every_sample_exactly_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_rank, args=(2, port, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        per_rank = [_flat(ranks[r][epoch]) for r in range(2)]
        assert len(per_rank[0]) == len(per_rank[1]) == N // 2  # equal: no DDP hang
        assert sorted(per_rank[0] + per_rank[1]) == list(range(N))
        bgen = _gen()
        for r in range(2):  # rank r's share of the generator's shard
            units = bgen.shard(r, 2).plan.batch_units(epoch, 0, len(ranks[r][epoch]))
            assert ranks[r][epoch] == [u.tolist() for u in units]
    assert ranks[0][0] != ranks[0][1]


# ----------------------------------------------------------------------- training
def test_a_small_model_trains_and_its_loss_decreases() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(256, 4)).astype("float32")
    ds = xr.Dataset(
        {
            "x": (("n", "f"), inputs),
            "y": ("n", (inputs @ np.array([1.0, -2.0, 0.5, 3.0])).astype("float32")),
        }
    )
    bgen = xb.BatchGenerator(ds, {"f": 4}, batch_size=32, shuffle=True, seed=0)
    loader = _loader(IterableDataset(bgen, inputs="x", targets="y"))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.1 * np.mean(losses[:4])


def test_04_signature_with_persistent_workers_reshuffles_each_epoch() -> None:
    """The trap of issue 14: 0.4's ``IterableDataset(X, y)`` with persistent workers
    repeated epoch 0's order forever (``set_epoch`` never reached the workers)."""
    ds = _ds()
    x_gen = _gen(ds[["x"]])
    y_gen = xb.BatchGenerator(ds[["y"]], {}, batch_size=B, shuffle=True, seed=11)
    loader = _loader(IterableDataset(x_gen, y_gen), 2, persistent_workers=True)
    orders = [_epoch_ids(loader, ds) for _ in range(3)]
    for epoch, ids in enumerate(orders):
        assert ids == [u.tolist() for u in x_gen.plan.batch_units(epoch, 0, 9)]
    assert orders[0] != orders[1] != orders[2]


def test_device_prefetcher_copies_ahead_on_a_side_stream(monkeypatch: Any) -> None:
    """The CUDA path's order of events, with the CUDA calls replaced by recorders
    (no GPU here): batch k + 1 is copied on the side stream before batch k is
    yielded, and the current stream waits for the copy and records each batch."""
    from xbatcher.loaders import _torch_device as dev

    events: list[tuple[Any, ...]] = []
    where = {"stream": "current"}

    class Stream:
        def __init__(self, name: str) -> None:
            self.name = name

        def wait_stream(self, other: Stream) -> None:
            events.append(("wait", self.name, other.name))

    class Use:
        def __init__(self, stream: Stream) -> None:
            self.stream = stream

        def __enter__(self) -> None:
            where["stream"] = self.stream.name

        def __exit__(self, *exc: Any) -> None:
            where["stream"] = "current"

    current = Stream("current")
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: Stream("side"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: current)
    monkeypatch.setattr(torch.cuda, "stream", Use)
    monkeypatch.setattr(
        dev,
        "move_to",
        lambda b, device, nb: events.append(("copy", b, where["stream"], nb)) or b,
    )
    monkeypatch.setattr(
        dev, "_record", lambda b, s: events.append(("record", b, s.name))
    )
    for b in dev.DevicePrefetcher([0, 1], "cuda"):
        events.append(("yield", b))
    assert events == [
        ("copy", 0, "side", True),
        ("wait", "current", "side"),
        ("record", 0, "current"),
        ("copy", 1, "side", True),
        ("yield", 0),
        ("wait", "current", "side"),
        ("record", 1, "current"),
        ("yield", 1),
    ]


def test_map_dataset_resumes_through_a_stateful_loader_with_workers() -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader(epoch: int | None = None) -> Any:
        dataset = MapDataset(_gen(), inputs="x", targets="y")
        if epoch is not None:
            dataset.set_epoch(epoch)
        return StatefulDataLoader(
            dataset,
            batch_size=None,
            num_workers=2,
            multiprocessing_context="fork",
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )

    full = [y.tolist() for _, y in loader(epoch=1)]
    first = loader(epoch=1)
    batches = iter(first)
    head = [next(batches)[1].tolist() for _ in range(4)]
    state = first.state_dict()
    resumed = loader()  # a fresh process: the epoch comes from the checkpoint
    resumed.load_state_dict(state)
    assert head + [y.tolist() for _, y in resumed] == full


# ------------------------------------------------------ windows= (forecast pairs)
def test_forecast_pairs_through_two_workers_every_sample_once_shuffled() -> None:
    """A windows= generator in a DataLoader with 2 workers: (x, y) are the roles "x"
    / "y" (values from ds.isel at each role's offsets), every sample once per
    epoch, a new order each epoch."""
    from test_pairs import _fc_gen, check_forecast_epoch
    from test_targets import forecast, make_ds

    ds = make_ds()
    dataset = IterableDataset(_fc_gen(ds, shuffle=True, seed=1))
    loader = _loader(dataset, 2, persistent_workers=True)
    orders = []
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in loader]
        assert all(x.shape[1:] == (3, 4, 3, 4) for x, _ in batches)
        orders.append(check_forecast_epoch(batches, ds, forecast()))
    assert orders[0] != orders[1]
    mapped = MapDataset(_fc_gen(ds), inputs={"x": ["u10"]}, targets={"y": "t2m"})
    batches = [(x.numpy(), y.numpy()) for x, y in _loader(mapped, 2)]
    check_forecast_epoch(batches, ds, forecast(), ["u10"], "t2m")
