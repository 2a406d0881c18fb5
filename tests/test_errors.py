"""Bad inputs raise typed errors whose messages name the value, the allowed values and a fix."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import xbatcher as xb
from conftest import make_dataarray, make_dataset
from xbatcher.errors import (
    BatchIndexError,
    DimensionError,
    InputTypeError,
    SchemaError,
    XbatcherError,
)

# A message "names a fix" when it tells the user what to do.
FIX_WORDS = re.compile(
    r"\b(use|fix|remove|pass|add|drop|select|rename|wrap|broadcast|give|choose|set|example)\b",
    re.IGNORECASE,
)


def check_message(
    exc: pytest.ExceptionInfo[BaseException], *parts: str, fix: bool = True
) -> None:
    """The message holds every part (values, allowed values) and, if asked, a fix."""
    msg = str(exc.value)
    for part in parts:
        assert part in msg, f"{part!r} missing from message: {msg}"
    if fix:
        assert FIX_WORDS.search(msg), f"no fix suggested in message: {msg}"


def test_error_hierarchy() -> None:
    assert issubclass(SchemaError, ValueError)
    assert issubclass(SchemaError, XbatcherError)
    assert issubclass(DimensionError, KeyError)
    assert issubclass(DimensionError, XbatcherError)
    assert issubclass(InputTypeError, TypeError)
    assert issubclass(InputTypeError, XbatcherError)


# --------------------------------------------------------------------------- dims
@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"input_dims": {"longitude": 4}}, "input_dims"),
        (
            {"input_dims": {"lon": 4}, "input_overlap": {"longitude": 1}},
            "input_overlap",
        ),
        ({"input_dims": {"lon": 4}, "batch_dims": {"longitude": 2}}, "batch_dims"),
    ],
)
@pytest.mark.parametrize("kind", ["DataArray", "Dataset"])
def test_unknown_dim(params: dict[str, Any], where: str, kind: str) -> None:
    obj = make_dataarray() if kind == "DataArray" else make_dataset()
    with pytest.raises(DimensionError, match=r"'longitude'") as exc:
        xb.BatchGenerator(obj, **params)
    check_message(exc, where, "'time'", "'level'", "'lat'", "'lon'")
    # still a KeyError for code written against 0.4, with a readable message
    assert isinstance(exc.value, KeyError)
    assert not str(exc.value).startswith('"')


# --------------------------------------------------------------------------- window sizes
@pytest.mark.parametrize("bad", [0, -3])
@pytest.mark.parametrize("where", ["input_dims", "batch_dims"])
def test_window_not_positive(bad: int, where: str) -> None:
    params: dict[str, Any] = {"input_dims": {"lon": 4}}
    params[where] = {**params.get(where, {}), "lat": bad}
    with pytest.raises(SchemaError, match=rf"{where}\['lat'\].*{bad}") as exc:
        xb.BatchGenerator(make_dataarray(), **params)
    check_message(exc, str(bad))


@pytest.mark.parametrize("bad", [3.0, 2.5, True, "4", None, np.float64(3.0)])
def test_window_not_an_int(bad: Any) -> None:
    # Only integers (Python or numpy) are windows; floats and bools are rejected even
    # when integral, so that a silent int() conversion never hides a bug.
    with pytest.raises(
        InputTypeError, match=rf"input_dims\['lon'\].*{re.escape(repr(bad))}"
    ) as exc:
        xb.BatchGenerator(make_dataarray(), input_dims={"lon": bad})
    check_message(exc, type(bad).__name__)


@pytest.mark.parametrize("good", [np.int64(4), np.int32(4), np.uint8(4), np.intp(4)])
def test_numpy_int_windows_accepted(good: Any) -> None:
    bgen = xb.BatchGenerator(
        make_dataarray(), input_dims={"lon": good}, input_overlap={"lon": np.int64(1)}
    )
    assert len(bgen) == 3  # starts 0, 3, 6 in 12 points
    assert bgen.input_dims == {"lon": 4}
    assert type(bgen.input_dims["lon"]) is int
    assert type(bgen.input_overlap["lon"]) is int
    # the schema stores plain ints, so it serialises
    assert xb.BatchSchema.from_json(bgen.schema.to_json()) == bgen.schema


@pytest.mark.parametrize("where", ["input_dims", "batch_dims"])
def test_window_larger_than_dim(where: str) -> None:
    params: dict[str, Any] = {"input_dims": {"lat": 2}}
    params[where] = {**params.get(where, {}), "lon": 13}
    with pytest.raises(SchemaError, match=rf"{where}\['lon'\].*13") as exc:
        xb.BatchGenerator(make_dataarray(), **params)
    check_message(exc, "(12)")  # the dimension size: the largest allowed value


def test_input_dims_not_a_mapping() -> None:
    with pytest.raises(InputTypeError, match="input_dims") as exc:
        xb.BatchGenerator(make_dataarray(), input_dims=[("lon", 4)])  # type: ignore[arg-type]
    check_message(exc, "list")


# --------------------------------------------------------------------------- overlaps
def test_overlap_negative() -> None:
    with pytest.raises(SchemaError, match=r"input_overlap\['lon'\].*-1") as exc:
        xb.BatchGenerator(
            make_dataarray(), input_dims={"lon": 4}, input_overlap={"lon": -1}
        )
    check_message(exc, "0")


@pytest.mark.parametrize("bad", [4, 5])
def test_overlap_not_less_than_window(bad: int) -> None:
    with pytest.raises(SchemaError, match=rf"input_overlap\['lon'\].*{bad}") as exc:
        xb.BatchGenerator(
            make_dataarray(), input_dims={"lon": 4}, input_overlap={"lon": bad}
        )
    check_message(exc, "[0, 3]", "4")  # allowed range and the window


def test_overlap_not_an_int() -> None:
    with pytest.raises(InputTypeError, match=r"input_overlap\['lon'\].*1\.0"):
        xb.BatchGenerator(
            make_dataarray(), input_dims={"lon": 4}, input_overlap={"lon": 1.0}
        )


def test_overlap_on_unsliced_dim() -> None:
    with pytest.raises(SchemaError, match=r"input_overlap\['time'\]") as exc:
        xb.BatchGenerator(
            make_dataarray(), input_dims={"lon": 4}, input_overlap={"time": 1}
        )
    check_message(exc, "not sliced", "'lon'")


# --------------------------------------------------------------------------- the data
@pytest.mark.parametrize(
    ("bad", "type_name"),
    [
        (np.zeros((4, 5)), "ndarray"),
        ({"a": np.zeros(3)}, "dict"),
        (pd.DataFrame({"a": [1, 2]}), "DataFrame"),
        (None, "NoneType"),
    ],
)
def test_ds_not_xarray(bad: Any, type_name: str) -> None:
    with pytest.raises(InputTypeError, match=rf"ds.*{type_name}") as exc:
        xb.BatchGenerator(bad, input_dims={"x": 2})
    check_message(exc, "Dataset", "DataArray")


def test_empty_dataset() -> None:
    ds = xr.Dataset(coords={"x": np.arange(10)})
    with pytest.raises(SchemaError, match="data variable") as exc:
        xb.BatchGenerator(ds, input_dims={"x": 2})
    check_message(exc)


@pytest.mark.parametrize("input_dims", [{"x": 2}, {"t": 1}])
def test_zero_length_dim(input_dims: dict[str, int]) -> None:
    da = xr.DataArray(np.zeros((0, 10)), dims=("t", "x"))
    with pytest.raises(SchemaError, match="'t'") as exc:
        xb.BatchGenerator(da, input_dims=input_dims)
    check_message(exc, "0")


# --------------------------------------------------------------------------- indexing
@pytest.mark.parametrize(
    "params", [{"input_dims": {"lon": 4}}, {"input_dims": {"lon": 4}, "batch_size": 5}]
)
def test_index_out_of_range(params: dict[str, Any]) -> None:
    bgen = xb.BatchGenerator(make_dataarray(), **params)
    n = len(bgen)
    for bad in (n, n + 7, -n - 1, np.int64(n)):
        number = rf"(?<![\w-]){int(bad)}(?!\d)"
        with pytest.raises(IndexError, match=number) as exc:
            bgen[bad]
        check_message(exc, str(n), str(-n), str(n - 1), fix=False)
        with pytest.raises(IndexError, match=number):
            bgen.arrays[bad]
        # an xbatcher error, still matched by code written for 0.4
        assert isinstance(exc.value, BatchIndexError | XbatcherError)
        assert isinstance(exc.value, XbatcherError)
        assert "list index out of range" in str(exc.value)
        with pytest.raises(IndexError, match="list index out of range"):
            bgen.batch_units(bad)
    bgen[n - 1], bgen[-n]  # the ends of the valid range work


@pytest.mark.parametrize("bad", [1.5, 1.0, "0", None, [0, 1]])
def test_index_not_an_int(bad: Any) -> None:
    bgen = xb.BatchGenerator(make_dataarray(), input_dims={"lon": 4})
    with pytest.raises(TypeError, match=re.escape(repr(bad))) as exc:
        bgen[bad]
    check_message(exc, type(bad).__name__)
    # 0.4 raised NotImplementedError for a list of indices; code catching it still works
    assert isinstance(exc.value, NotImplementedError | XbatcherError)
    assert isinstance(exc.value, NotImplementedError)
    with pytest.raises(NotImplementedError):
        bgen.arrays[bad]
    with pytest.raises(TypeError):
        bgen.arrays[bad]


# --------------------------------------------------------------------------- batch_size
@pytest.mark.parametrize("bad", [0, -4])
def test_batch_size_not_positive(bad: int) -> None:
    with pytest.raises(SchemaError, match=rf"batch_size.*{bad}") as exc:
        xb.BatchGenerator(make_dataarray(), input_dims={"lon": 4}, batch_size=bad)
    check_message(exc, "1")


@pytest.mark.parametrize("bad", [2.0, "8", True])
def test_batch_size_not_an_int(bad: Any) -> None:
    with pytest.raises(InputTypeError, match=rf"batch_size.*{re.escape(repr(bad))}"):
        xb.BatchGenerator(make_dataarray(), input_dims={"lon": 4}, batch_size=bad)


def test_batch_size_with_concat() -> None:
    with pytest.raises(SchemaError, match="batch_size") as exc:
        xb.BatchGenerator(
            make_dataarray(),
            input_dims={"lon": 4},
            concat_input_dims=True,
            batch_size=8,
        )
    check_message(exc, "concat_input_dims", "8")


# --------------------------------------------------------------------------- wrong types
def _gen(**kw: Any) -> xb.BatchGenerator:
    return xb.BatchGenerator(make_dataarray(), input_dims={"lon": 4}, **kw)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("seed", lambda: _gen(batch_size=2, shuffle=True, seed="42")),
    ("seed", lambda: _gen(batch_size=2, shuffle=True, seed=4.0)),
    ("seed", lambda: xb.ShuffleSampler(seed="42")),
    ("rank", lambda: _gen(batch_size=2).shard("0", 2)),
    ("world_size", lambda: _gen(batch_size=2).shard(0, "2")),
    ("world_size", lambda: xb.Shard(0, 2.0)),
    ("epoch", lambda: _gen().set_epoch(1.5)),
    ("batch_size", lambda: _gen(batch_size="8")),
    ("input_overlap", lambda: _gen(input_overlap={"lon": "1"})),
]


@pytest.mark.parametrize(("name", "make"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_a_type_error(name: str, make: Any) -> None:
    """The same mistake raises the same type everywhere (one validation module)."""
    with pytest.raises(TypeError) as exc:
        make()
    assert isinstance(exc.value, InputTypeError)
    assert not isinstance(exc.value, ValueError)
    assert name in str(exc.value) and "of type" in str(exc.value)


@pytest.mark.parametrize(
    "name", ["drop_last", "concat_input_dims", "keep_remainder", "preload_batch"]
)
@pytest.mark.parametrize("bad", ["False", "no", "", 0, 1, None])
def test_bool_options_refuse_strings_and_other_types(name: str, bad: Any) -> None:
    # bool("False") is True: taking a string would silently turn the option on
    kwargs: dict[str, Any] = {name: bad}
    if name == "drop_last":
        kwargs["batch_size"] = 5
    with pytest.raises(
        InputTypeError, match=rf"{name} must be True or False; got "
    ) as e:
        _gen(**kwargs)
    check_message(e, repr(bad), type(bad).__name__)


@pytest.mark.parametrize(
    "name", ["drop_last", "concat_input_dims", "keep_remainder", "preload_batch"]
)
@pytest.mark.parametrize("good", [True, False, np.True_, np.False_])
def test_bool_options_take_python_and_numpy_bools(name: str, good: Any) -> None:
    kwargs: dict[str, Any] = {name: good}
    if name == "drop_last":
        kwargs["batch_size"] = 5
    bgen = _gen(**kwargs)
    value = getattr(bgen, name, None)
    if value is None:
        value = getattr(bgen.schema, name)
    assert value is bool(good)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"mask": "land"}, "'land'"), ({"skip_nan": ["air", "sst"]}, "'sst'")],
)
def test_filter_naming_a_missing_variable(kwargs: dict[str, Any], name: str) -> None:
    # xbatcher's typed error (a KeyError) listing the variables, not xarray's
    ds = make_dataset()
    with pytest.raises(DimensionError, match=name) as exc:
        xb.BatchGenerator(ds, input_dims={"lon": 4}, batch_size=4, **kwargs)
    assert isinstance(exc.value, KeyError)
    check_message(exc, "'air'", "'mask'", fix=False)


def test_seed_with_a_sampler_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"seed=1 and sampler=ShuffleSampler") as e:
        _gen(batch_size=2, seed=1, sampler=xb.ShuffleSampler(seed=2))
    check_message(e, "seed=", "ShuffleSampler(seed=2)")


def test_docstring_describes_the_working_cache() -> None:
    assert "NotImplementedError" not in (xb.BatchGenerator.__doc__ or "")
    cache: dict[str, Any] = {}
    bgen = _gen(cache=cache)
    xr.testing.assert_identical(bgen[1], bgen[1])
    assert cache  # the batch was stored
