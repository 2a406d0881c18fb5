"""Batches produced on a real Dask LocalCluster (2 worker processes)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import cloudpickle
import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
from conftest import assert_batches_equal
from xbatcher.distributed import DaskBatches, get_client
from xbatcher.errors import InputTypeError, SchemaError

pytest.importorskip("distributed")
# the workers unpickle this module's helpers by value (the tests folder is not on
# their path)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_bgen(**kw: Any) -> xb.BatchGenerator:
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "a": (("time", "x"), rng.random((20, 30))),
            "b": (("time", "x"), rng.integers(0, 9, (20, 30)).astype(np.int32)),
        }
    ).chunk(time=5)
    return xb.BatchGenerator(ds, {"x": 6}, batch_size=7, **kw)


class Slow:
    """A transform that takes a while (so tasks are in flight when a worker dies)
    and tags each batch with the pid of the process that made it."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return {**batch, "pid": np.array(os.getpid())}


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_equal_local_in_order(dask_client: Any, shuffle: bool) -> None:
    bgen = make_bgen(shuffle=shuffle, seed=3 if shuffle else None)
    local = list(bgen.arrays)
    local_next = list(bgen.arrays)  # epoch 1
    ref = make_bgen(shuffle=shuffle, seed=3 if shuffle else None)
    remote = DaskBatches(ref, dask_client, max_in_flight=3)
    assert len(remote) == len(ref)
    assert_batches_equal(list(remote), local)
    assert ref.epoch == 1  # the epoch moved on, as with bgen.arrays
    assert_batches_equal(list(remote), local_next)
    # random access: one task
    assert_batches_equal([remote[-1]], [ref.arrays[-1]])
    remote.close()


def test_payload_is_scattered_once(dask_client: Any) -> None:
    bgen = make_bgen()
    remote = DaskBatches(bgen, dask_client, max_in_flight=2)
    list(remote)
    first = remote._scattered
    list(remote)
    assert remote._scattered is first  # the same future: not sent again
    # each task's arguments hold the payload's future, not the engine itself
    task = remote.submit(0, 0)
    task.result()
    remote.close()


def test_resume_follows_the_generator_state(dask_client: Any) -> None:
    bgen = make_bgen(shuffle=True, seed=5)
    want = list(bgen.arrays)
    run = make_bgen(shuffle=True, seed=5)
    remote = DaskBatches(run, dask_client)
    it = iter(remote)
    head = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert state["position"] == 3
    resumed = make_bgen(shuffle=True, seed=5)
    resumed.load_state_dict(state)
    tail = list(DaskBatches(resumed, dask_client))
    assert_batches_equal(head + tail, want)
    it.close()  # abandoned: its pending tasks are released
    remote.close()


def test_transform_runs_on_the_workers(dask_client: Any) -> None:
    bgen = make_bgen()
    remote = DaskBatches(bgen, dask_client, transform=Slow())
    pids = {int(b["pid"]) for b in remote}
    assert os.getpid() not in pids
    assert pids <= set(dask_client.run(os.getpid).values())
    remote.close()


def test_worker_killed_mid_run_loses_and_duplicates_no_batch(
    dask_client: Any,
) -> None:
    bgen = make_bgen(shuffle=True, seed=11)
    want = list(bgen.arrays)
    run = make_bgen(shuffle=True, seed=11)
    remote = DaskBatches(run, dask_client, max_in_flight=6, transform=Slow())
    got: list[dict[str, Any]] = []
    pids = dask_client.run(os.getpid)
    victim = None
    for k, batch in enumerate(remote):
        got.append(batch)
        if k == 3:
            # kill the worker that made a batch still to come (tasks in flight)
            victim = int(batch["pid"])
            assert victim in pids.values()
            os.kill(victim, signal.SIGKILL)
    assert victim is not None
    assert_batches_equal(
        [{k: v for k, v in b.items() if k != "pid"} for b in got], want
    )
    made_by = [int(b["pid"]) for b in got]
    assert victim in made_by[:4]
    assert victim not in made_by[5 + remote.max_in_flight :]  # redone elsewhere
    remote.close()
    dask_client.wait_for_workers(2, timeout=120)


def test_client_argument_errors() -> None:
    with pytest.raises(InputTypeError, match=r"client must be a distributed\.Client"):
        get_client(42)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="max_in_flight must be an int >= 1"):
        DaskBatches(make_bgen(), "tcp://127.0.0.1:1", max_in_flight=0)
    with pytest.raises(InputTypeError, match="transform must be a callable"):
        DaskBatches(make_bgen(), "tcp://127.0.0.1:1", transform=3)  # type: ignore[arg-type]


def test_every_worker_killed_the_payload_is_sent_again(dask_client: Any) -> None:
    bgen = make_bgen(shuffle=True, seed=2)
    want = list(bgen.arrays)
    run = make_bgen(shuffle=True, seed=2)
    remote = DaskBatches(run, dask_client, max_in_flight=4, transform=Slow())
    got = []
    for k, batch in enumerate(remote):
        got.append(batch)
        if k == 1:  # both workers die: the scattered payload is lost with them
            first = remote._scattered
            for pid in set(dask_client.run(os.getpid).values()):
                os.kill(pid, signal.SIGKILL)
    assert remote._scattered is not first  # scattered again
    assert_batches_equal(
        [{k: v for k, v in b.items() if k != "pid"} for b in got], want
    )
    remote.close()
    dask_client.wait_for_workers(2, timeout=120)
