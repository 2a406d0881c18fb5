"""The ``xbatcher`` command line: ``xbatcher demo``, ``xbatcher versions`` and
``xbatcher cache warm``.

A thin layer over the library: each subcommand parses its options and calls one
public function (:func:`xbatcher.demo.run_demo`, :func:`xbatcher.show_versions`,
:meth:`xbatcher.BatchGenerator.cache_all`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from xbatcher._version import __version__
from xbatcher._versions import show_versions
from xbatcher.demo import DEFAULT_SIZES, run_demo
from xbatcher.errors import SchemaError, XbatcherError

__all__ = ["main"]


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


def _dim_sizes(text: str) -> dict[str, int]:
    """argparse type: ``lat=32,lon=32`` -> ``{"lat": 32, "lon": 32}``."""
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(
                f"expected DIM=N[,DIM=N...] (e.g. lat=32,lon=32); got {text!r}"
            )
        out[name] = _positive_int(value)
    return out


def _add_cache_parser(sub: Any) -> None:
    cache = sub.add_parser(
        "cache",
        help="fill batch and chunk caches ahead of training",
        description="Manage xbatcher caches (see docs/caching.md).",
    )
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    warm = actions.add_parser(
        "warm",
        help="fill a batch cache and/or a chunk cache from a Zarr store",
        description=(
            "Open a Zarr store lazily, build a BatchGenerator over it and fill its "
            "caches (BatchGenerator.cache_all): every chunk in --chunk-cache, every "
            "batch of epoch 0 in --cache. Entries already cached are skipped."
        ),
    )
    warm.add_argument("store", help="path or URL of the Zarr store to batch")
    warm.add_argument(
        "--input-dims",
        type=_dim_sizes,
        required=True,
        metavar="DIM=N,...",
        help="window size per dim, e.g. lat=32,lon=32",
    )
    warm.add_argument(
        "--batch-dims",
        type=_dim_sizes,
        default=None,
        metavar="DIM=N,...",
        help="0.4 batch_dims, e.g. time=8",
    )
    warm.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    warm.add_argument(
        "--variables", default=None, metavar="A,B", help="data variables to batch"
    )
    warm.add_argument("--cache", default=None, metavar="URL", help="batch cache URL")
    warm.add_argument(
        "--chunk-cache", default=None, metavar="URL", help="chunk cache URL"
    )
    warm.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars"
    )
    warm.set_defaults(handler=_cache_warm)


def _cache_warm(args: argparse.Namespace) -> int:
    import xarray as xr

    from xbatcher.generator import BatchGenerator

    if args.cache is None and args.chunk_cache is None:
        raise SchemaError(
            "xbatcher cache warm needs --cache URL (batches), --chunk-cache URL "
            "(chunks) or both."
        )
    ds = xr.open_dataset(args.store, engine="zarr", chunks=None)
    if args.variables:
        ds = ds[args.variables.split(",")]
    bgen = BatchGenerator(
        ds,
        args.input_dims,
        batch_dims=args.batch_dims,
        cache=args.cache,
        batch_size=args.batch_size,
        chunk_cache=args.chunk_cache,
    )
    counts = bgen.cache_all(progress=not args.no_progress)
    print(
        f"chunks: {counts['chunks']} ({counts['chunks_decoded']} decoded), "
        f"batches: {counts['batches']} ({counts['batches_built']} built)"
    )
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbatcher",
        description="Fast batch generation from xarray objects for machine learning.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="batch a synthetic ERA5-like dataset and time an epoch",
        description=(
            "Build a synthetic ERA5-like dataset in memory (time x lat x lon, float32 "
            "t2m/u10/v10/msl), cut it into lat/lon windows (32 x 32 by default), print "
            "the layout of batch 0 and time one epoch of the array fast path "
            "(bgen.arrays)."
        ),
    )
    sizes = demo.add_argument_group("dataset size")
    for dim in ("time", "lat", "lon"):
        sizes.add_argument(
            f"--{dim}",
            type=_positive_int,
            default=DEFAULT_SIZES[dim],
            metavar="N",
            help=f"length of the {dim} dim (default: %(default)s)",
        )
    batching = demo.add_argument_group("batching")
    batching.add_argument(
        "--window",
        type=_positive_int,
        default=32,
        metavar="N",
        help="window size along lat and lon (default: %(default)s)",
    )
    batching.add_argument(
        "--batch-time",
        type=_positive_int,
        default=8,
        metavar="N",
        help="time steps per batch, 0.4 layout batch_dims={'time': N} "
        "(default: %(default)s)",
    )
    batching.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="sample-level batches of N windows (each at one time step) instead of "
        "the 0.4 layout",
    )
    batching.add_argument(
        "--shuffle",
        action="store_true",
        help="shuffle the batch or sample order (chunk-aware with --zarr)",
    )
    batching.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and the shuffle (default: %(default)s)",
    )
    run = demo.add_argument_group("run")
    run.add_argument(
        "--epochs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="epochs to time (default: %(default)s)",
    )
    run.add_argument(
        "--xarray",
        action="store_true",
        help="also time the xarray (0.4-compatible) path, `for batch in bgen`",
    )
    run.add_argument(
        "--zarr",
        metavar="PATH",
        default=None,
        help="write the dataset to a Zarr store at PATH (overwritten) and batch it "
        "lazily from disk; needs xbatcher[zarr]",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="do not show a progress bar"
    )
    demo.set_defaults(handler=_demo)

    versions = sub.add_parser(
        "versions",
        help="print versions of xbatcher, its dependencies and the platform",
        description="Print versions of xbatcher, its dependencies and the platform "
        "(for bug reports).",
    )
    versions.set_defaults(handler=_versions)
    _add_cache_parser(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    run_demo(
        args.time,
        args.lat,
        args.lon,
        input_dims={"lat": args.window, "lon": args.window},
        batch_dims={"time": args.batch_time},
        batch_size=args.batch_size,
        shuffle=args.shuffle,
        seed=args.seed,
        epochs=args.epochs,
        xarray=args.xarray,
        zarr_store=args.zarr,
        progress=not args.no_progress,
    )
    return 0


def _versions(args: argparse.Namespace) -> int:
    show_versions()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xbatcher`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when xbatcher reports an error (printed on
        stderr as one line). Invalid arguments exit through argparse
        (``SystemExit`` with status 2).

    Examples
    --------
    >>> from xbatcher.cli import main
    >>> main(["versions"])  # doctest: +ELLIPSIS
    <BLANKLINE>
    INSTALLED VERSIONS
    ...
    0
    """
    parser = _build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        status: int = args.handler(args)
    except XbatcherError as err:  # a clear message, not a traceback
        print(f"xbatcher: error: {err}", file=sys.stderr)
        return 1
    return status
