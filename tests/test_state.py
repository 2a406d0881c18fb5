"""Iteration state: one cursor per iterator, epochs, checkpoints and their checks."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import StateError, StateTypeError, XbatcherError


def make_da(nt: int = 3, ny: int = 8, nx: int = 7) -> xr.DataArray:
    """Values encode their own position, so a window identifies itself."""
    values = np.arange(nt * ny * nx, dtype=np.float64).reshape(nt, ny, nx)
    return xr.DataArray(values, dims=("time", "y", "x"), name="v")


def make_gen(
    backend: str = "numpy", seed: int = 3, batch_size: int = 4, **kw: Any
) -> xb.BatchGenerator:
    da = make_da()
    if backend == "dask":
        da = da.chunk(time=1, y=4)
    return xb.BatchGenerator(
        da, {"y": 3, "x": 3}, batch_size=batch_size, shuffle=True, seed=seed, **kw
    )


def one_epoch(backend: str, seed: int, batch_size: int, epoch: int = 0) -> list[Any]:
    """What one uninterrupted iteration of ``epoch`` yields, from a fresh generator."""
    g = make_gen(backend, seed, batch_size)
    g.set_epoch(epoch)
    return list(g.arrays)


def assert_same_batches(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- cursors
@settings(max_examples=30, deadline=None)
@given(
    backend=st.sampled_from(["numpy", "dask"]),
    seed=st.integers(0, 2**31),
    batch_size=st.integers(1, 9),
    schedule=st.lists(st.booleans(), max_size=80),
    view=st.sampled_from(["arrays", "xarray", "mixed"]),
)
def test_interleaved_iterators_each_see_one_whole_epoch(
    backend: str, seed: int, batch_size: int, schedule: list[bool], view: str
) -> None:
    """Two iterators over one shuffled generator, advanced in any interleaving: each
    yields exactly the batches of one uninterrupted epoch, and the epoch advances
    once."""
    want = one_epoch(backend, seed, batch_size)
    g = make_gen(backend, seed, batch_size)

    def values(it: Any) -> Any:
        return (np.asarray(b) for b in it)

    iters = [
        values(iter(g.arrays) if view != "xarray" else iter(g)),
        values(iter(g) if view != "arrays" else iter(g.arrays)),
    ]
    seen: list[list[Any]] = [[], []]
    done = [False, False]
    for pick in [*schedule, *([False] * len(want)), *([True] * len(want))]:
        k = int(pick)
        if done[k]:
            continue
        try:
            seen[k].append(next(iters[k]))
        except StopIteration:
            done[k] = True
    for k in range(2):
        for _ in iters[k]:
            raise AssertionError("an iterator yielded more than one epoch")
        assert_same_batches(seen[k], want)
    assert g.epoch == 1  # both finished epoch 0: the generator moves on once


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_two_threads_iterating_one_generator(backend: str) -> None:
    want = one_epoch(backend, 5, 3)
    g = make_gen(backend, 5, 3)
    results: dict[int, list[Any]] = {}
    start = threading.Barrier(2)
    # made together, so both follow epoch 0 (an iterator made after another one
    # finished would follow the next epoch); consumed at the same time
    iters = [iter(g), iter(g.arrays)]

    def run(k: int) -> None:
        start.wait()
        results[k] = [np.asarray(b) for b in iters[k]]

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    for k in (0, 1):
        assert_same_batches(results[k], want)
    assert g.epoch == 1


def test_shard_and_parent_share_no_cursor() -> None:
    g = make_gen("dask", 11, 2)
    shard = g.shard(1, 2)
    want_parent = one_epoch("dask", 11, 2)
    want_shard = list(make_gen("dask", 11, 2).shard(1, 2).arrays)
    it_parent, it_shard = iter(g.arrays), iter(shard.arrays)
    got_parent, got_shard = [next(it_parent)], []
    got_shard.extend(it_shard)  # the shard finishes its epoch first
    got_parent.extend(it_parent)
    assert_same_batches(got_parent, want_parent)
    assert_same_batches(got_shard, want_shard)
    assert (g.epoch, shard.epoch) == (1, 1)
    # and the shard's next epoch is the shard of the parent's next epoch
    fresh = make_gen("dask", 11, 2)
    fresh.set_epoch(1)
    assert_same_batches(list(shard.arrays), list(fresh.shard(1, 2).arrays))


def test_nested_iterations_over_one_generator() -> None:
    want = one_epoch("numpy", 2, 5)
    g = make_gen("numpy", 2, 5)
    pairs = [(a, b) for a in g.arrays for b in g.arrays]
    n = len(want)
    assert len(pairs) == n * n
    for i in range(n):
        # the outer loop keeps its epoch (0) while inner loops come and go...
        np.testing.assert_array_equal(pairs[i * n][0], want[i])
        # ...and each inner loop, started after the previous one finished its
        # epoch, follows the next epoch, as a plain loop run again would
        inner = [p[1] for p in pairs[i * n : (i + 1) * n]]
        assert_same_batches(inner, one_epoch("numpy", 2, 5, epoch=i))
    assert g.epoch == n


def test_state_dict_describes_the_most_recent_iterator() -> None:
    g = make_gen()
    first = iter(g.arrays)
    for _ in range(3):
        next(first)
    assert (g.state_dict()["epoch"], g.state_dict()["position"]) == (0, 3)
    second = iter(g.arrays)
    next(second)
    assert (g.state_dict()["epoch"], g.state_dict()["position"]) == (0, 1)
    list(first)  # the older iterator ends its epoch: the generator moves on...
    assert g.epoch == 1
    # ...but the state is still the running iteration's, which resumes exactly
    state = g.state_dict()
    assert (state["epoch"], state["position"]) == (0, 1)
    resumed = make_gen()
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed.arrays), list(second))
    assert g.epoch == 1 and g.state_dict()["position"] == 0


# --------------------------------------------------------------------------- resume
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch_size=st.integers(1, 9),
    n_epochs=st.integers(1, 3),
    crash_at=st.integers(1, 60),
)
def test_natural_resume_loop_replays_nothing(
    seed: int, batch_size: int, n_epochs: int, crash_at: int
) -> None:
    """The loop of docs/training.md, killed after any step and restarted from its
    last checkpoint, trains on exactly the batches of a run that never stopped."""

    def train(g: xb.BatchGenerator, stop: int | None) -> tuple[list[Any], Any]:
        steps, ckpt = [], None
        for epoch in range(g.epoch, n_epochs):
            g.set_epoch(epoch)
            for batch in g.arrays:
                steps.append(batch)
                ckpt = json.dumps(g.state_dict())
                if len(steps) == stop:
                    return steps, ckpt
        return steps, ckpt

    full, _ = train(make_gen(seed=seed, batch_size=batch_size), None)
    crashed, ckpt = train(make_gen(seed=seed, batch_size=batch_size), crash_at)
    g = make_gen(seed=seed, batch_size=batch_size)
    if ckpt is not None:
        g.load_state_dict(json.loads(ckpt))
    resumed, _ = train(g, None) if len(crashed) < len(full) else ([], None)
    assert_same_batches(crashed + resumed, full)


def test_set_epoch_keeps_the_restored_position_only_for_the_restored_epoch() -> None:
    g = make_gen()
    it = iter(g.arrays)
    next(it), next(it)
    state = g.state_dict()
    want = one_epoch("numpy", 3, 4)
    a = make_gen()
    a.load_state_dict(state)
    a.set_epoch(0)  # the restored epoch: resume where the checkpoint stopped
    assert_same_batches(list(a.arrays), want[2:])
    b = make_gen()
    b.load_state_dict(state)
    b.set_epoch(1)  # another epoch: from its start
    assert_same_batches(list(b.arrays), one_epoch("numpy", 3, 4, epoch=1))
    c = make_gen()
    it = iter(c.arrays)
    next(it)
    c.set_epoch(0)  # no checkpoint restored: the epoch starts over
    assert_same_batches(list(c.arrays), want)


# --------------------------------------------------------------------------- checks
def _current(g: xb.BatchGenerator) -> dict[str, Any]:
    return g.state_dict()


BAD_STATES: list[tuple[str, Any, type[Exception], str]] = [
    # (case, how to change a good state, error type, message pattern)
    ("path", "state.json", StateTypeError, r"got 'state.json' of type str.*json\.load"),
    ("none", None, StateTypeError, r"got None of type NoneType"),
    ("list", [1, 2], StateTypeError, r"got \[1, 2\] of type list"),
    ("version", {"version": 2}, StateError, r"checkpoint 2, .*reads version 1"),
    ("version-str", {"version": "1"}, StateError, r"checkpoint '1'"),
    ("epoch-neg", {"epoch": -3}, StateError, r"checkpoint value -3, current epoch 0"),
    (
        "epoch-float",
        {"epoch": 2.7},
        StateTypeError,
        r"state\['epoch'\].*checkpoint value 2.7 \(type float\), current value 0",
    ),
    ("epoch-str", {"epoch": "1"}, StateTypeError, r"checkpoint value '1'"),
    ("epoch-bool", {"epoch": True}, StateTypeError, r"checkpoint value True"),
    (
        "position-str",
        {"position": "abc"},
        StateTypeError,
        r"state\['position'\].*checkpoint value 'abc' \(type str\), current value 0",
    ),
    ("position-float", {"position": 1.0}, StateTypeError, r"checkpoint value 1.0"),
    (
        "position-neg",
        {"position": -1},
        StateError,
        r"must lie in 0\.\.\d+ .*checkpoint value -1, current position 0",
    ),
    ("position-big", {"position": 10**6}, StateError, r"checkpoint value 1000000"),
    ("seed", {"seed": 4}, StateError, r"checkpoint 4, current 3.*seed=4"),
    (
        "seed-str",
        {"seed": "3"},
        StateTypeError,
        r"checkpoint value '3', current seed 3",
    ),
    ("shard", {"shard": [0, 2, "pad"]}, StateError, r"shard \[0, 2, 'pad'\].*None"),
    ("shard-str", {"shard": "0/2"}, StateTypeError, r"checkpoint value '0/2'"),
    ("fingerprint", {"fingerprint": "x"}, StateError, r"checkpoint fingerprint 'x'"),
]


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [case[1:] for case in BAD_STATES],
    ids=[case[0] for case in BAD_STATES],
)
def test_bad_state_is_refused_with_both_values(
    change: Any, error: type[Exception], pattern: str
) -> None:
    g = make_gen()
    good = g.state_dict()
    state = {**good, **change} if isinstance(change, dict) else change
    with pytest.raises(error, match=pattern) as exc:
        g.load_state_dict(state)
    assert isinstance(exc.value, XbatcherError)
    # a value of the wrong type is a TypeError, any other mismatch a ValueError
    assert isinstance(exc.value, TypeError) == (error is StateTypeError)
    assert isinstance(exc.value, StateError)
    assert g.state_dict() == good  # nothing changed


@pytest.mark.parametrize(
    "key", ["version", "fingerprint", "seed", "epoch", "position", "shard"]
)
def test_state_missing_a_key(key: str) -> None:
    g = make_gen()
    state = g.state_dict()
    del state[key]
    with pytest.raises(StateError, match=rf"lacks the keys \['{key}'\]"):
        g.load_state_dict(state)


def test_numpy_ints_in_a_state_are_fine() -> None:
    g = make_gen()
    state = {**g.state_dict(), "epoch": np.int64(2), "position": np.int32(1)}
    g.load_state_dict(state)
    assert g.state_dict()["epoch"] == 2 and g.state_dict()["position"] == 1


def test_set_epoch_rejects_wrong_types_and_negative_epochs() -> None:
    g = make_gen()
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError, match=re.escape(repr(bad))):
            g.set_epoch(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0; got -1"):
        g.set_epoch(-1)
    g.set_epoch(np.int64(2))
    assert g.epoch == 2 and type(g.epoch) is int
