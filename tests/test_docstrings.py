"""Run the Examples sections of the public modules' docstrings as doctests."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

MODULES = [
    "xbatcher._blocks",
    "xbatcher._permutation",
    "xbatcher.accessors",
    "xbatcher.distributed",
    "xbatcher.engine",
    "xbatcher.generator",
    "xbatcher.layout",
    "xbatcher.loaders.jax",
    "xbatcher.loaders.torch",
    "xbatcher.lru",
    "xbatcher.materialize",
    "xbatcher.normalize",
    "xbatcher.plan",
    "xbatcher.prefetch",
    "xbatcher.reader",
    "xbatcher.sampling",
    "xbatcher.schema",
    "xbatcher.sources._base",
    "xbatcher.sources._registry",
    "xbatcher.splits",
    "xbatcher.testing",
    "xbatcher.transforms",
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
        "xbatcher.engine",
        "xbatcher.generator",
        "xbatcher.lru",
        "xbatcher.materialize",
        "xbatcher.normalize",
        "xbatcher.plan",
        "xbatcher.schema",
        "xbatcher.sampling",
        "xbatcher.reader",
        "xbatcher.sources._registry",
        "xbatcher._permutation",
        "xbatcher._blocks",
        "xbatcher.splits",
    }:
        assert result.attempted > 0, f"{name} should have runnable Examples"


@pytest.mark.parametrize("name", ["xbatcher.plan", "xbatcher.engine"])
def test_plan_and_engine_public_api_is_documented(name: str) -> None:
    """Every public name of the plan and engine contracts, and every public method
    of their classes, has a docstring (they are what loaders and caches call)."""
    module = importlib.import_module(name)
    assert module.__doc__
    missing = []
    for attr in module.__all__:
        obj = getattr(module, attr)
        if not (isinstance(obj, type) or inspect.isfunction(obj)):
            continue  # type aliases
        if not obj.__doc__:
            missing.append(attr)
        members = vars(obj).items() if isinstance(obj, type) else []
        for member, value in members:
            api = callable(value) or isinstance(value, property)
            if api and not member.startswith("_") and not value.__doc__:
                missing.append(f"{attr}.{member}")
    assert not missing, f"undocumented public API in {name}: {missing}"
