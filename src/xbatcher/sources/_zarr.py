"""Direct Zarr chunk reads: raw chunk bytes from the store, decoded in our own threads.

A variable that xarray opened lazily from Zarr (``xr.open_dataset(..., engine="zarr")``
or ``open_zarr(..., chunks=None)``) is, underneath, a ``zarr.Array`` behind a few
lazy wrappers: a basic (slice) index, CF decoding functions such as masking and scaling,
and copy-on-write and memory-cache shells. :func:`find_backing` unwraps those; when
every layer is one we understand, :class:`ZarrSource` reads a storage chunk by fetching
its bytes from the store and decoding them with the codec (numcodecs) straight into a
numpy buffer, then applies xarray's elementwise CF functions. Several chunks decode in
parallel in the reader's decode pool (zstd, blosc and gzip release the GIL), while the
caller goes on gathering windows from the chunks it already has.

Why not ask Zarr for the region? Zarr decodes one request's chunks on its event loop
and copies them into a freshly allocated output; reading every chunk of the benchmark
store that way takes about 1.7x the time of this path with one thread and about 3x with
two (``docs/performance.md``). Anything this module does not recognise (sharding,
filters, transposing codecs, F order, non-native byte order, vectorised indexes,
object dtypes, other xarray wrappers) falls back to :class:`~xbatcher.sources.LazySource`,
which reads through xarray, so the direct path is an optimisation and never a
requirement. Codecs and stores are recognised by their spec names and zarr's public
classes, and the one private zarr helper used (``zarr.core.sync``, for stores other
than local directories) is probed when a source is built. A chunk that is empty,
truncated or does not decode to its exact size raises
:class:`~xbatcher.errors.ChunkDecodeError`. Tests (``tests/test_zarr_matrix.py``)
compare both paths with xarray's and zarr's own reads, value for value.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .._threads import worker_pool
from ..errors import ChunkDecodeError
from ._backing import Backing, find_backing
from ._base import _bounds
from ._lazy import LazySource

__all__ = ["ZarrSource", "direct_decoders", "find_backing"]


def _native(dtype: np.dtype[Any]) -> bool:
    return dtype.byteorder in ("=", "|") or dtype.byteorder == (
        "<" if np.little_endian else ">"
    )


#: codecs the direct path decodes, by their spec name (``codec_id`` in Zarr v2,
#: the ``name`` of the codec's JSON in Zarr v3). Each is tested against damaged
#: chunks (``tests/test_zarr_matrix.py``); any other codec falls back to xarray.
_CODEC_IDS = {
    "blosc": "blosc",
    "zstd": "zstd",
    "gzip": "gzip",
    "zlib": "zlib",
    "lz4": "lz4",
    "numcodecs.blosc": "blosc",
    "numcodecs.zstd": "zstd",
    "numcodecs.gzip": "gzip",
    "numcodecs.zlib": "zlib",
    "numcodecs.lz4": "lz4",
}


def _decoders(array: Any) -> list[Any] | None:
    """numcodecs codecs that undo the array's bytes-to-bytes codecs, outermost first;
    ``None`` when the encoding is one this module does not reproduce."""
    import numcodecs
    from numcodecs.abc import Codec

    meta = array.metadata
    fmt = getattr(meta, "zarr_format", None)
    if fmt == 2:
        compressor = getattr(meta, "compressor", None)
        if meta.filters or meta.order != "C":
            return None
        if compressor is None:
            return []
        if not isinstance(compressor, Codec):
            return None
        if _CODEC_IDS.get(str(getattr(compressor, "codec_id", ""))) is None:
            return None
        return [compressor]
    if fmt != 3:
        return None
    from zarr.codecs import BytesCodec

    codecs = list(meta.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None  # array-to-array codecs (transpose), sharding, vlen...
    endian = getattr(codecs[0], "endian", None)
    native = "little" if np.little_endian else "big"
    if endian is not None and endian.value != native and array.dtype.itemsize > 1:
        return None  # (one-byte values read the same in either byte order)
    out = []
    for codec in codecs[1:]:
        try:
            name = codec.to_dict()["name"]
        except Exception:
            return None
        codec_id = _CODEC_IDS.get(str(name))
        if codec_id is None:
            return None  # crc32c, filters spelled as codecs, unknown codecs
        # the payloads describe themselves: decoding needs no configuration
        out.append(numcodecs.get_codec({"id": codec_id}))
    return out[::-1]


_local = threading.local()
_MAX_REUSED_BUFFER = 64 * 2**20  # bigger chunk files are read into fresh memory


@dataclass(frozen=True)
class _Fetch:
    """How the chunk bytes of one store are fetched, decided once when the source is
    built: plain file reads under ``root`` (a ``zarr.storage.LocalStore``), or the
    store's async ``get`` run through ``sync`` (any other store)."""

    store: Any
    root: str | None
    sync: Callable[[Any], Any] | None = None
    prototype: Callable[[], Any] | None = None

    def __call__(self, key: str) -> Any:
        """The stored bytes of ``key`` (a buffer valid until this thread's next
        call); ``None`` for a chunk that was never written."""
        if self.root is not None:
            return _read_file(os.path.join(self.root, key))
        assert self.sync is not None
        assert self.prototype is not None
        stored = self.sync(self.store.get(key, prototype=self.prototype()))
        return None if stored is None else stored.to_bytes()


