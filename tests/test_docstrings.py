"""Run the Examples sections of the public modules' docstrings as doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "xbatcher._blocks",
    "xbatcher._permutation",
    "xbatcher.accessors",
    "xbatcher.generator",
    "xbatcher.layout",
    "xbatcher.loaders.torch",
    "xbatcher.lru",
    "xbatcher.reader",
    "xbatcher.sampling",
    "xbatcher.schema",
    "xbatcher.sources._base",
    "xbatcher.sources._registry",
    "xbatcher.splits",
    "xbatcher.testing",
    "xbatcher.validity",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    if name in {
        "xbatcher.generator",
        "xbatcher.lru",
        "xbatcher.schema",
        "xbatcher.sampling",
        "xbatcher.reader",
        "xbatcher.sources._registry",
        "xbatcher._permutation",
        "xbatcher._blocks",
        "xbatcher.splits",
    }:
        assert result.attempted > 0, f"{name} should have runnable Examples"
