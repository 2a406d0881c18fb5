"""The documentation's training-loop example runs, shards, and resumes exactly."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "training_loop.py"


def load_example():
    spec = importlib.util.spec_from_file_location("training_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["training_loop"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("stop_after", [37, 64])
def test_crash_and_resume_equals_uninterrupted(
    tmp_path, monkeypatch, world, stop_after
):
    example = load_example()
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        full = example.main(["--epochs", "3"])
        ckpt = tmp_path / f"ckpt{world}.json"
        crashed = example.main(
            [
                "--epochs",
                "3",
                "--checkpoint",
                str(ckpt),
                "--stop-after",
                str(stop_after),
            ]
        )
        assert crashed["crashed"] == 1.0
        resumed = example.main(["--epochs", "3", "--checkpoint", str(ckpt)])
        assert resumed["crashed"] == 0.0
        # same updates in the same order: bit-identical parameters
        assert (resumed["w"], resumed["b"]) == (full["w"], full["b"])
        assert crashed["steps"] + resumed["steps"] == full["steps"]
        assert abs(full["w"] - 2.0) < 0.05 and abs(full["b"] - 0.5) < 0.05


# docs whose ```python blocks run as they stand (each page's blocks in order, in one
# namespace)
RUNNABLE_DOCS = ["reading.md"]


@pytest.mark.parametrize("page", RUNNABLE_DOCS)
def test_doc_snippets_run(page, monkeypatch):
    from xbatcher.sources import _registry

    monkeypatch.setattr(_registry, "_registered", [])  # a snippet may register
    text = (EXAMPLE.parents[1] / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python snippet"
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
