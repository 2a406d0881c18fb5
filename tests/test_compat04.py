"""xbatcher 0.4's own test suite, run against this package.

The 0.4.0 wheel ships its tests (``xbatcher/tests/test_*.py``). The wheel is downloaded
once with pip (checked against its published sha256) into the pytest cache, its test
files are extracted into a temporary directory (0.4's own code is not), and each file
runs with pytest in a child process that imports *this* xbatcher. Every 0.4 test must
pass; a failure lists each failing test with its error.

Without network the download fails: the tests skip, except under ``CI`` (set by
``.ci/run``), where they fail. Outside CI a 0.4 test file that needs a framework which
is not installed (TensorFlow) skips; in CI it must run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

import xbatcher
from conftest import unavailable

#: The test files of the 0.4.0 wheel (test_wheel_has_these_test_files keeps it whole).
TEST_FILES = (
    "test_accessors.py",
    "test_generators.py",
    "test_keras_loaders.py",
    "test_print_versions.py",
    "test_torch_loaders.py",
)
#: Framework a whole 0.4 test file needs at import time (it errors without it).
NEEDS = {"test_keras_loaders.py": "tensorflow", "test_torch_loaders.py": "torch"}


@pytest.fixture(scope="session")
def suite_04(wheel_04: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding 0.4's test files (not its package) and a neutral pytest
    config, whose conftest checks that the child process imports this xbatcher."""
    folder = tmp_path_factory.mktemp("xbatcher04-tests")
    with zipfile.ZipFile(wheel_04) as zf:
        for name in zf.namelist():
            path = Path(name)
            if path.parent.as_posix() == "xbatcher/tests" and path.name.startswith(
                "test_"
            ):
                (folder / path.name).write_bytes(zf.read(name))
    # an empty config: 0.4's tests run with pytest's defaults, not with ours
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text(
        textwrap.dedent(
            """\
            import os

            import xbatcher


            def pytest_sessionstart(session):
                expected = os.environ["XBATCHER_UNDER_TEST"]
                if os.path.realpath(xbatcher.__file__) != expected:
                    raise RuntimeError(
                        f"0.4's tests imported {xbatcher.__file__}, not {expected}"
                    )
            """
        )
    )
    return folder


def _run(folder: Path, test_file: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run one 0.4 test file with pytest against this xbatcher; returns the junit XML."""
    root = Path(xbatcher.__file__).resolve().parents[1]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "XBATCHER_UNDER_TEST": os.path.realpath(xbatcher.__file__),
    }
    report = folder / f"{test_file}.xml"
    cmd = [sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:cacheprovider"]
    cmd += ["-c", "pytest.ini", "--rootdir", ".", f"--junitxml={report}"]
    done = subprocess.run(
        cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    return done, report


def _outcomes(report: Path) -> dict[str, list[tuple[str, str]]]:
    """``{"passed"|"failed"|"skipped": [(test id, message)]}`` from a junit XML."""
    out: dict[str, list[tuple[str, str]]] = {"passed": [], "failed": [], "skipped": []}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag, kind in (("failure", "failed"), ("error", "failed"), ("skipped", "")):
            node = case.find(tag)
            if node is None:
                continue
            message = (node.get("message") or node.text or "").strip()
            first = " | ".join(message.splitlines()[:3])
            # 0.4's xfail tests: an expected failure is a pass (pytest reports it
            # as a skip with an "xfail" type)
            if tag == "skipped" and node.get("type") == "pytest.xfail":
                out["passed"].append((test_id, first))
            else:
                out[kind or "skipped"].append((test_id, first[:400]))
            break
        else:
            out["passed"].append((test_id, ""))
    return out


def test_wheel_has_these_test_files(suite_04: Path) -> None:
    """Every test file of the wheel is run by test_04_suite (none forgotten)."""
    found = sorted(p.name for p in suite_04.glob("test_*.py"))
    assert found == sorted(TEST_FILES)


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_04_suite(suite_04: Path, test_file: str) -> None:
    """Each test of 0.4's ``test_file`` passes against this xbatcher."""
    needed = NEEDS.get(test_file)
    if needed and importlib.util.find_spec(needed) is None:
        unavailable(
            f"0.4's {test_file} needs {needed}, which is not installed "
            f'(pip install "xbatcher[test]" installs it)'
        )
    done, report = _run(suite_04, test_file)
    assert report.is_file(), f"pytest wrote no report:\n{done.stdout}\n{done.stderr}"
    outcomes = _outcomes(report)
    failed = outcomes["failed"]
    if failed:
        pytest.fail(
            f"{len(failed)} of 0.4's tests in {test_file} fail against this "
            f"xbatcher:\n"
            + "\n".join(f"  {test_id}: {message}" for test_id, message in failed),
            pytrace=False,
        )
    assert done.returncode == 0, f"pytest exited {done.returncode}:\n{done.stdout}"
    assert outcomes["passed"], f"no test ran in {test_file}:\n{done.stdout}"
    if outcomes["skipped"]:
        unavailable(
            f"{len(outcomes['skipped'])} of 0.4's tests in {test_file} skipped "
            f"(the others passed): "
            + "; ".join(f"{t}: {m}" for t, m in outcomes["skipped"])
        )
