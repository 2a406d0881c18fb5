"""The dask graph walk (``xbatcher.sources._dask_graph``): a graph of reads, slices
and rechunks is a box of the array ``from_array`` wrapped; anything else is not."""

from __future__ import annotations

from typing import Any

import dask.array as dsa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbatcher.sources._dask_graph import read_view


class Backend:
    """An array-like that is not numpy (as xarray's lazy arrays are not): dask
    reads it with a ``getter`` task per chunk."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.ndim = values.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.values[key]


def _from(values: np.ndarray, chunks: Any) -> tuple[Backend, Any]:
    root = Backend(values)
    return root, dsa.from_array(root, chunks=chunks, meta=np.empty((0,) * values.ndim))


@st.composite
def chains(draw: Any) -> tuple[np.ndarray, Any, list[str]]:
    """A numpy array behind ``from_array``, then a chain of slices and rechunks."""
    shape = draw(st.tuples(*[st.integers(1, 9)] * draw(st.integers(1, 3))))
    values = np.arange(int(np.prod(shape))).reshape(shape)
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    root, array = _from(values, chunks)
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            index = []
            for n in array.shape:
                start = draw(st.integers(0, max(0, n - 1)))
                stop = draw(st.integers(start, n))
                index.append(slice(start, stop))
            array = array[tuple(index)]
            steps.append(f"[{index}]")
        else:
            new = tuple(draw(st.integers(1, 9)) for _ in array.shape)
            array = array.rechunk(new)
            steps.append(f"rechunk{new}")
    return root, array, steps


@settings(max_examples=80, deadline=None)
@given(chain=chains())
def test_slices_and_rechunks_are_a_box_of_the_root(chain):
    root, array, _ = chain
    view = read_view(array)
    if array.size == 0 and view is None:
        return  # dask may rebuild an empty array from scratch: nothing to read
    assert view is not None
    assert view.root is root
    box = tuple(slice(o, o + n) for o, n in zip(view.offsets, array.shape, strict=True))
    np.testing.assert_array_equal(root.values[box], array.compute())


COMPUTING = {
    "times 2": lambda a: a * 2,
    "astype": lambda a: a.astype("f8"),
    "map_blocks": lambda a: a.map_blocks(lambda x: x),
    "integer index": lambda a: a[1],
    "fancy index": lambda a: a[[0, 2]],
    "step": lambda a: a[::2],
    "reverse": lambda a: a[::-1],
    "new axis": lambda a: a[None],
    "transpose": lambda a: a.T,
    "concatenate": lambda a: dsa.concatenate([a, a]),
    "stack": lambda a: dsa.stack([a, a]),
    "two roots": lambda a: dsa.concatenate([a, _from(np.ones(a.shape), a.chunks)[1]]),
    "persisted": lambda a: a.persist(),
    "rechunk then double": lambda a: a.rechunk((2, 2)) * 2,
    "where": lambda a: dsa.where(a > 3, a, 0),
    "reversed concat of blocks": lambda a: dsa.concatenate([a[3:], a[:3]], axis=0),
}


@pytest.mark.parametrize("name", list(COMPUTING))
def test_graphs_that_compute_are_not_views(name):
    values = np.arange(6 * 5).reshape(6, 5)
    _, base = _from(values, (4, 2))
    assert read_view(base) is not None
    assert read_view(COMPUTING[name](base)) is None


def test_arrays_not_from_dask_are_not_views():
    assert read_view(np.zeros(3)) is None
    assert read_view(dsa.zeros((4, 4), chunks=2)) is None  # created, not read
    # dask cuts small numpy arrays into chunks at once: no getter to follow
    assert read_view(dsa.from_array(np.zeros((4, 4)), chunks=2)) is None
