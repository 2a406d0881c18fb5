"""``xbatcher.testing``: 0.4's public helpers for checking batches and lengths."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import assume, given, settings

import xbatcher as xb
from conftest import positional, schemas
from xbatcher.testing import (
    get_batch_dimensions,
    validate_batch_dimensions,
    validate_generator_length,
)

SIZES_3D = {"time": 10, "y": 50, "x": 100}


def _ds(sizes: dict[str, int]) -> xr.Dataset:
    shape = tuple(sizes.values())
    return xr.Dataset(
        {"foo": (tuple(sizes), np.zeros(shape)), "bar": (tuple(sizes), np.ones(shape))}
    )


# Expected batch dims and lengths worked out by hand from docs/batching.md.
CASES: list[tuple[dict[str, int], dict[str, Any], dict[str, int], int]] = [
    ({"x": 100}, {"input_dims": {"x": 10}}, {"x": 10}, 10),
    ({"x": 100}, {"input_dims": {"x": 10}, "input_overlap": {"x": 4}}, {"x": 10}, 16),
    (SIZES_3D, {"input_dims": {"x": 5}}, {"sample": 500, "x": 5}, 20),
    (SIZES_3D, {"input_dims": {"y": 10, "x": 20}}, {"time": 10, "y": 10, "x": 20}, 25),
    (
        SIZES_3D,
        {"input_dims": {"x": 5, "y": 10}, "batch_dims": {"time": 2}},
        {"time": 2, "y": 10, "x": 5},
        500,
    ),
    (
        {"x": 100},
        {"input_dims": {"x": 5}, "concat_input_dims": True},
        {"input_batch": 20, "x_input": 5},
        1,
    ),
    (
        {"x": 100},
        {"input_dims": {"x": 10}, "input_overlap": {"x": 4}, "concat_input_dims": True},
        {"input_batch": 16, "x_input": 10},
        1,
    ),
    (
        {"x": 100},
        {"input_dims": {"x": 5}, "batch_dims": {"x": 10}, "concat_input_dims": True},
        {"input_batch": 2, "x_input": 5},
        10,
    ),
    (
        SIZES_3D,
        {
            "input_dims": {"y": 10, "x": 20},
            "batch_dims": {"time": 2},
            "concat_input_dims": True,
        },
        {"sample": 50, "y_input": 10, "x_input": 20},
        5,
    ),
]


@pytest.mark.parametrize(("sizes", "params", "dims", "length"), CASES)
def test_worked_examples(
    sizes: dict[str, int], params: dict[str, Any], dims: dict[str, int], length: int
) -> None:
    bgen = xb.BatchGenerator(_ds(sizes), **params)
    assert get_batch_dimensions(bgen) == dims
    assert list(get_batch_dimensions(bgen)) == list(dims)  # the order too
    validate_generator_length(bgen)
    assert len(bgen) == length
    for i in (0, -1):
        validate_batch_dimensions(expected_dims=dims, batch=bgen[i])


@settings(max_examples=60, deadline=None)
@given(case=schemas(max_windows=30))
def test_generator_batches_follow_the_rules(
    case: tuple[dict[str, int], dict[str, Any]],
) -> None:
    """Over 0.4 schemas without an input dim in batch_dims (the worked examples cover
    that), every batch of a generator has the dims the helpers compute."""
    sizes, params = case
    batch_dims = params["batch_dims"] or {}
    assume(not params["keep_remainder"])  # not a 0.4 argument
    assume(not set(batch_dims) & set(params["input_dims"]))
    assume(set(params["input_overlap"] or {}) <= set(params["input_dims"]))
    bgen = xb.BatchGenerator(positional(sizes, "Dataset"), **params)
    validate_generator_length(bgen)
    dims = get_batch_dimensions(bgen)
    for batch in bgen:
        validate_batch_dimensions(expected_dims=dims, batch=batch)


def test_validate_batch_dimensions_catches_sizes_names_and_order() -> None:
    da = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"), name="foo")
    validate_batch_dimensions(expected_dims={"y": 2, "x": 3}, batch=da)
    validate_batch_dimensions(expected_dims={"y": 2, "x": 3}, batch=da.to_dataset())
    with pytest.raises(
        AssertionError, match=r"lengths differ: expected \{'y': 2, 'x': 4\}"
    ):
        validate_batch_dimensions(expected_dims={"y": 2, "x": 4}, batch=da)
    with pytest.raises(AssertionError, match=r"names and/or lengths differ"):
        validate_batch_dimensions(expected_dims={"t": 2, "x": 3}, batch=da)
    with pytest.raises(AssertionError, match=r"Order differs for dimensions of 'foo'"):
        validate_batch_dimensions(expected_dims={"x": 3, "y": 2}, batch=da)


def test_validate_generator_length_catches_a_wrong_length() -> None:
    # keep_remainder adds a last window that 0.4 does not make: 3 batches, not 2
    bgen = xb.BatchGenerator(_ds({"x": 10}), input_dims={"x": 4}, keep_remainder=True)
    with pytest.raises(
        AssertionError, match=r"expected 2 batches, len\(generator\) is 3"
    ):
        validate_generator_length(bgen)
