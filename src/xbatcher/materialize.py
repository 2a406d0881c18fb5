"""Shuffled materialisation: write a generator's sample stream once, read it fast.

:func:`materialize` writes the batches of one epoch of a generator, in its sampler's
order (so a shuffled generator gives a shuffled copy) and optionally through a
transform, to a Zarr v3 store (a local path or any fsspec URL such as ``s3://``).
Each variable (leaf of the batch) becomes one array ``(sample, ...)`` whose chunks
hold ``batches_per_chunk`` whole batches, so every chunk is written by one task with
no read-modify-write. Chunks are written in parallel: on a Dask ``distributed``
cluster when a client is given (the plan and engine are scattered once), else on
threads. After a chunk's arrays are written, a marker (``_done[k] = True``) records
it: a rerun skips the chunks marked done and rewrites the others (a chunk half
written when the run stopped is not marked, so it is written again). Tasks are pure,
so a chunk written twice (a worker lost after writing) holds the same bytes.

:func:`open_materialized` reads such a store back: every epoch visits the chunks in
a fresh random order (a permutation of the chunks from ``(seed, epoch)``; optionally
the samples inside each chunk too), each chunk read in one sequential read per
array, with the next chunks read ahead on a thread.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._validation import check_int, check_seed
from .distributed import Payload, get_client
from .engine import read_batches
from .errors import InputTypeError, SchemaError, StateError

if TYPE_CHECKING:
    from .generator import BatchGenerator

__all__ = ["MaterializedBatches", "materialize", "open_materialized"]

_FORMAT = "xbatcher-materialized"
_VERSION = 1
_DONE = "_done"
_PAYLOAD_RETRIES = 3  # times a lost payload is sent again before giving up
Tree = dict[str, Any]


# ---------------------------------------------------------------- batch structure
def flatten(batch: Any, prefix: str = "") -> tuple[Tree, dict[str, NDArray[Any]]]:
    """A batch (an array, or nested dicts / tuples of arrays) as a JSON-able
    structure description and ``{path: array}``."""
    if isinstance(batch, dict):
        keys: dict[str, Tree] = {}
        leaves: dict[str, NDArray[Any]] = {}
        for k, v in batch.items():
            if not isinstance(k, str) or not k or "/" in k or k.startswith("_"):
                raise SchemaError(
                    f"materialised batch keys must be non-empty str without '/' "
                    f"that do not start with '_'; got {k!r}. Rename the variable."
                )
            keys[k], sub = flatten(v, f"{prefix}{k}/")
            leaves |= sub
        return {"dict": keys}, leaves
    if isinstance(batch, tuple | list):
        items: list[Tree] = []
        leaves = {}
        for i, v in enumerate(batch):
            tree, sub = flatten(v, f"{prefix}item{i}/")
            items.append(tree)
            leaves |= sub
        return {"tuple": items}, leaves
    a = np.asarray(batch)
    if a.ndim == 0:
        raise SchemaError(
            "materialised batches need a first (sample) axis in every array; got a "
            "0-d array. Use a generator with batch_size, and transforms that keep "
            "the sample axis."
        )
    return {"array": prefix.rstrip("/") or "data"}, {prefix.rstrip("/") or "data": a}


def unflatten(tree: Tree, leaves: Mapping[str, NDArray[Any]]) -> Any:
    """The batch that :func:`flatten` described."""
    if "dict" in tree:
        return {k: unflatten(t, leaves) for k, t in tree["dict"].items()}
    if "tuple" in tree:
        return tuple(unflatten(t, leaves) for t in tree["tuple"])
    return leaves[tree["array"]]


# ---------------------------------------------------------------- writing
@dataclass(frozen=True, slots=True)
class StoreSpec:
    """Where and how chunks are written (pickles small, travels with each task)."""

    url: str
    storage_options: Mapping[str, Any] | None
    epoch: int
    batches_per_chunk: int
    chunk_samples: int
    n_batches: int
    paths: tuple[str, ...]


def _open_group(url: str, mode: str, storage_options: Mapping[str, Any] | None) -> Any:
    import zarr

    kwargs: dict[str, Any] = {"mode": mode}
    if storage_options:
        kwargs["storage_options"] = dict(storage_options)
    return zarr.open_group(url, zarr_format=3, **kwargs)


def write_chunk(payload: Payload, spec: StoreSpec, k: int) -> int:
    """Read, transform and write chunk ``k`` (its batches), then mark it done.

    Returns ``k``. The task a Dask worker (or a thread) runs; pure: writing a chunk
    twice writes the same bytes.
    """
    import dask

    first = k * spec.batches_per_chunk
    stop = min(first + spec.batches_per_chunk, spec.n_batches)
    units = payload.plan.batch_units(spec.epoch, first, stop)
    with dask.config.set(scheduler="synchronous"):
        batches = read_batches(payload.engine, units)
        if payload.transform is not None:
            batches = [payload.transform(b) for b in batches]
    flat = [flatten(b)[1] for b in batches]
    group = _open_group(spec.url, "r+", spec.storage_options)
    lo = k * spec.chunk_samples
    for path in spec.paths:
        data = np.concatenate([f[path] for f in flat], axis=0)
        group[path][lo : lo + data.shape[0]] = data
    group[_DONE][k] = True  # only once every array of the chunk is written
    return k


def materialize(
    bgen: BatchGenerator,
    url: str,
    *,
    epoch: int | None = None,
    batches_per_chunk: int = 1,
    transform: Callable[[Any], Any] | None = None,
    client: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    max_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MaterializedBatches:
    """Write one epoch of ``bgen``'s batches, in its sampler's order, to a Zarr store.

    Parameters
    ----------
    bgen : BatchGenerator
        A generator with ``batch_size`` (sample batches); shuffle it for a shuffled
        copy.
    url : str
        A local path or an fsspec URL (``s3://bucket/key``) of a Zarr v3 group.
    epoch : int, optional
        Whose order (default: ``bgen.epoch``).
    batches_per_chunk : int
        Batches per stored chunk (the reader shuffles whole chunks).
    transform : callable, optional
        Applied to each batch before it is written (must keep the first axis as
        the sample axis, and pickle when a client is given). A rerun must pass the
        same transform.
    client : distributed.Client or str, optional
        Write on this cluster (else on ``max_workers`` threads here).
    storage_options : mapping, optional
        fsspec options of ``url`` (e.g. an S3 endpoint and keys).
    max_workers : int, optional
        Threads without a client (default: the CPU count).
    overwrite : bool
        Start afresh even if ``url`` holds a materialisation of other data.
    progress : bool
        Show a ``tqdm`` progress bar of the chunks.

    Returns
    -------
    MaterializedBatches
        The store, opened for reading in stored order (``shuffle=False``).

    Raises
    ------
    SchemaError
        ``bgen`` has no ``batch_size``, or ``batches_per_chunk`` is not >= 1.
    StateError
        ``url`` holds a materialisation of another generator, epoch or chunking
        (and ``overwrite`` is False).

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(20.0).reshape(10, 2), dims=("t", "x"))
    >>> bgen = xb.BatchGenerator(da, {"x": 2}, batch_size=4, shuffle=True, seed=0)
    >>> store = materialize(bgen, tempfile.mkdtemp() + "/m.zarr", progress=False)
    >>> [b[:, 0].tolist() for b in store] == [b[:, 0].tolist() for b in bgen.arrays]
    True
    """
    from .generator import BatchGenerator

    if not isinstance(bgen, BatchGenerator):
        raise InputTypeError(
            f"materialize needs a BatchGenerator; got {type(bgen).__name__}."
        )
    bs = bgen.schema.batch_size
    if bs is None:
        raise SchemaError(
            "materialize needs sample batches: a generator with batch_size (each "
            "stored row is one sample). Pass batch_size=... to BatchGenerator."
        )
    bpc = check_int(
        batches_per_chunk,
        "batches_per_chunk",
        minimum=1,
        fix="Pass the number of batches per stored chunk, e.g. 1.",
    )
    if transform is not None and not callable(transform):
        raise InputTypeError(
            f"transform must be a callable taking and returning a batch; got "
            f"{type(transform).__name__}."
        )
    e = bgen.epoch if epoch is None else check_int(epoch, "epoch", minimum=0)
    plan, engine = bgen.plan, bgen.engine
    n_batches = plan.num_batches()
    n_samples = plan.epoch_length()
    if bgen.schema.drop_last:
        n_samples = n_batches * bs
    if n_batches == 0:
        raise SchemaError("materialize got a generator with no batches.")
    n_chunks = math.ceil(n_batches / bpc)
    payload = Payload(plan, engine, transform)
    # the layout comes from the first batch (read here once)
    first = read_batches(engine, plan.batch_units(e, 0, 1))[0]
    tree, leaves = flatten(first if transform is None else transform(first))
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "fingerprint": bgen.fingerprint,
        "epoch": e,
        "batch_size": bs,
        "batches_per_chunk": bpc,
        "n_batches": n_batches,
        "n_samples": n_samples,
        "n_chunks": n_chunks,
        "tree": tree,
        "arrays": {
            p: {"shape": list(a.shape[1:]), "dtype": a.dtype.str}
            for p, a in leaves.items()
        },
    }
    _prepare(url, storage_options, meta, leaves, bs * bpc, overwrite)
    spec = StoreSpec(
        url, storage_options, e, bpc, bs * bpc, n_batches, tuple(sorted(leaves))
    )
    done = np.asarray(_open_group(url, "r", storage_options)[_DONE][:], dtype=bool)
    todo = [k for k in range(n_chunks) if not done[k]]
    bar = _progress(n_chunks, int(done.sum()), progress)
    try:
        if client is not None:
            _write_on_cluster(client, payload, spec, todo, bar)
        else:
            with ThreadPoolExecutor(max_workers, "xbatcher-materialize") as pool:
                for f in [pool.submit(write_chunk, payload, spec, k) for k in todo]:
                    f.result()
                    bar.update(1)
    finally:
        bar.close()
    return MaterializedBatches(url, shuffle=False, storage_options=storage_options)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="chunk",
        desc="materialize",
    )


def _prepare(
    url: str,
    storage_options: Mapping[str, Any] | None,
    meta: dict[str, Any],
    leaves: Mapping[str, NDArray[Any]],
    chunk_samples: int,
    overwrite: bool,
) -> None:
    """Create the store's arrays, or check that an existing store is this run's."""
    import zarr

    if not overwrite:
        try:
            group = _open_group(url, "r", storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            group = None
        if group is not None:
            old = dict(group.attrs).get("xbatcher")
            if old == meta:
                return  # resume
            if old is not None:
                diff = {
                    k: (old.get(k), meta[k])
                    for k in meta
                    if old.get(k) != meta[k] and k not in ("tree", "arrays")
                }
                raise StateError(
                    f"{url} holds a materialisation of another run (stored vs "
                    f"now: {diff or 'array layout'}). Pass overwrite=True to "
                    "replace it, or another url."
                )
    group = _open_group(url, "w", storage_options)
    n = meta["n_samples"]
    for path, a in leaves.items():
        group.create_array(
            path,
            shape=(n, *a.shape[1:]),
            chunks=(chunk_samples, *a.shape[1:]),
            dtype=a.dtype,
            dimension_names=(
                "sample",
                *(f"{path.replace('/', '_')}_dim{i}" for i in range(1, a.ndim)),
            ),
        )
    group.create_array(
        _DONE,
        shape=(meta["n_chunks"],),
        chunks=(1,),
        dtype=bool,
        fill_value=False,
        dimension_names=("chunk",),
    )
    group.attrs["xbatcher"] = meta  # last: a store with this is ready to fill


def _write_on_cluster(
    client: Any, payload: Payload, spec: StoreSpec, todo: list[int], bar: Any
) -> None:
    from distributed import as_completed

    client, owned = get_client(client)
    try:
        for attempt in range(_PAYLOAD_RETRIES + 1):
            # should every worker holding the payload die, the tasks needing it
            # are cancelled: send it again and submit the chunks not yet written
            shared = client.scatter(payload, broadcast=True, hash=False)
            futures = [
                client.submit(write_chunk, shared, spec, k, pure=False, priority=-k)
                for k in todo
            ]
            chunk_of = {f.key: k for f, k in zip(futures, todo, strict=True)}
            lost = []
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                try:
                    future.result()
                except CancelledError:
                    if attempt == _PAYLOAD_RETRIES:
                        raise
                    lost.append(chunk_of[future.key])
                    continue
                bar.update(1)
            shared.release()
            if not lost:
                return
            todo = sorted(lost)
    finally:
        if owned:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()


# ---------------------------------------------------------------- reading
class MaterializedBatches:
    """The batches of a materialised store, in a fresh chunk order every epoch.

    Parameters
    ----------
    url : str
        The store :func:`materialize` wrote.
    shuffle : bool
        Visit the chunks in a random order per epoch (else stored order, which is
        the generator's order of the materialised epoch).
    seed : int, optional
        Seed of the chunk order (drawn at random when None; see ``.seed``).
    within_chunk : bool
        Also shuffle the samples inside each chunk (the batches then mix the
        chunk's batches).
    storage_options : mapping, optional
        fsspec options of ``url``.
    read_ahead : int
        Chunks read ahead of the consumer on a background thread.

    Notes
    -----
    Iterating follows ``.epoch`` and moves it on at the end, as a generator does;
    :meth:`set_epoch` chooses it. Each epoch visits every sample exactly once.
    """

    def __init__(
        self,
        url: str,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        within_chunk: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        read_ahead: int = 2,
    ) -> None:
        self.url = url
        self.storage_options = storage_options
        group = _open_group(url, "r", storage_options)
        meta = dict(group.attrs).get("xbatcher")
        if meta is None or meta.get("format") != _FORMAT:
            raise StateError(
                f"{url} is not a store written by xbatcher.materialize (no "
                "'xbatcher' attributes). Pass the url given to materialize."
            )
        done = np.asarray(group[_DONE][:], dtype=bool)
        if not done.all():
            raise StateError(
                f"{url} is incomplete: {int((~done).sum())} of {done.size} chunks "
                "were not written. Run materialize again with the same arguments "
                "to finish it."
            )
        self.meta = meta
        self._group = group
        self._arrays = {p: group[p] for p in meta["arrays"]}
        self.shuffle = bool(shuffle)
        self.within_chunk = bool(within_chunk)
        self.seed = secrets.randbits(63) if seed is None else check_seed(seed)
        self.read_ahead = check_int(read_ahead, "read_ahead", minimum=0)
        self.epoch = 0
        bs, bpc = meta["batch_size"], meta["batches_per_chunk"]
        self.batch_size: int = bs
        self.chunk_samples: int = bs * bpc
        self.n_chunks: int = meta["n_chunks"]
        self.n_samples: int = meta["n_samples"]

    def _chunk_rows(self, k: int) -> tuple[int, int]:
        lo = k * self.chunk_samples
        return lo, min(lo + self.chunk_samples, self.n_samples)

    def _batches_in(self, k: int) -> int:
        lo, hi = self._chunk_rows(k)
        return math.ceil((hi - lo) / self.batch_size)

    def chunk_order(self, epoch: int) -> NDArray[np.int64]:
        """The order of the chunks in ``epoch``."""
        if not self.shuffle:
            return np.arange(self.n_chunks, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.n_chunks).astype(np.int64)

    def _within(self, epoch: int, k: int, n: int) -> NDArray[np.int64]:
        if not self.within_chunk:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch, k, 1])
        return rng.permutation(n).astype(np.int64)

    def sample_order(self, epoch: int) -> NDArray[np.int64]:
        """The stored rows of ``epoch``'s samples, in delivery order (no data read)."""
        parts = []
        for k in self.chunk_order(epoch):
            lo, hi = self._chunk_rows(int(k))
            parts.append(lo + self._within(epoch, int(k), hi - lo))
        return np.concatenate(parts)

    def __len__(self) -> int:
        return int(self.meta["n_batches"])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def read_chunk(self, k: int) -> dict[str, NDArray[Any]]:
        """Chunk ``k``'s samples, every array (one read per array)."""
        lo, hi = self._chunk_rows(k)
        return {p: np.asarray(a[lo:hi]) for p, a in self._arrays.items()}

    def _split(self, epoch: int, k: int, leaves: dict[str, NDArray[Any]]) -> list[Any]:
        n = next(iter(leaves.values())).shape[0]
        if self.within_chunk:
            perm = self._within(epoch, k, n)
            leaves = {p: a[perm] for p, a in leaves.items()}
        bs = self.batch_size
        return [
            unflatten(self.meta["tree"], {p: a[i : i + bs] for p, a in leaves.items()})
            for i in range(0, n, bs)
        ]

    def __getitem__(self, idx: int) -> Any:
        from .generator import _check_index

        i = _check_index(idx, len(self))
        for k in self.chunk_order(self.epoch):
            m = self._batches_in(int(k))
            if i < m:
                return self._split(self.epoch, int(k), self.read_chunk(int(k)))[i]
            i -= m
        raise AssertionError("unreachable")  # pragma: no cover

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        order = [int(k) for k in self.chunk_order(epoch)]
        return self._iterate(epoch, order)

    def _iterate(self, epoch: int, order: list[int]) -> Iterator[Any]:
        pool = ThreadPoolExecutor(1, "xbatcher-materialized-read")
        try:
            ahead: dict[int, Future[dict[str, NDArray[Any]]]] = {}
            for j, k in enumerate(order):
                for nxt in order[j : j + 1 + self.read_ahead]:
                    if nxt not in ahead:
                        ahead[nxt] = pool.submit(self.read_chunk, nxt)
                leaves = ahead.pop(k).result()
                yield from self._split(epoch, k, leaves)
            self.epoch = max(self.epoch, epoch + 1)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def dataset(self) -> Any:
        """The store as an ``xarray.Dataset`` (dims ``sample``, ...; lazily opened),
        e.g. to batch it with a :class:`~xbatcher.BatchGenerator`."""
        import xarray as xr

        ds = xr.open_zarr(
            self.url,
            consolidated=False,
            storage_options=None
            if self.storage_options is None
            else dict(self.storage_options),
            zarr_format=3,
        )
        return ds.drop_vars(_DONE)

    def __repr__(self) -> str:
        return (
            f"<xbatcher.MaterializedBatches {self.url!r}: {len(self)} batches of "
            f"{self.batch_size}, {self.n_chunks} chunks, shuffle={self.shuffle}>"
        )


def open_materialized(
    url: str,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    within_chunk: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> MaterializedBatches:
    """Open a store written by :func:`materialize` (see :class:`MaterializedBatches`)."""
    return MaterializedBatches(
        url,
        shuffle=shuffle,
        seed=seed,
        within_chunk=within_chunk,
        storage_options=storage_options,
    )