def _fetcher(store: Any) -> _Fetch | None:
    """Probe, once, how to read ``store``'s chunks; ``None`` when this zarr lacks
    what the direct path needs (then xarray reads the variable)."""
    root = _local_root(store)
    if root is not None:
        return _Fetch(store, root)
    try:
        # zarr.core.sync is private: probed here, so that a zarr without it makes
        # the variable fall back to xarray instead of failing at read time
        from zarr.buffer import default_buffer_prototype
        from zarr.core.sync import sync
    except ImportError:
        return None
    if not callable(getattr(store, "get", None)):
        return None
    return _Fetch(store, None, sync, default_buffer_prototype)


def _local_root(store: Any) -> str | None:
    """The directory of a plain ``zarr.storage.LocalStore`` (whose ``get`` is
    zarr's own: a subclass may transform the bytes), else ``None``."""
    try:
        from zarr.storage import LocalStore
    except ImportError:
        return None
    root = getattr(store, "root", None)
    if not isinstance(store, LocalStore) or root is None:
        return None
    if getattr(type(store), "get", None) is not LocalStore.get:
        return None
    return str(os.fspath(root))


def _read_file(path: str) -> Any:
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size > _MAX_REUSED_BUFFER:
                return f.read()
            # one reused buffer per thread: no fresh pages to fault in per chunk.
            # The buffer holds earlier chunks past this one's end: every decoder
            # must stay within the returned view (see _header_problem for blosc)
            buf = getattr(_local, "buf", None)
            if buf is None or len(buf) < size + 1:
                buf = _local.buf = bytearray(max(size + 1, 2**20))
            n = f.readinto(buf)
            if n == size + 1 or n is None:  # the file grew under us: read it all
                f.seek(0)
                return f.read()
            return memoryview(buf)[:n]
    except FileNotFoundError:
        return None


