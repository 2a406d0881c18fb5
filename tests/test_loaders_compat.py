"""The 0.4-compatible loaders: ``xbatcher.loaders.torch`` and ``xbatcher.loaders.keras``.

Their tensors must hold the values of the generator's xarray batches (``bgen[i]``),
item ``i`` for batch ``i``, with every batch exactly once across DataLoader workers.
"""

from __future__ import annotations

import collections
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import positional, schemas
from xbatcher.errors import OptionalDependencyError, SchemaError, XbatcherWarning

torch = pytest.importorskip("torch")
from xbatcher.loaders.torch import IterableDataset, MapDataset, to_tensor  # noqa: E402

DTYPES = ("float32", "float64", "int16", "int64", "uint8", "bool", ">f4")


def _xy(n: int = 40, chunks: int | None = None) -> xr.Dataset:
    """``x(sample, feature)`` and ``y(sample) = x.sum("feature")``: aligned pairs are
    recognisable, and the first value of a batch of ``x`` names the batch."""
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    ds = xr.Dataset({"x": (("sample", "feature"), x), "y": ("sample", x.sum(axis=1))})
    return ds.chunk({"sample": chunks}) if chunks else ds


def _expected(bgen: xb.BatchGenerator, i: int) -> np.ndarray[Any, Any]:
    batch = bgen[i]
    return np.asarray((batch if isinstance(batch, xr.DataArray) else batch["v"]).values)


