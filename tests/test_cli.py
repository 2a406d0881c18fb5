"""Tests of the ``xbatcher`` command line (``cli.py``) and the demo it runs
(``demo.py``: ``make_era5_like``, ``run_demo``)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import xarray as xr

from xbatcher import BatchGenerator
from xbatcher._version import __version__
from xbatcher.cli import main
from xbatcher.demo import make_era5_like, run_demo

# Small sizes: 2 time blocks of 8 x 2 lat windows x 3 lon windows of 32 = 12 batches.
SMALL = ["--time", "16", "--lat", "64", "--lon", "96", "--no-progress"]
REPORT = re.compile(
    r"^(?P<label>[^:\n]+): (?P<n>\d+) batches, (?P<gb>[\d.]+) GB in (?P<s>[\d.]+) s "
    r"-> (?P<rate>[\d.]+|inf) batches/s, (?P<gbps>[\d.]+|inf) GB/s$",
    re.MULTILINE,
)


def _reports(text: str) -> dict[str, re.Match[str]]:
    return {m["label"]: m for m in REPORT.finditer(text)}


# ---------------------------------------------------------------- make_era5_like


def test_make_era5_like_layout() -> None:
    ds = make_era5_like(n_time=10, n_lat=19, n_lon=36, seed=1)
    assert dict(ds.sizes) == {"time": 10, "lat": 19, "lon": 36}
    assert list(ds.data_vars) == ["t2m", "u10", "v10", "msl"]
    for name, var in ds.data_vars.items():
        assert var.dims == ("time", "lat", "lon"), name
        assert var.dtype == np.float32, name
        assert {"units", "long_name", "standard_name"} <= var.attrs.keys(), name
        assert np.isfinite(var.values).all(), name
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert (np.diff(ds.time.values) == np.timedelta64(12, "h")).all()
    assert (np.diff(ds.lat.values) < 0).all()
    assert (ds.lat.values[0], ds.lat.values[-1]) == (90.0, -90.0)
    assert (np.diff(ds.lon.values) > 0).all()
    assert ds.lon.values[0] == 0.0
    assert ds.lon.values[-1] < 360.0
    assert np.allclose(np.diff(ds.lon.values), 10.0)
    assert ds.lat.attrs["units"] == "degrees_north"
    assert ds.lon.attrs["units"] == "degrees_east"


def test_make_era5_like_values_are_plausible() -> None:
    ds = make_era5_like(n_time=8, n_lat=37, n_lon=72, seed=0)
    assert 180 < float(ds.t2m.min()) < float(ds.t2m.max()) < 330
    assert 95_000 < float(ds.msl.min()) < float(ds.msl.max()) < 106_000
    assert float(abs(ds.u10).max()) < 40
    assert float(abs(ds.v10).max()) < 40
    # warmer at the equator than at the poles
    zonal = ds.t2m.mean(["time", "lon"])
    assert float(zonal.sel(lat=0)) > float(zonal.sel(lat=90)) + 20
    assert float(zonal.sel(lat=0)) > float(zonal.sel(lat=-90)) + 20


def test_make_era5_like_is_deterministic() -> None:
    a = make_era5_like(n_time=3, n_lat=10, n_lon=12, seed=5)
    b = make_era5_like(n_time=3, n_lat=10, n_lon=12, seed=5)
    c = make_era5_like(n_time=3, n_lat=10, n_lon=12, seed=6)
    xr.testing.assert_identical(a, b)
    assert not a.t2m.equals(c.t2m)


def test_make_era5_like_freq() -> None:
    ds = make_era5_like(n_time=3, n_lat=3, n_lon=4, freq="1D", start="2001-02-03")
    assert str(ds.time.values[0])[:10] == "2001-02-03"
    assert (np.diff(ds.time.values) == np.timedelta64(1, "D")).all()


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((0, 3, 3), "n_time must be an int >= 1; got 0"),
        ((3, 1, 3), "n_lat must be an int >= 2; got 1"),
        ((3, 3, 0), "n_lon must be an int >= 1; got 0"),
    ],
)
def test_make_era5_like_rejects_bad_sizes(
    sizes: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_era5_like(*sizes)


# ---------------------------------------------------------------------- run_demo


def test_run_demo_stats_match_generator() -> None:
    out = io.StringIO()
    stats = run_demo(16, 64, 96, progress=False, file=out)
    ds = make_era5_like(16, 64, 96)
    bgen = BatchGenerator(ds, input_dims={"lat": 32, "lon": 32}, batch_dims={"time": 8})
    assert stats["n_batches"] == len(bgen) == 2 * 2 * 3
    assert stats["epochs"] == 1
    # every batch holds 4 float32 variables of 8 x 32 x 32
    assert stats["batch_bytes"] == len(bgen) * 4 * 8 * 32 * 32 * 4
    assert stats["dataset_bytes"] == 4 * 16 * 64 * 96 * 4
    assert stats["seconds"] > 0
    assert stats["gb_per_s"] == pytest.approx(
        stats["batch_bytes"] / stats["seconds"] / 1e9
    )
    assert stats["batches_per_s"] == pytest.approx(12 / stats["seconds"])
    assert "xarray_seconds" not in stats


def test_run_demo_epochs_and_xarray_path() -> None:
    out = io.StringIO()
    stats = run_demo(16, 64, 64, epochs=2, xarray=True, progress=False, file=out)
    assert stats["n_batches"] == 8
    assert stats["epochs"] == 2
    assert stats["xarray_seconds"] > 0
    assert stats["xarray_gb_per_s"] > 0
    reports = _reports(out.getvalue())
    assert int(reports["xarray path (for batch in bgen)"]["n"]) == 16


def test_run_demo_rejects_zero_epochs() -> None:
    with pytest.raises(ValueError, match="epochs must be an int >= 1; got 0"):
        run_demo(8, 32, 32, epochs=0, progress=False, file=io.StringIO())


def test_run_demo_progress_bar_goes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_demo(8, 32, 64, progress=True)
    captured = capsys.readouterr()
    assert "arrays epoch 1/1" in captured.err
    assert "arrays epoch" not in captured.out


# ------------------------------------------------------------------- xbatcher demo


def test_demo_prints_consistent_stats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL]) == 0
    out = capsys.readouterr().out
    ds = make_era5_like(16, 64, 96)
    bgen = BatchGenerator(ds, input_dims={"lat": 32, "lon": 32}, batch_dims={"time": 8})
    report = _reports(out)["array fast path (bgen.arrays)"]
    assert int(report["n"]) == len(bgen) == 12
    assert float(report["gbps"]) > 0
    assert float(report["rate"]) > 0
    assert float(report["gb"]) == pytest.approx(
        12 * 4 * 8 * 32 * 32 * 4 / 1e9, abs=1e-3
    )
    assert "time=16 x lat=64 x lon=96" in out
    assert "batch_dims={'time': 8}, shuffle=False): 12 batches" in out
    # layout of batch 0
    assert "batch 0 as xarray.Dataset: dims {'time': 8, 'lat': 32, 'lon': 32}" in out
    assert "t2m      (time, lat, lon)  float32  (8, 32, 32)" in out
    assert "dict of 4 float32 ndarrays (t2m, u10, v10, msl), each (8, 32, 32)" in out
    assert "xarray path" not in out


def test_demo_sample_mode(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", *SMALL, "--batch-size", "5", "--shuffle", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ds = make_era5_like(16, 64, 96, seed=3)
    bgen = BatchGenerator(
        ds, input_dims={"lat": 32, "lon": 32}, batch_size=5, shuffle=True, seed=3
    )
    report = _reports(out)["array fast path (bgen.arrays)"]
    assert int(report["n"]) == len(bgen)
    # 16 time steps x 6 windows = 96 samples of 32 x 32, 4 float32 variables each
    assert float(report["gb"]) == pytest.approx(96 * 4 * 32 * 32 * 4 / 1e9, abs=1e-3)
    assert float(report["gbps"]) > 0
    assert "batch_size=5, shuffle=True" in out


def test_demo_xarray_and_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL, "--xarray", "--epochs", "2"]) == 0
    reports = _reports(capsys.readouterr().out)
    arrays = reports["array fast path (bgen.arrays)"]
    xarray = reports["xarray path (for batch in bgen)"]
    assert int(arrays["n"]) == int(xarray["n"]) == 2 * 12
    assert arrays["gb"] == xarray["gb"]
    assert float(xarray["gbps"]) > 0


def test_demo_window_and_batch_time(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", *SMALL, "--window", "16", "--batch-time", "4"]
    assert main(argv) == 0
    report = _reports(capsys.readouterr().out)["array fast path (bgen.arrays)"]
    assert int(report["n"]) == (16 // 4) * (64 // 16) * (96 // 16)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--time", "0"], "expected an integer >= 1; got 0"),
        (["demo", "--lat", "x"], "expected an integer; got 'x'"),
        (["demo", "--epochs", "-1"], "expected an integer >= 1; got -1"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"xbatcher {__version__}"


# --------------------------------------------------------------- xbatcher versions


def test_versions_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^numpy: +{re.escape(np.__version__)}$", out, re.MULTILINE)
    assert re.search(rf"^xbatcher: +{re.escape(__version__)}$", out, re.MULTILINE)


def test_python_dash_m_versions(run_python) -> None:
    result = run_python("-m", "xbatcher", "versions")
    assert result.returncode == 0, result.stderr
    assert np.__version__ in result.stdout


def test_demo_from_a_zarr_store(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--zarr PATH`` writes the dataset to a store and batches it lazily from disk
    (through the direct Zarr reader), chunk-aware when shuffled; the batches are
    those of the in-memory dataset."""
    import xarray as xr

    from xbatcher.sources import ZarrSource

    store = tmp_path / "demo.zarr"
    argv = ["demo", *SMALL, "--batch-size", "7", "--shuffle", "--zarr", str(store)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"zarr store: {store} (zstd, chunks time=24)" in out
    assert "shuffle='chunks'" in out
    lazy = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)
    ds = make_era5_like(16, 64, 96)
    xr.testing.assert_identical(lazy.compute(), ds)  # compute: lazy stays lazy
    bgen = BatchGenerator(lazy, input_dims={"lat": 32, "lon": 32}, batch_size=7)
    assert all(isinstance(s, ZarrSource) for s in bgen.engine.sources.values())
    reports = _reports(out)
    assert int(reports["array fast path (bgen.arrays)"]["n"]) == len(bgen)


def test_demo_reports_library_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """Without zarr installed, ``--zarr`` names the extra to install: one line on
    stderr and exit status 1, no traceback."""
    import builtins

    real_import = builtins.__import__

    def no_zarr(name: str, *args: object, **kwargs: object) -> object:
        if name == "zarr" or name.startswith("zarr."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zarr)
    assert main(["demo", *SMALL, "--zarr", str(tmp_path / "d.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "xbatcher: error: the demo's Zarr store needs zarr: "
        "pip install 'xbatcher[zarr]'"
    ]
