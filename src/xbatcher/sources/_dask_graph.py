"""Which region of which object a dask array reads, when its graph only reads.

``dask.array.from_array(obj, chunks)`` builds a graph whose tasks call
``getter(obj, slices)`` per chunk; slicing (``x[a:b]``, xarray's ``isel``) adds
``getitem`` tasks and aliases, and ``rechunk`` adds ``getitem`` splits and
``concatenate`` merges. When every task of a graph is one of those, the array is
exactly ``obj[view]`` for one box ``view`` of ``obj``, and a reader that knows how to
read ``obj`` faster may read it instead (:mod:`xbatcher.sources._dask_zarr`).

:func:`read_view` answers that question by walking the graph symbolically: each task
is evaluated on boxes (offset and shape inside ``obj``) instead of data, so nothing is
read, and any task that is not one of those few (arithmetic, ``where``, ``astype``, a
user's ``map_blocks``, fancy indexing, a second source) makes the answer ``None``.
Dask's graph layout is private (``dask._task_spec``, ``Blockwise`` internals), so
:func:`views_work` checks once, on a graph of known shape, that the walk still gives
the right answers; if it does not, every dask array is read through dask (the safe
path).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["View", "read_view", "views_work"]


@dataclass(frozen=True)
class View:
    """A dask array that is ``root[offsets[0]:offsets[0] + shape[0], ...]``."""

    root: Any
    offsets: tuple[int, ...]


class _NotPlain(Exception):
    """The graph does something other than read, slice and rechunk."""


class _Box(NamedTuple):
    """The part of the root one task's result is: ``root[offsets + shape]`` (a named
    tuple: the walk makes one per task, and a tuple is the cheapest to make)."""

    offsets: tuple[int, ...]
    shape: tuple[int, ...]


class _Root:
    """Marks the root object while walking the graph."""


_ROOT = _Root()


def read_view(array: Any) -> View | None:
    """``View(root, offsets)`` when ``array`` (a dask array) is exactly a box of
    the object that ``from_array`` wrapped; ``None`` when its graph does anything
    else, or when this dask's graph layout is not the one :func:`views_work` knows."""
    if not views_work():
        return None
    return _read_view(array)


def _read_view(array: Any) -> View | None:
    try:
        return _walk(array)
    except _NotPlain:
        return None
    except Exception:  # a graph shaped in a way this module did not foresee
        return None


def _walk(array: Any) -> View:
    from dask.blockwise import Blockwise
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    graph = getattr(array, "dask", None)
    if not isinstance(graph, HighLevelGraph):
        raise _NotPlain
    blockwise = [n for n, layer in graph.layers.items() if isinstance(layer, Blockwise)]
    if len(blockwise) != 1:  # elementwise operations are Blockwise layers too
        raise _NotPlain
    base = blockwise[0]
    root, starts = _from_array_layer(graph, base)
    ndim = len(root.shape)
    if array.ndim != ndim:
        raise _NotPlain
    if array.name == base:  # from_array alone: its chunks tile the whole root
        chunks = tuple(tuple(b - a for a, b in itertools.pairwise(s)) for s in starts)
        if tuple(array.chunks) != chunks:
            raise _NotPlain
        return View(root, (0,) * ndim)
    tasks: dict[Any, Any] = {}
    for name, layer in graph.layers.items():
        if name == base:
            continue
        if not isinstance(layer, MaterializedLayer):
            raise _NotPlain
        tasks.update(layer.mapping)
    evaluate = _Evaluator(base, starts, root, tasks)
    offsets: tuple[int, ...] | None = None
    chunks = tuple(array.chunks)
    block_starts = [np.cumsum([0, *c]).tolist() for c in chunks]
    name = array.name
    axes = range(ndim)
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        box = evaluate.key((name, *idx))
        if not isinstance(box, _Box):
            raise _NotPlain
        box_offsets, box_shape = box
        for a in axes:
            i = idx[a]
            if box_shape[a] != chunks[a][i]:
                raise _NotPlain
        here = tuple([box_offsets[a] - block_starts[a][idx[a]] for a in axes])
        if offsets is not None and here != offsets:
            raise _NotPlain
        offsets = here
    if offsets is None:  # no blocks: an empty array reads nothing
        offsets = (0,) * ndim
    if any(
        o < 0 or o + n > m
        for o, n, m in zip(offsets, array.shape, root.shape, strict=True)
    ):
        raise _NotPlain
    return View(root, offsets)