@st.composite
def generators(draw: st.DrawFn) -> xb.BatchGenerator:
    """A generator over positional data of a random schema, dtype and kind
    (DataArray or one-variable Dataset), in window, concat or sample mode."""
    sample_mode = draw(st.booleans())
    sizes, params = draw(schemas(sample_mode=sample_mode, max_windows=24))
    data = positional(sizes).astype(np.dtype(draw(st.sampled_from(DTYPES))))
    obj = data if draw(st.booleans()) else data.to_dataset()[["v"]]
    if draw(st.booleans()):
        obj = obj.chunk({d: max(1, n // 2) for d, n in sizes.items()})
    if sample_mode:
        params["batch_size"] = draw(st.integers(1, 5))
        params["shuffle"] = draw(st.booleans())
        params["seed"] = 0
    with warnings.catch_warnings():  # an input dim in batch_dims, without concat
        warnings.simplefilter("ignore", XbatcherWarning)
        return xb.BatchGenerator(obj, **params)


# ----------------------------------------------------------------------- values
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bgen=generators())
def test_map_dataset_items_are_the_generator_batches(bgen: xb.BatchGenerator) -> None:
    dataset = MapDataset(bgen)
    assert len(dataset) == len(bgen)
    for i in range(len(bgen)):
        expected = _expected(bgen, i)
        tensor = dataset[i]
        assert isinstance(tensor, torch.Tensor)
        assert (
            tensor.dtype
            == torch.from_numpy(expected.astype(expected.dtype.newbyteorder("="))).dtype
        )
        np.testing.assert_array_equal(tensor.numpy(), expected)
        # the xarray path (any transform) gives the same tensor as the array path
        slow = MapDataset(bgen, transform=lambda b: to_tensor(b))[i]
        assert torch.equal(slow, tensor)


def test_map_dataset_tensors_do_not_alias_the_data() -> None:
    ds = _xy()
    before = ds["x"].values.copy()
    x_gen = xb.BatchGenerator(ds["x"], {"sample": 10})
    for tensor in (MapDataset(x_gen)[0], to_tensor(x_gen[1])):
        tensor += 1000
    np.testing.assert_array_equal(ds["x"].values, before)


@pytest.mark.parametrize("chunks", [None, 10])
def test_map_dataset_pairs_and_transforms(chunks: int | None) -> None:
    ds = _xy(chunks=chunks)
    x_gen = xb.BatchGenerator(ds["x"], {"sample": 8})
    y_gen = xb.BatchGenerator(ds[["y"]], {"sample": 8})
    dataset = MapDataset(x_gen, y_gen, target_transform=lambda b: to_tensor(b * 2))
    for i in range(len(dataset)):
        x, y = dataset[torch.tensor([i])]
        np.testing.assert_array_equal(x.numpy(), x_gen[i].values)
        np.testing.assert_array_equal(y.numpy(), 2 * y_gen[i]["y"].values)


def test_iterable_dataset_in_one_process_follows_both_epochs() -> None:
    """Shuffled X and y generators with one seed stay aligned over two epochs, and
    each epoch yields the generator's batches in its order."""
    ds = _xy(n=60)
    kw: dict[str, Any] = {"batch_size": 7, "shuffle": True, "seed": 3}
    x_gen = xb.BatchGenerator(ds["x"], {"feature": 3}, **kw)
    y_gen = xb.BatchGenerator(ds["y"], {}, **kw)
    dataset = IterableDataset(x_gen, y_gen)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)
    orders = []
    for epoch in range(2):
        expected = [x_gen[i].values for i in range(len(x_gen))]
        got = list(loader)
        assert len(got) == len(expected) == len(dataset)
        for (x, y), want in zip(got, expected, strict=True):
            np.testing.assert_array_equal(x.numpy(), want)
            np.testing.assert_array_equal(y.numpy(), x.numpy().sum(axis=1))
        assert x_gen.epoch == y_gen.epoch == epoch + 1
        orders.append([float(x[0, 0]) for x, _ in got])
    assert orders[0] != orders[1]  # a new shuffle each epoch


@pytest.mark.parametrize("kind", ["DataArray", "Dataset"])
def test_iterable_dataset_two_workers_give_every_batch_once(kind: str) -> None:
    ds = _xy(n=90)
    x = ds["x"] if kind == "DataArray" else ds[["x"]]
    x_gen = xb.BatchGenerator(x, {"sample": 5})
    y_gen = xb.BatchGenerator(ds["y"], {"sample": 5})
    loader = torch.utils.data.DataLoader(
        IterableDataset(x_gen, y_gen), batch_size=None, num_workers=2
    )
    seen = collections.Counter()
    for x_batch, y_batch in loader:
        i = int(x_batch[0, 0]) // (5 * 3)  # batch i starts at value 15 * i
        seen[i] += 1
        np.testing.assert_array_equal(x_batch.numpy(), _expected_x(x_gen, i))
        np.testing.assert_array_equal(y_batch.numpy(), y_gen[i].values)
    assert seen == dict.fromkeys(range(len(x_gen)), 1)


def _expected_x(gen: xb.BatchGenerator, i: int) -> np.ndarray[Any, Any]:
    batch = gen[i]
    return np.asarray((batch if isinstance(batch, xr.DataArray) else batch["x"]).values)


# ----------------------------------------------------------------------- errors
def test_misaligned_generators_are_refused() -> None:
    ds = _xy()
    x_gen = xb.BatchGenerator(ds["x"], {"sample": 10})
    y_gen = xb.BatchGenerator(ds["y"], {"sample": 5})
    for make in (MapDataset, IterableDataset):
        with pytest.raises(
            SchemaError, match=r"X_generator has 4 batches but y_generator has 8"
        ):
            make(x_gen, y_gen)


def test_several_variables_are_refused_with_the_fix() -> None:
    bgen = xb.BatchGenerator(_xy(), {"sample": 10})
    with pytest.raises(SchemaError, match=r"2: \['x', 'y'\].*ds\['x'\]"):
        MapDataset(bgen)[0]
    with pytest.raises(SchemaError, match=r"one data variable"):
        to_tensor(bgen[0])


def test_several_indices_are_refused() -> None:
    dataset = MapDataset(xb.BatchGenerator(_xy()["x"], {"sample": 10}))
    with pytest.raises(
        NotImplementedError,
        match=r"single batch index; got a tensor of 2.*batch_size=None",
    ):
        dataset[torch.tensor([0, 1])]
    with pytest.raises(IndexError):
        dataset[4]


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [("torch", "torch", "torch"), ("keras", "tensorflow", "tensorflow")],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # import of it fails
    monkeypatch.delitem(sys.modules, f"xbatcher.loaders.{module}", raising=False)
    with pytest.raises(
        OptionalDependencyError, match=rf'pip install "xbatcher\[{extra}\]"'
    ):
        __import__(f"xbatcher.loaders.{module}")


# ----------------------------------------------------------------------- keras
def test_keras_dataset_items_are_the_generator_batches() -> None:
    tf = pytest.importorskip("tensorflow")
    from xbatcher.loaders.keras import CustomTFDataset

    ds = _xy()
    x_gen = xb.BatchGenerator(ds[["x"]], {"sample": 10})
    y_gen = xb.BatchGenerator(ds["y"], {"sample": 10})
    dataset = CustomTFDataset(x_gen, y_gen, target_transform=lambda t: t * 2)
    assert len(dataset) == len(x_gen)
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert tf.is_tensor(x) and x.dtype == tf.float64
        np.testing.assert_array_equal(x.numpy(), x_gen[i]["x"].values)
        np.testing.assert_array_equal(y.numpy(), 2 * y_gen[i].values)
    with pytest.raises(SchemaError, match=r"X_generator has 4 batches"):
        CustomTFDataset(x_gen, xb.BatchGenerator(ds["y"], {"sample": 5}))