class ZarrSource(LazySource):
    """A lazily opened Zarr variable whose storage chunks are read and decoded
    directly (see the module docstring). Region reads (``read``) still go through
    xarray."""

    def __init__(
        self,
        key: Hashable,
        variable: xr.Variable,
        backing: Backing,
        decoders: list[Any],
        fetch: _Fetch | None = None,
    ) -> None:
        super().__init__(key, variable)
        array = backing.array
        self.backing = backing
        self._decoders = decoders
        self._stored_dtype = np.dtype(array.dtype)
        self._chunk_shape = tuple(int(c) for c in array.chunks)
        self._fill = _fill_value(array.fill_value, self._stored_dtype)
        self._store = array.store_path.store
        self._prefix = array.store_path.path
        if fetch is None:
            fetch = _fetcher(self._store)
            if fetch is None:
                raise TypeError(
                    f"chunks of {self._store!r} cannot be read directly with this "
                    "zarr version; use LazySource (make_source picks it)"
                )
        self._fetch = fetch
        self._first = tuple(
            o // c for o, c in zip(backing.offsets, self._chunk_shape, strict=True)
        )
        self.bounds = _bounds(self.storage_chunks())

    def storage_chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunk sizes of this view along each dim: the storage chunks it overlaps,
        cut at the view's edges."""
        out = []
        for off, n, c in zip(
            self.backing.offsets, self.shape, self._chunk_shape, strict=True
        ):
            if n == 0:
                out.append((0,))
                continue
            edges = [off, *range((off // c + 1) * c, off + n, c), off + n]
            out.append(tuple(b - a for a, b in itertools.pairwise(edges)))
        return tuple(out)

    submits_chunks = True
    decodes_into = True

    def submit_chunk(
        self, cid: tuple[int, ...], out: NDArray[Any] | None = None
    ) -> Future[NDArray[Any]]:
        return worker_pool("decode").submit(self._read_chunk, cid, out)

    def read_chunk_into(self, cid: tuple[int, ...], out: NDArray[Any]) -> NDArray[Any]:
        """Decode chunk ``cid`` straight into ``out`` (a whole stored chunk without
        CF functions, into a C-contiguous ``out``); otherwise decode and copy."""
        return self._read_chunk(cid, out)

    def read_chunks(self, chunk_ids: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        """Decode the chunks, several at once in the decode pool."""
        if len(chunk_ids) < 2:
            return [self._read_chunk(c) for c in chunk_ids]
        return list(worker_pool("decode").map(self._read_chunk, chunk_ids))

    def _read_chunk(
        self, cid: tuple[int, ...], out: NDArray[Any] | None = None
    ) -> NDArray[Any]:
        stored = tuple(c + f for c, f in zip(cid, self._first, strict=True))
        key = self.backing.array.metadata.encode_chunk_key(stored)
        if self._prefix:
            key = f"{self._prefix}/{key}"
        # the part of the stored chunk inside this view
        local = []
        for s, c, off, n in zip(
            stored, self._chunk_shape, self.backing.offsets, self.shape, strict=True
        ):
            lo, hi = max(s * c, off), min((s + 1) * c, off + n)
            local.append(slice(lo - s * c, hi - s * c))
        raw = self._fetch(key)
        if (  # a whole stored chunk, as stored: decoded straight into `out`
            out is not None
            and raw is not None
            and not self.backing.funcs
            and out.dtype == self._stored_dtype
            and out.shape == self._chunk_shape
            and out.flags.c_contiguous
        ):
            return self._decode(raw, key, out)
        if raw is None:
            shape = tuple(sl.stop - sl.start for sl in local)
            block: NDArray[Any] = np.full(shape, self._fill, dtype=self._stored_dtype)
        else:
            full = self._decode(raw, key)
            block = full[tuple(local)]
            if block.size != full.size:  # a view would pin the whole chunk in cache
                block = block.copy()
        for func in self.backing.funcs:
            block = np.asarray(func(block))
        if block.dtype != self.dtype:
            raise ChunkDecodeError(
                f"chunk {key!r} decoded to dtype {block.dtype}, but the variable "
                f"declares {self.dtype}; open the dataset with chunks={{}} to read it "
                "through dask instead."
            )
        if out is not None:
            out[...] = block
            return out
        return block

    def _decode(
        self, raw: Any, key: str, out: NDArray[Any] | None = None
    ) -> NDArray[Any]:
        """Decode ``raw`` into ``out`` (a fresh array when ``None``), checked."""
        if out is None:
            out = np.empty(self._chunk_shape, dtype=self._stored_dtype)
        cause: BaseException | None = None
        try:
            problem = self._decode_into(raw, out)
        except Exception as err:  # each codec has its own (zlib.error, EOFError...)
            problem, cause = f"{type(err).__name__}: {err}", err
        if problem is None:
            return out
        codecs = ", ".join(str(c.codec_id) for c in self._decoders) or "no codec"
        raise ChunkDecodeError(
            f"chunk {key!r} of {self.backing.array.store_path} is damaged: it could "
            f"not be decoded ({codecs}) into its {self._chunk_shape} "
            f"{self._stored_dtype} ({out.nbytes} bytes): {problem}. Rewrite the "
            "chunk (or the array) from its source; zarr cannot read it either."
        ) from cause

    def _decode_into(self, raw: Any, out: NDArray[Any]) -> str | None:
        """Decode ``raw`` into ``out``; what is wrong with it, or ``None``."""
        data: Any = raw
        if memoryview(data).nbytes == 0:
            return "the stored chunk is empty (0 bytes)"
        for codec in self._decoders[:-1]:
            data = codec.decode(data)
        if self._decoders:
            last = self._decoders[-1]
            problem = _header_problem(last, data, out.nbytes)
            if problem is not None:
                return problem
            # codecs decode a short payload into the front of `out` without a word,
            # so only payloads whose checked header declares the size go there
            direct = last.codec_id in ("zstd", "blosc")
            if direct and _declared_size(last, data) == out.nbytes:
                last.decode(data, out=out)
                return None
            data = last.decode(data)
        flat = np.frombuffer(data, dtype=np.uint8)
        if flat.size != out.nbytes:
            return f"it decodes to {flat.size} bytes"
        out.reshape(-1).view(np.uint8)[:] = flat
        return None


def _fill_value(fill: Any, dtype: np.dtype[Any]) -> Any:
    """What a chunk that was never written reads as. Zarr v2 allows a ``null``
    fill value (xarray writes it for ``_FillValue=None``, and for integers by
    default); zarr then reads such chunks as zeros (``False`` for bools)."""
    if fill is None:
        return np.zeros((), dtype=dtype)[()]
    return fill


_BLOSC_MEMCPYED = 0x02


def _header_problem(codec: Any, data: Any, nbytes: int) -> str | None:
    """What is wrong with a payload's header for a chunk of ``nbytes``, checked
    before decoding; ``None`` when nothing is.

    Blosc decompresses from a pointer without knowing the buffer's length, and a
    local chunk sits in a reused buffer whose bytes past its end belong to earlier
    chunks: the compressed size its header declares must be the stored size, or
    blosc would decode those stale bytes.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    if codec.codec_id == "blosc":
        if size < 16:
            return f"a blosc payload has a 16-byte header, but only {size} bytes"
        head = bytes(view[:16])
        declared = int.from_bytes(head[4:8], "little")
        compressed = int.from_bytes(head[12:16], "little")
        if compressed != size:
            return (
                f"its blosc header declares {compressed} compressed bytes, but "
                f"{size} are stored (truncated or padded)"
            )
        if head[2] & _BLOSC_MEMCPYED and compressed != declared + 16:
            return "its blosc header marks it uncompressed, but its sizes disagree"
    declared_size = _declared_size(codec, view)
    if declared_size is not None and declared_size != nbytes:
        return f"its header declares {declared_size} decoded bytes"
    return None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _declared_size(codec: Any, data: Any) -> int | None:
    """The decoded size a compressed payload declares in its header (zstd frame
    content size, blosc header, gzip trailer); ``None`` when it does not say."""
    view = memoryview(data).cast("B")
    head = bytes(view[:18])  # every header field read below lies in the first 18
    name = getattr(codec, "codec_id", None)
    if name == "zstd" and len(head) >= 6 and head[:4] == _ZSTD_MAGIC:
        descriptor = head[4]
        single_segment = (descriptor >> 5) & 1
        pos = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
        width = (single_segment, 2, 4, 8)[descriptor >> 6]
        if width == 0 or len(head) < pos + width:
            return None
        size = int.from_bytes(head[pos : pos + width], "little")
        return size + 256 if width == 2 else size
    if name == "blosc" and len(head) >= 16:
        return int.from_bytes(head[4:8], "little")
    if name == "gzip" and len(head) >= 18 and head[:2] == b"\x1f\x8b":
        return int.from_bytes(bytes(view[-4:]), "little")  # ISIZE: size mod 2**32
    return None


def direct_decoders(
    variable: xr.Variable,
) -> tuple[Backing, list[Any], _Fetch] | None:
    """The backing, codecs and chunk fetcher for a direct read of ``variable``, or
    ``None`` (then :class:`~xbatcher.sources.LazySource` reads it through xarray)."""
    backing = find_backing(variable)
    if backing is None:
        return None
    array = backing.array
    if not hasattr(array, "metadata") or not hasattr(array, "store_path"):
        return None  # zarr 2 library
    if getattr(array, "shards", None) is not None:
        return None
    try:
        stored = np.dtype(array.dtype)
    except TypeError:
        return None
    if stored.kind not in "biufc" or not _native(stored):
        return None  # strings, objects, structs, native datetimes: xarray reads them
    decoders = _decoders(array)
    if decoders is None:
        return None
    # the CF functions must give the variable's dtype (probe on an empty array)
    probe: Any = np.zeros(0, dtype=stored)
    try:
        for func in backing.funcs:
            probe = np.asarray(func(probe))
    except Exception:
        return None
    if probe.dtype != np.dtype(variable.dtype):
        return None
    fetch = _fetcher(array.store_path.store)
    if fetch is None:
        return None
    return backing, decoders, fetch
