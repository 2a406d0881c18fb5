"""Tests of ``xbatcher.show_versions`` (``xbatcher/_versions.py``)."""

from __future__ import annotations

import io
import sys
from importlib import metadata

import numpy as np
import pytest

import xbatcher
from xbatcher._version import __version__
from xbatcher._versions import DISTRIBUTIONS, show_versions


def _report() -> dict[str, str]:
    """Run show_versions into a StringIO and parse its ``label: value`` lines."""
    buf = io.StringIO()
    show_versions(file=buf)
    lines = [line for line in buf.getvalue().splitlines() if ":" in line]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


def test_writes_to_file_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    show_versions(file=buf)
    assert "INSTALLED VERSIONS" in buf.getvalue()
    assert capsys.readouterr().out == ""


def test_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    show_versions()
    assert "INSTALLED VERSIONS" in capsys.readouterr().out


def test_opens_with_04s_xbatcher_information_section() -> None:
    buf = io.StringIO()
    show_versions(file=buf)
    head = buf.getvalue().splitlines()[:2]
    assert head == ["xbatcher information:", f"  version: v{__version__}"]


def test_is_reexported() -> None:
    assert xbatcher.show_versions is show_versions


def test_reports_every_distribution_and_the_platform() -> None:
    report = _report()
    expected = {"python", "python-bits", "OS", "machine", *DISTRIBUTIONS}
    assert expected <= report.keys()
    assert report["python"].startswith(".".join(map(str, sys.version_info[:3])))
    assert report["xbatcher"] == __version__
    assert report["numpy"] == np.__version__
    assert report["tqdm"] == metadata.version("tqdm")


def test_missing_package_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = metadata.version

    def fake_version(name: str) -> str:
        if name in {"torch", "tensorflow", "tensorflow-cpu", "tensorflow-macos"}:
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", fake_version)
    report = _report()
    assert report["torch"] == "None"
    assert report["tensorflow"] == "None"
    assert report["numpy"] == np.__version__


def test_tensorflow_cpu_counts_as_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = metadata.version

    def fake_version(name: str) -> str:
        if name == "tensorflow":
            raise metadata.PackageNotFoundError(name)
        if name == "tensorflow-cpu":
            return "2.99.0"
        return real_version(name)

    monkeypatch.setattr(metadata, "version", fake_version)
    assert _report()["tensorflow"] == "2.99.0"


def test_does_not_import_optional_packages(run_python) -> None:
    heavy = ["torch", "tensorflow", "keras", "jax", "redis", "s3fs"]
    code = (
        "import io, sys, xbatcher\n"
        f"before = {{m for m in {heavy!r} if m in sys.modules}}\n"
        "xbatcher.show_versions(file=io.StringIO())\n"
        f"after = {{m for m in {heavy!r} if m in sys.modules}}\n"
        "assert after == before, sorted(after - before)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