_GETTERS = ("getter", "getter_nofancy", "getter_inline")


def _from_array_layer(graph: Any, name: str) -> tuple[Any, tuple[tuple[int, ...], ...]]:
    """The object a ``from_array`` layer wraps and its chunk starts per dim."""
    import dask.array.core as core
    from dask._task_spec import DataNode, Task, TaskRef
    from dask.blockwise import blockwise_token
    from dask.layers import ArraySliceDep

    layer = graph.layers[name]
    task = layer.task
    getters = {getattr(core, g) for g in _GETTERS}
    if not isinstance(task, Task) or task.func not in getters:
        raise _NotPlain
    if set(task.kwargs) - {"asarray", "lock"} or layer.concatenate or layer.new_axes:
        raise _NotPlain
    args = [a.key if isinstance(a, TaskRef) else a for a in task.args]
    tokens = [blockwise_token(0), blockwise_token(1)]  # type: ignore[no-untyped-call]
    if args != tokens or len(layer.indices) != 2:
        raise _NotPlain
    (source, source_index), (dep_name, dep_index) = layer.indices
    dep = layer.io_deps.get(dep_name)
    if source_index is not None or not isinstance(dep, ArraySliceDep):
        raise _NotPlain
    if tuple(dep_index) != tuple(layer.output_indices):
        raise _NotPlain
    if isinstance(source, TaskRef):
        held = graph.layers.get(source.key)
        if held is None or len(held) != 1:
            raise _NotPlain
        source = held[source.key]
    if isinstance(source, DataNode):
        source = source.value
    shape = tuple(int(n) for n in getattr(source, "shape", ()))
    if len(shape) != len(dep.chunks) or any(
        sum(c) != n for c, n in zip(dep.chunks, shape, strict=True)
    ):
        raise _NotPlain
    return source, tuple(tuple(int(s) for s in st) for st in dep.starts)


class _Evaluator:
    """Evaluates graph nodes on boxes of the root instead of data."""

    def __init__(
        self,
        base: str,
        starts: tuple[tuple[int, ...], ...],
        root: Any,
        tasks: Mapping[Any, Any],
    ) -> None:
        import dask.array.chunk as chunk
        import dask.array.core as core

        self.base = base
        self.starts = starts
        self.root = root
        self.tasks = tasks
        self.memo: dict[Any, Any] = {}
        self.funcs: dict[Callable[..., Any], Callable[..., Any]] = {
            operator.getitem: _getitem,
            chunk.getitem: _getitem,
            core.concatenate3: _concatenate,
            core.concatenate_shaped: _concatenate_shaped,
        }
        for g in _GETTERS:
            self.funcs[getattr(core, g)] = self._getter
        from dask._task_spec import Alias, DataNode, List, Task, TaskRef, Tuple

        self.types = (TaskRef, Alias, DataNode, List, Tuple, Task)

    def key(self, key: Any) -> Any:
        memo = self.memo
        if key in memo:
            return memo[key]
        if isinstance(key, tuple) and key and key[0] == self.base:
            starts = self.starts
            if len(key) != len(starts) + 1:
                raise _NotPlain
            idx = key[1:]
            lo = tuple([st[i] for st, i in zip(starts, idx, strict=True)])
            hi = [st[i + 1] for st, i in zip(starts, idx, strict=True)]
            # not memoised: as cheap to make again, and most are used once
            return _Box(lo, tuple([b - a for a, b in zip(lo, hi, strict=True)]))
        if key not in self.tasks:
            raise _NotPlain
        memo[key] = None  # a cycle reads as "not plain"
        out = self.node(self.tasks[key])
        memo[key] = out
        return out

    def node(self, node: Any) -> Any:
        task_ref, alias, data_node, list_node, tuple_node, task = self.types
        if node is self.root:
            return _ROOT
        if isinstance(node, task_ref):
            return self.key(node.key)
        if isinstance(node, alias):
            return self.key(node.target)
        if isinstance(node, data_node):
            return self.node(node.value)
        if isinstance(node, list_node | tuple_node):
            return [self.node(a) for a in node.args]
        if isinstance(node, task):
            func = self.funcs.get(node.func)
            if func is None:
                raise _NotPlain
            args = [self.node(a) for a in node.args]
            kwargs = {k: self.node(v) for k, v in node.kwargs.items()}
            return func(*args, **kwargs)
        if isinstance(node, list):
            return [self.node(a) for a in node]
        return node  # a plain value: an index, a shape

    def _getter(self, a: Any, b: Any, asarray: Any = True, lock: Any = None) -> _Box:
        if a is not _ROOT:
            raise _NotPlain
        full = _Box((0,) * len(self.root.shape), tuple(self.root.shape))
        return _getitem(full, b)


