"""Report the versions of xbatcher, its dependencies and the platform.

The report is meant to be pasted into bug reports. Package versions are read from the
installed distribution metadata, so no dependency (torch, tensorflow, ...) is imported.
"""

from __future__ import annotations

import locale
import os
import platform
import struct
import sys
from importlib import metadata
from typing import TextIO

__all__ = ["show_versions"]

#: Distributions reported, in order: xbatcher, core dependencies, then optional ones.
DISTRIBUTIONS: tuple[str, ...] = (
    "xbatcher",
    "numpy",
    "xarray",
    "pandas",
    "dask",
    "zarr",
    "numcodecs",
    "torch",
    "tensorflow",
    "keras",
    "jax",
    "redis",
    "s3fs",
    "distributed",
    "tqdm",
)

# A distribution that can stand in for the one named (tensorflow is often installed as
# tensorflow-cpu); the first one installed wins.
_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
}


def _xbatcher_version() -> str:
    """Version of the xbatcher being run, even when it is not installed (``src/``)."""
    from xbatcher._version import __version__

    return __version__


def _distribution_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or ``None`` if it is not installed.

    Parameters
    ----------
    name : str
        Distribution name as on PyPI.

    Returns
    -------
    str or None
        The version string from the distribution metadata.
    """
    if name == "xbatcher":
        return _xbatcher_version()
    for candidate in _ALTERNATIVES.get(name, (name,)):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def _system_info() -> list[tuple[str, str]]:
    """Python, operating system and locale facts, as ``(label, value)`` pairs."""
    uname = platform.uname()
    try:
        lang, encoding = locale.getlocale()
        loc = f"{lang}.{encoding}" if lang and encoding else str(lang)
    except ValueError:
        loc = "unknown"
    return [
        ("python", sys.version.replace("\n", " ")),
        ("python-bits", str(struct.calcsize("P") * 8)),
        ("executable", sys.executable),
        ("OS", uname.system),
        ("OS-release", uname.release),
        ("machine", uname.machine),
        ("processor", uname.processor or "unknown"),
        ("byteorder", sys.byteorder),
        ("cpu-count", str(os.cpu_count())),
        ("LC_ALL", os.environ.get("LC_ALL", "None")),
        ("LANG", os.environ.get("LANG", "None")),
        ("LOCALE", loc),
    ]


def show_versions(file: TextIO | None = None) -> None:
    """Print the versions of xbatcher, its dependencies and the platform.

    The report opens with 0.4's ``xbatcher information`` section (the version), then
    lists the platform and every dependency. Optional dependencies that are not installed are shown as ``None``. Nothing is
    imported: versions come from the installed package metadata.

    Parameters
    ----------
    file : file-like, optional
        Where to write the report. Defaults to ``sys.stdout`` (looked up at call time).

    Examples
    --------
    >>> import io
    >>> import xbatcher
    >>> buf = io.StringIO()
    >>> xbatcher.show_versions(file=buf)
    >>> "numpy:" in buf.getvalue()
    True
    """
    out = sys.stdout if file is None else file
    system = _system_info()
    packages = [(name, str(_distribution_version(name))) for name in DISTRIBUTIONS]
    width = max(len(label) for label, _ in system + packages)
    # the "xbatcher information" section comes first, as in 0.4's report
    lines = ["xbatcher information:", f"  version: v{_xbatcher_version()}"]
    lines += ["", "INSTALLED VERSIONS", "------------------"]
    lines += [f"{label + ':':<{width + 1}} {value}" for label, value in system]
    lines.append("")
    lines += [f"{label + ':':<{width + 1}} {value}" for label, value in packages]
    print("\n".join(lines), file=out)
