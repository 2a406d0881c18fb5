"""The documentation's training-loop example runs, shards, and resumes exactly."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
EXAMPLE = DOCS / "examples" / "training_loop.py"
# pages whose every ```python block runs; a ```text block right after one is the
# output it must print
RUNNABLE_PAGES = [
    "README.md",
    "architecture.md",
    "caching.md",
    "etl.md",
    "loaders.md",
    "reading.md",
    "sampling.md",
    "targets.md",
    "training.md",
]


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


def snippets(page: str) -> list[tuple[str, str | None]]:
    """The page's python blocks, each with the text block that follows it (if any)."""
    path = DOCS.parent / page if page == "README.md" else DOCS / page
    text = path.read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)
    out: list[tuple[str, str | None]] = []
    for k, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        follows = blocks[k + 1] if k + 1 < len(blocks) else None
        printed = follows[1] if follows is not None and follows[0] == "text" else None
        out.append((body, printed))
    return out


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_doc_snippets_run_and_print_what_the_page_shows(page, monkeypatch):
    from xbatcher.sources import _registry

    monkeypatch.setattr(_registry, "_registered", [])  # a snippet may register
    from xbatcher.caches import _registry as _caches

    monkeypatch.setattr(_caches, "_FACTORIES", dict(_caches._FACTORIES))
    found = snippets(page)
    assert found, f"no python snippet in docs/{page}"
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for body, printed in found:  # in order, sharing names like a reader's session
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"docs/{page}", "exec"), namespace)
        if printed is not None:
            assert out.getvalue() == printed, body


def test_every_page_with_python_runs() -> None:
    """A new page with a python snippet must join RUNNABLE_PAGES (docs are tested)."""
    pages = ["README.md", *(p.name for p in sorted(DOCS.glob("*.md")))]
    with_python = [p for p in pages if snippets(p)]
    assert sorted(with_python) == sorted(RUNNABLE_PAGES)