def _getitem(box: Any, index: Any) -> _Box:
    """A box sliced by a tuple of step-1 slices (anything else is not plain)."""
    if not isinstance(box, _Box):
        raise _NotPlain
    if not isinstance(index, tuple):
        index = (index,)
    if len(index) > len(box.shape) or not all(isinstance(k, slice) for k in index):
        raise _NotPlain  # integers drop dims, None adds them, arrays are fancy
    index = index + (slice(None),) * (len(box.shape) - len(index))
    offsets, shape = [], []
    for k, off, n in zip(index, box.offsets, box.shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            raise _NotPlain
        offsets.append(off + start)
        shape.append(max(0, stop - start))
    return _Box(tuple(offsets), tuple(shape))


def _concatenate_shaped(arrays: Any, shape: Any) -> _Box:
    shape = [int(s) for s in shape]
    flat = list(arrays)
    if not shape or len(flat) != math.prod(shape):
        raise _NotPlain
    return _tile(flat, shape)


def _concatenate(nested: Any) -> _Box:
    depth, inner = 0, nested
    while isinstance(inner, list):
        if not inner:
            raise _NotPlain
        depth, inner = depth + 1, inner[0]
    if depth == 0:
        raise _NotPlain
    flat: list[Any] = []

    def walk(x: Any, d: int) -> list[int]:
        if d == depth:
            flat.append(x)
            return []
        if not isinstance(x, list) or not x:
            raise _NotPlain
        sub = [walk(y, d + 1) for y in x]
        if any(s != sub[0] for s in sub):
            raise _NotPlain
        return [len(x), *sub[0]]

    shape = walk(nested, 0)
    return _tile(flat, shape)


def _tile(boxes: list[Any], shape: list[int]) -> _Box:
    """The box that a grid of boxes (``boxes`` in C order over a grid of ``shape``)
    tiles exactly."""
    if not all(isinstance(b, _Box) for b in boxes):
        raise _NotPlain
    ndim = len(boxes[0].shape)
    if len(shape) != ndim or any(len(b.shape) != ndim for b in boxes):
        raise _NotPlain  # concatenate3 over fewer dims than the blocks have
    first = boxes[0]
    step = [math.prod(shape[a + 1 :]) for a in range(ndim)]  # C-order strides
    sizes: list[list[int]] = []
    starts: list[list[int]] = []
    for axis in range(ndim):
        line = [boxes[i * step[axis]].shape[axis] for i in range(shape[axis])]
        sizes.append(line)
        starts.append(
            list(itertools.accumulate(line[:-1], initial=first.offsets[axis]))
        )
    axes = range(ndim)
    for box, idx in zip(boxes, itertools.product(*map(range, shape)), strict=True):
        offsets, box_shape = box
        for a in axes:
            i = idx[a]
            if offsets[a] != starts[a][i] or box_shape[a] != sizes[a][i]:
                raise _NotPlain
    return _Box(first.offsets, tuple(sum(line) for line in sizes))


class _ProbeArray:
    """An array-like that ``from_array`` wraps in :func:`views_work`; reading it
    is a bug (the walk must not read data)."""

    shape = (6, 5)
    dtype = np.dtype(np.float64)
    ndim = 2

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError("the dask graph probe must not read data")


@functools.cache
def views_work() -> bool:
    """Whether :func:`read_view` gives the known answers on graphs of known shape:
    ``from_array`` alone, behind a slice and a rechunk, and (``None``) behind
    arithmetic. Checked once; ``False`` sends every dask array through dask."""
    try:
        import dask.array as da

        probe = _ProbeArray()
        base = da.from_array(probe, chunks=(4, 2), meta=np.empty((0, 0)))  # type: ignore[no-untyped-call]
        cases = [
            (base, (0, 0)),
            (base[1:5, 2:], (1, 2)),
            (base[1:5, 2:].rechunk((3, 3)), (1, 2)),
            (base.rechunk((6, 5))[2:, :4], (2, 0)),
        ]
        for array, offsets in cases:
            view = _read_view(array)
            if view is None or view.root is not probe or view.offsets != offsets:
                return False
        return _read_view(base * 2) is None and _read_view(base[::2]) is None
    except Exception:  # dask changed beyond what the walk knows: take the safe path
        return False
