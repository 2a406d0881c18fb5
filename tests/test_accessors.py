"""The ``.torch`` and ``.tf`` accessors and 0.4's ``_as_xarray_dataarray`` helper."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xbatcher  # registers the accessors
from xbatcher.accessors import _as_xarray_dataarray
from xbatcher.errors import OptionalDependencyError, SchemaError

# numpy dtypes every framework here converts (torch has no datetime or str tensors)
DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8",
    "float16", "float32", "float64", "complex64", "complex128",
]  # fmt: skip


@st.composite
def data_arrays(draw: st.DrawFn) -> xr.DataArray:
    """A DataArray of 0-3 dims, any supported dtype and byte order, any values."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">")  # as NetCDF files often store them
    values = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3)))
    dims = tuple(f"d{i}" for i in range(values.ndim))
    return xr.DataArray(values, dims=dims, name="foo")


def _same(tensor_values: np.ndarray, da: xr.DataArray) -> None:
    expected = da.values
    assert tensor_values.dtype == expected.dtype.newbyteorder("=")
    assert tensor_values.shape == expected.shape
    np.testing.assert_array_equal(tensor_values, expected)  # NaN == NaN here


def test_as_xarray_dataarray() -> None:
    da = xr.DataArray(np.arange(4), dims="x", name="foo")
    assert _as_xarray_dataarray(da) is da
    xr.testing.assert_identical(_as_xarray_dataarray(da.to_dataset()), da)
    both = xr.Dataset({"foo": da, "bar": da * 2})
    with pytest.raises(SchemaError, match=r"2: \['foo', 'bar'\]. Batch one variable"):
        _as_xarray_dataarray(both)


# ----------------------------------------------------------------------- torch
@settings(max_examples=60, deadline=None)
@given(da=data_arrays(), as_dataset=st.booleans())
def test_torch_round_trips_dtype_and_values(da: xr.DataArray, as_dataset: bool) -> None:
    torch = pytest.importorskip("torch")
    obj = da.to_dataset() if as_dataset else da
    for tensor, names in (
        (obj.torch.to_tensor(), (None,) * da.ndim),
        (obj.torch.to_named_tensor(), da.dims),
    ):
        assert isinstance(tensor, torch.Tensor)
        assert tensor.names == names
        _same(tensor.numpy(), da)


def test_torch_tensor_is_a_copy_and_ops_give_plain_tensors() -> None:
    torch = pytest.importorskip("torch")
    da = xr.DataArray(np.zeros((2, 3), dtype="float32"), dims=("y", "x"))
    tensor = da.torch.to_named_tensor()
    tensor += 1
    assert (da.values == 0).all()
    assert type(tensor * 2) is torch.Tensor
    assert type(torch.from_numpy(np.ones(2)) + tensor[0, :2]) is torch.Tensor
    again = pickle.loads(pickle.dumps(tensor))
    assert again.names == ("y", "x") and torch.equal(again, tensor)


def test_torch_computes_dask_data() -> None:
    pytest.importorskip("torch")
    da = xr.DataArray(np.arange(12.0).reshape(3, 4), dims=("y", "x")).chunk({"x": 2})
    np.testing.assert_array_equal(da.torch.to_tensor().numpy(), da.values)


# ----------------------------------------------------------------------- tensorflow
@settings(max_examples=30, deadline=None)
@given(da=data_arrays(), as_dataset=st.booleans())
def test_tf_round_trips_dtype_and_values(da: xr.DataArray, as_dataset: bool) -> None:
    tf = pytest.importorskip("tensorflow")
    tensor = (da.to_dataset() if as_dataset else da).tf.to_tensor()
    assert tf.is_tensor(tensor)
    _same(tensor.numpy(), da)


# ----------------------------------------------------------------------- laziness
def test_accessors_import_no_framework(run_python) -> None:
    code = (
        "import sys, numpy as np, xarray as xr, xbatcher\n"
        "da = xr.DataArray(np.zeros(2), dims='x')\n"
        "da.torch, da.tf, da.to_dataset(name='a').torch\n"
        "loaded = {'torch', 'tensorflow', 'keras'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("accessor", "framework", "extra"),
    [("torch", "torch", "torch"), ("tf", "tensorflow", "tensorflow")],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, accessor: str, framework: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # import of it fails
    for module in ("torch", "keras", "tensorflow"):
        monkeypatch.delitem(sys.modules, f"xbatcher.loaders.{module}", raising=False)
    da = xr.DataArray(np.zeros(2), dims="x")
    with pytest.raises(
        OptionalDependencyError, match=rf'pip install "xbatcher\[{extra}\]"'
    ):
        getattr(da, accessor).to_tensor()


def test_batch_accessor_takes_exactly_the_generator_arguments() -> None:
    """``obj.batch.generator`` has BatchGenerator's signature (without ``ds``),
    kept in one place: a new generator argument reaches the accessor by itself."""
    import inspect

    da = xr.DataArray(np.zeros((4, 10)), dims=("t", "x"))
    generator_params = list(inspect.signature(xbatcher.BatchGenerator).parameters)
    assert (
        list(inspect.signature(da.batch.generator).parameters) == generator_params[1:]
    )
    assert inspect.signature(da.batch.generator).parameters == dict(
        list(inspect.signature(xbatcher.BatchGenerator).parameters.items())[1:]
    )


def test_batch_accessor_passes_every_argument_on() -> None:
    ds = xr.Dataset({"v": ("x", [1.0, np.nan, 3.0, 4.0, 5.0, 6.0])})
    via_accessor = ds.batch.generator(
        {"x": 2}, batch_size=2, skip_nan="v", min_valid=0.5
    )
    direct = xbatcher.BatchGenerator(
        ds, {"x": 2}, batch_size=2, skip_nan="v", min_valid=0.5
    )
    assert via_accessor.sample_ids().tolist() == direct.sample_ids().tolist()
    assert via_accessor.sample_ids().tolist() == [0, 1, 2]  # window 0 half valid
    assert ds.batch.generator(
        {"x": 2}, batch_size=2, skip_nan="v"
    ).sample_ids().tolist() == [1, 2]
    with pytest.raises(TypeError, match="no_such_argument"):
        ds.batch.generator({"x": 2}, no_such_argument=1)
