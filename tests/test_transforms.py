"""Per-batch transforms: values, composition, pickling, the 2-D feature view."""

from __future__ import annotations

import pickle

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import InputTypeError, SchemaError
from xbatcher.transforms import Cast, Compose, FillNaN, Stack, ToFeatures, to_features

arrays_with_nan = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
    elements=st.floats(-1e6, 1e6) | st.just(np.nan),
)


@settings(max_examples=50, deadline=None)
@given(a=arrays_with_nan, value=st.floats(-10, 10))
def test_fill_nan_and_mask_channel(a: np.ndarray, value: float) -> None:
    nan = np.isnan(a)
    filled = FillNaN(value)(a)
    np.testing.assert_array_equal(filled[nan], value)
    np.testing.assert_array_equal(filled[~nan], a[~nan])
    both = FillNaN(value, mask=True)(a)
    assert both.shape == (*a.shape, 2)
    np.testing.assert_array_equal(both[..., 0], filled)
    np.testing.assert_array_equal(both[..., 1], (~nan).astype(float))
    d = FillNaN(value, mask=True)({"v": a, "i": np.ones(3, np.int32)})
    assert list(d) == ["v", "v_mask", "i", "i_mask"]
    np.testing.assert_array_equal(d["v_mask"], (~nan).astype(float))
    np.testing.assert_array_equal(d["i"], 1)  # integers hold no NaN


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 6),
    shapes=st.lists(
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), min_size=1, max_size=3
    ),
)
def test_to_features_is_sample_major(n: int, shapes: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    batch = {f"v{i}": rng.random((n, *s)) for i, s in enumerate(shapes)}
    x = to_features(batch)
    widths = [int(np.prod(s)) for s in shapes]
    assert x.shape == (n, sum(widths))
    for j in range(n):  # row j is sample j's values, variable after variable
        want = np.concatenate([batch[f"v{i}"][j].ravel() for i in range(len(shapes))])
        np.testing.assert_array_equal(x[j], want)
    order = list(reversed(list(batch)))
    assert ToFeatures(order)(batch)[:, : widths[-1]].tolist() == (
        batch[order[0]].reshape(n, -1).tolist()
    )


def test_compose_cast_stack_on_generator_batches() -> None:
    ds = xr.Dataset(
        {
            "u": (("t", "x"), np.arange(40.0).reshape(4, 10)),
            "v": (("t", "x"), -np.arange(40.0).reshape(4, 10)),
        }
    )
    bgen = xb.BatchGenerator(ds, {"x": 5}, batch_size=3)
    t = Compose(Stack(["v", "u"]), Cast("float32"))
    tb = xb.TransformedBatches(bgen.arrays, t)
    assert len(tb) == len(bgen)
    for got, raw in zip(tb, bgen.arrays, strict=True):
        assert got.dtype == np.float32 and got.shape == (*raw["u"].shape, 2)
        np.testing.assert_array_equal(got[..., 0], raw["v"])
        np.testing.assert_array_equal(got[..., 1], raw["u"])
    assert bgen.epoch == 1  # iterating went through bgen.arrays (its epochs)
    np.testing.assert_array_equal(tb[0], t(bgen.arrays[0]))
    again = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(again(bgen.arrays[0]), tb[0])


def test_errors() -> None:
    with pytest.raises(InputTypeError, match="Compose transform 1 must be a callable"):
        Compose(FillNaN(), 3)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="Stack needs a dict batch"):
        Stack()(np.zeros(3))
    with pytest.raises(SchemaError, match=r"Stack variables \['w'\] are not in"):
        Stack(["w"])({"u": np.zeros(2)})
    with pytest.raises(SchemaError, match="same number of samples"):
        to_features({"a": np.zeros((2, 3)), "b": np.zeros((3,))})
    with pytest.raises(InputTypeError, match="transform must be a callable"):
        xb.TransformedBatches([], None)  # type: ignore[arg-type]
