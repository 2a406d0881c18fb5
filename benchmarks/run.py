"""Benchmark our xbatcher against xbatcher 0.4 and the practical limits.

    python benchmarks/run.py [--quick] [--repeats 3] [--only W2a,S1] [--json out.json]

One invocation runs everything side by side, on the same data, machine and run:

* ours: the current interpreter with ``PYTHONPATH=<repo>/src``;
* xbatcher 0.4.0: a venv under ``benchmarks/.results/`` (made once, with the
  numpy/xarray/dask/zarr/pandas/numcodecs versions of the current interpreter);
* the references ("limit"): pure numpy gathers and read-each-chunk-once loops,
  run in the same process as ours and interleaved with it.

Each library runs in its own subprocess (``_worker.py``), which prints one JSON
line per workload. See ``benchmarks/README.md`` for what each workload measures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

PINNED = ("numpy", "xarray", "dask", "zarr", "pandas", "numcodecs")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# environments
# --------------------------------------------------------------------------


def pinned_versions() -> dict[str, str]:
    out = {}
    for name in PINNED:
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def ensure_xb04_venv(results: str) -> tuple[str | None, str]:
    """Create (once) a venv with xbatcher==0.4.0 and our pinned versions."""
    vers = pinned_versions()
    spec = ["xbatcher==0.4.0"] + [f"{k}=={v}" for k, v in sorted(vers.items())]
    key = hashlib.sha1((sys.version + " ".join(spec)).encode()).hexdigest()[:10]
    venv = os.path.join(results, f"venv-xb04-{key}")
    py = os.path.join(venv, "bin", "python")
    probe = "import xbatcher, numpy, xarray, dask, zarr; print(xbatcher.__version__)"
    if os.path.exists(os.path.join(venv, "READY")):
        return py, "cached"
    log(f"[setup] creating the xbatcher 0.4 venv at {venv} ({' '.join(spec)})")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run(
            [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *spec],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        got = subprocess.run(
            [py, "-c", probe], check=True, capture_output=True, text=True, env=_env04()
        ).stdout.strip()
        if got != "0.4.0":
            raise RuntimeError(f"venv imports xbatcher {got!r}, expected 0.4.0")
    except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
        err = getattr(e, "stderr", None) or str(e)
        return None, f"could not create the 0.4 venv: {err!s}"[:2000]
    with open(os.path.join(venv, "READY"), "w") as f:
        f.write(" ".join(spec))
    return py, "created"


def _env_ours() -> dict[str, str]:
    env = dict(os.environ)
    src = os.path.join(REPO, "src")
    env["PYTHONPATH"] = src + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _env04() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def ours_status() -> tuple[bool, str]:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import xbatcher; xbatcher.BatchGenerator; print(xbatcher.__version__)",
        ],
        env=_env_ours(),
        capture_output=True,
        text=True,
    )
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, r.stderr.strip().splitlines()[
        -1
    ] if r.stderr.strip() else "import failed"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", REPO, "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "?", False
    mem = "?"
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/meminfo") as f,
    ):
        mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    return {
        "mem": mem,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": pinned_versions(),
        "commit": commit + ("+dirty(src)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# --------------------------------------------------------------------------
# running workers
# --------------------------------------------------------------------------


def run_worker(
    py: str,
    env: dict[str, str],
    lib: str,
    names: list[str],
    args: argparse.Namespace,
    phase: str,
    repeat: int,
    deadline: float,
    timeout: float,
    dump_dir: str | None = None,
) -> list[dict[str, Any]]:
    if not names:
        return []
    cmd = [
        py,
        os.path.join(HERE, "_worker.py"),
        "--lib",
        lib,
        "--data",
        args.data_dir,
        "--workloads",
        ",".join(names),
        "--phase",
        phase,
        "--cap",
        str(args.cap),
        "--min-time",
        str(args.min_time),
        "--deadline",
        str(deadline),
        "--repeat",
        str(repeat),
    ]
    if dump_dir:
        cmd += ["--dump-dir", dump_dir]
    lines: list[dict[str, Any]] = []
    t0 = time.time()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group only
        out, err = proc.communicate()
        log(
            f"[{lib}] worker timed out after {timeout:.0f}s; kept the workloads it finished"
        )
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    if proc.returncode not in (0, None) and not lines:
        log(f"[{lib}] worker failed (rc={proc.returncode}):\n{err[-3000:]}")
    log(
        f"[{lib}] {phase} r{repeat}: {len(lines)}/{len(names)} workloads in {time.time() - t0:.0f}s"
    )
    return lines


# --------------------------------------------------------------------------
# sanity checks
# --------------------------------------------------------------------------


def _load(dump: str, tag: str, w: str, i: Any, var: str) -> np.ndarray | None:
    p = os.path.join(dump, f"{tag}_{w}_{i}_{var}.npy")
    return np.load(p) if os.path.exists(p) else None


def compare_dumps(lines: list[dict[str, Any]], dump: str) -> list[str]:
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for ln in lines:
        for k, v in (ln.get("results") or {}).items():
            by[(ln["workload"], k)] = v
        if ln.get("error"):
            by[(ln["workload"], "error_" + ln["lib"])] = {"error": ln["error"]}
    msgs = []
    for name, w in C.WORKLOADS.items():
        ref = by.get((name, "ref"))
        if ref is None:
            continue
        ours, old = by.get((name, "ours")), by.get((name, "xb04"))
        issues, notes = [], []
        idx = list(ref["batches"])
        for i in idx:
            for var in ref["batches"][i]["shapes"]:
                r = _load(dump, "ref", name, i, var)
                if w.limit != "gather":
                    rc = _load(dump, "refchunk", name, i, var)
                    if rc is None or not np.array_equal(r, rc):
                        issues.append(f"chunked limit != numpy gather at batch {i}")
                if ours and "batches" in ours:
                    o = _load(dump, "ours", name, i, var)
                    oa = _load(dump, "oursarr", name, i, var)
                    if o is None or o.shape != r.shape or not np.array_equal(o, r):
                        issues.append(
                            f"ours xarray batch {i} [{var}] {None if o is None else o.shape} != reference {r.shape}"
                        )
                    if oa is None or oa.shape != r.shape or not np.array_equal(oa, r):
                        issues.append(
                            f"ours arrays batch {i} [{var}] {None if oa is None else oa.shape} != reference {r.shape}"
                        )
                if old and "batches" in old:
                    b = _load(dump, "xb04", name, i, var)
                    if b is None:
                        continue
                    if w.compare == "values":
                        if b.shape != r.shape or not np.array_equal(b, r):
                            issues.append(
                                f"0.4 batch {i} [{var}] {b.shape} != reference {r.shape}"
                            )
                    else:
                        notes.append(
                            f"0.4 batch {i} shape {b.shape} vs ours/reference {r.shape} (expected: 0.4 rule differs)"
                        )
        if ours and "batches" in ours and old and "batches" in old:
            if ours["n"] != old["n"]:
                (notes if w.compare == "shapes" else issues).append(
                    f"len: ours {ours['n']} vs 0.4 {old['n']}"
                )
            for i in idx:
                od, bd = (
                    ours["batches"].get(i, {}).get("dims"),
                    old["batches"].get(i, {}).get("dims"),
                )
                if od and bd and od != bd:
                    issues.append(f"dims batch {i}: ours {od} vs 0.4 {bd}")
        if ours and "error" in ours:
            issues.append("ours failed: " + ours["error"].strip().splitlines()[-1])
        if ours and "batches" in ours and ours["n"] != ref["n"]:
            issues.append(f"len: ours {ours['n']} vs rules {ref['n']}")
        checked = "ours, " if ours and "batches" in ours else ""
        checked += "0.4, " if old and "batches" in old else ""
        if issues:
            msgs.extend(f"WARNING check {name}: {m}" for m in issues)
        else:
            what = "values" if w.compare == "values" else "ours values, 0.4 shapes"
            msgs.append(
                f"ok      check {name}: {checked}reference agree ({what}; batches {idx})"
            )
        msgs.extend(f"note    check {name}: {m}" for m in notes)
    for key in ("chunks", "True"):
        rec = by.get(("S1", key)) or {}
        if not rec:
            continue
        if "error" in rec:
            msgs.append(
                f"WARNING check S1 shuffle={key}: "
                + rec["error"].strip().splitlines()[-1]
            )
            continue
        exp = C.W2_SHAPE[0] * (C.W2_SHAPE[1] // 32) * (C.W2_SHAPE[2] // 32)
        bad = []
        if "n_samples" in rec and (rec["n_samples"] != exp or rec["unique"] != exp):
            bad.append(
                f"epoch visits {rec['n_samples']} samples, {rec['unique']} distinct; expected {exp} once each"
            )
        if rec.get("value_mismatches_batch0"):
            bad.append(
                f"{rec['value_mismatches_batch0']} samples of batch 0 differ from isel"
            )
        if rec.get("shape") != [32, 32, 32]:
            bad.append(f"batch shape {rec.get('shape')} != [32, 32, 32]")
        if bad:
            msgs.extend(f"WARNING check S1 shuffle={key}: {b}" for b in bad)
        else:
            how = (
                "every sample once, batch 0 == isel"
                if "n_samples" in rec
                else "shape only (no `sample` coord)"
            )
            msgs.append(
                f"ok      check S1 shuffle={key}: {rec['n']} batches of {rec['shape']}, {how}"
            )
    for mode in ("inorder", "chunks", "full"):
        rec = by.get(("S1", f"ideal_{mode}")) or {}
        if not rec:
            continue
        if "error" in rec:
            msgs.append(
                f"WARNING check S1 ideal {mode}: "
                + rec["error"].strip().splitlines()[-1]
            )
            continue
        bad = [
            f"{name}: {r['mismatches']} of {r['n']} batches differ (ideal has {rec['n']})"
            for name, r in rec.items()
            if isinstance(r, dict) and (r["mismatches"] or r["n"] != rec["n"])
        ]
        if bad:
            msgs.extend(f"WARNING check S1 ideal {mode}: {b}" for b in bad)
        else:
            msgs.append(
                f"ok      check S1 ideal {mode}: all {rec['n']} batches of ours "
                "(open_dataset and open_zarr) equal the ideal's"
            )
    return msgs


# --------------------------------------------------------------------------
# aggregation and tables
# --------------------------------------------------------------------------


def aggregate(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """workload -> mode -> median numbers over repeats."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    errors: dict[str, dict[str, str]] = {}
    for ln in lines:
        w = ln["workload"]
        if ln.get("error"):
            errors.setdefault(w, {})[ln["lib"]] = ln["error"]
        for mode, r in (ln.get("results") or {}).items():
            if not isinstance(r, dict):
                continue
            if "error" in r or "skipped" in r or "reuse" in r:
                errors.setdefault(w, {}).setdefault(
                    mode, r.get("error") or r.get("skipped") or ""
                )
                if "reuse" in r:
                    raw.setdefault(w, {}).setdefault("__reuse__", []).append(r)
                continue
            raw.setdefault(w, {}).setdefault(mode, []).append(
                dict(r, repeat=ln.get("repeat", 0))
            )
    out: dict[str, dict[str, Any]] = {}
    for w, modes in raw.items():
        for mode, rs in modes.items():
            if mode == "__reuse__":
                continue
            agg: dict[str, Any] = {"repeats": len(rs)}
            for k in (
                "bps",
                "gbps",
                "ms",
                "first_batch_ms",
                "last_batch_ms",
                "seconds",
                "batches",
            ):
                vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
                if vals:
                    agg[k] = statistics.median(vals)
            for k in ("n_per_epoch", "len", "batch_shape", "note"):
                if k in rs[0]:
                    agg[k] = rs[0][k]
            agg["capped"] = any(r.get("capped") for r in rs)
            agg["per_repeat"] = {
                r["repeat"]: {k: r[k] for k in ("bps", "gbps") if k in r} for r in rs
            }
            agg["all"] = [r.get("bps", r.get("ms")) for r in rs]
            out.setdefault(w, {})[mode] = agg
        if "__reuse__" in modes:
            src = modes["__reuse__"][0]["reuse"]
            if "xb04" in out.get(src, {}):
                out.setdefault(w, {})["xb04"] = dict(out[src]["xb04"], reused_from=src)
    for w, errs in errors.items():
        for mode, e in errs.items():
            if mode not in out.get(w, {}):
                out.setdefault(w, {})[mode] = {"error": e}
    return out


def fmt(x: float | None, capped: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if x >= 1e6:
        s = f"{x / 1e6:.3g}M"
    elif x >= 1e4:
        s = f"{x / 1e3:.3g}k"
    elif x >= 100:
        s = f"{x:.0f}"
    else:
        s = f"{x:.3g}"
    return s + ("†" if capped else "")


def ratio_value(
    a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "gbps"
) -> float | None:
    """Median over repeats of a/b, pairing the two measurements of each repeat
    (they ran minutes apart at most, often interleaved in one process), which
    cancels most of the machine's slow drifts; medians of a and b otherwise."""
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    pa, pb = a.get("per_repeat") or {}, b.get("per_repeat") or {}
    pairs = [
        pa[r][key] / pb[r][key]
        for r in pa
        if r in pb and key in pa[r] and pb[r].get(key)
    ]
    return statistics.median(pairs) if pairs else a[key] / b[key]


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "gbps") -> str:
    r = ratio_value(a, b, key)
    if r is None:
        return "n/a"
    return f"{r:.3g}x" if r < 1000 else f"{r:.0f}x"


def val(d: dict[str, Any] | None, key: str = "bps") -> str:
    if not d:
        return "—"
    if "error" in d:
        return "err" if "skipped" not in str(d["error"]).lower() else "skip"
    return fmt(d.get(key), d.get("capped", False))


def tables(agg: dict[str, dict[str, Any]], names: list[str]) -> str:
    rows = [
        "| workload | batch | ours xarray b/s | ours arrays b/s | 0.4 b/s | limit b/s "
        "| arrays GB/s | limit GB/s | xarray/0.4 | arrays/0.4 | arrays/limit | xarray/limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        if name not in C.WORKLOADS or name not in agg:
            continue
        w, a = C.WORKLOADS[name], agg[name]
        plan = C.make_plan(w.dims, w.shape, w.kwargs)
        shape = C.out_shape(plan)
        nvars = 3 if w.source == "w3" else 1
        nbytes = int(np.prod(shape)) * 4 * nvars
        bshape = "x".join(map(str, shape)) + (f" x{nvars} vars" if nvars > 1 else "")
        bsize = (
            f"{bshape} ({nbytes / 2**20:.3g} MiB)"
            if nbytes >= 2**20
            else f"{bshape} ({nbytes / 2**10:.3g} KiB)"
        )
        xr_, ar, old, lim = (
            a.get("ours_xarray"),
            a.get("ours_arrays"),
            a.get("xb04"),
            a.get("limit"),
        )
        rows.append(
            f"| {name} | {bsize} | {val(xr_)} | {val(ar)} | {val(old)} | {val(lim)} "
            f"| {val(ar, 'gbps')} | {val(lim, 'gbps')} | {ratio(xr_, old)} | {ratio(ar, old)} "
            f"| {ratio(ar, lim)} | {ratio(xr_, lim)} |"
        )
    out = "\n".join(rows)
    extra = []
    for name in names:
        g = agg.get(name, {}).get("gather")
        if g and name in C.WORKLOADS:
            extra.append(
                f"{name}: numpy gather from memory alone {fmt(g.get('bps'))} b/s "
                f"({fmt(g.get('gbps'))} GB/s); arrays/gather {ratio(agg[name].get('ours_arrays'), g)}"
            )
        it = agg.get(name, {}).get("ours_xarray_iter")
        if it and name in C.WORKLOADS:
            extra.append(
                f"{name}: ours xarray iterated (`for b in bgen`) {fmt(it.get('bps'))} "
                f"b/s; xarray-iterated/limit {ratio(it, agg[name].get('limit'))}"
            )
    if extra:
        out += (
            "\n\nChunked sources, gather part of the limit only, and the xarray "
            "path iterated:\n\n" + "\n".join(f"- {e}" for e in extra)
        )
    if "S1" in agg and "S1" in names:
        s = agg["S1"]
        lim, naive, floor = s.get("limit"), s.get("naive"), s.get("floor")
        out += (
            "\n\nS1: Zarr (chunks 30x256x256, zstd), batches of 32 shuffled 32x32 samples, one epoch "
            "(730 batches)\n\n| mode | b/s | GB/s | vs limit | vs naive | vs decode floor |"
            "\n|---|---|---|---|---|---|"
        )
        out = out.replace(
            "| vs decode floor |\n|---|---|---|---|---|---|",
            "| vs decode floor | vs ideal |\n|---|---|---|---|---|---|---|",
        )
        modes = {
            "inorder": "shuffle=False",
            "chunks": 'shuffle="chunks"',
            "full": "shuffle=True",
        }
        rows_s1: list[tuple[str, str, str | None]] = []
        for mode, sh in modes.items():
            ideal_label = f"ideal {sh}: decode once on all cores + gather"
            how = (s.get(f"ideal_{mode}") or {}).get("how")
            if how:
                ideal_label += f" ({how})"
            rows_s1 += [
                (f"ideal_{mode}", ideal_label, f"ideal_{mode}"),
                (f"{mode}_arrays", f"ours {sh}, arrays, open_dataset", f"ideal_{mode}"),
                (
                    f"{mode}_arrays_dask",
                    f"ours {sh}, arrays, open_zarr",
                    f"ideal_{mode}",
                ),
            ]
        rows_s1 += [
            ("chunks_xarray", 'ours shuffle="chunks", xarray', "ideal_chunks"),
            (
                "naive",
                "naive: per-sample isel(...).values, shuffled (extrapolated)",
                None,
            ),
            ("limit", "limit: read+decode every chunk once", None),
            (
                "floor",
                "decode floor: raw bytes + numcodecs, all cores, no gather",
                None,
            ),
        ]
        for key, label, ideal_key in rows_s1:
            d = s.get(key)
            if d is None:
                continue
            vs_ideal = ratio(d, s.get(ideal_key), "bps") if ideal_key else ""
            out += (
                f"\n| {label} | {val(d)} | {val(d, 'gbps')} | {ratio(d, lim, 'bps')} "
                f"| {ratio(d, naive, 'bps')} | {ratio(d, floor, 'bps')} | {vs_ideal} |"
            )
        notes = [
            f"- ideal {sh}: {s[f'ideal_{mode}']['note']}"
            for mode, sh in modes.items()
            if (s.get(f"ideal_{mode}") or {}).get("note")
        ]
        if notes:
            out += (
                "\n\nThe ideal's three ways to overlap decode and gather (one "
                "repeat; the table uses hybrid):\n\n" + "\n".join(notes)
            )
    if "S2" in agg and "S2" in names:
        s = agg["S2"]
        lim = s.get("limit")
        out += (
            "\n\nS2: S1's sampling over a bigger Zarr store "
            f"({'x'.join(map(str, C.S2_SHAPE))} float32, chunks "
            f"{'x'.join(map(str, C.S2_CHUNKS))}, about 300 MB), one epoch per "
            "measurement\n\n| mode | block_cache_bytes | b/s | vs limit |"
            " vs chunk-aware |\n|---|---|---|---|---|"
        )
        for cache in C.S2_CACHES:
            chunks = s.get(f"chunks_{cache}")
            for key, label in (
                (f"chunks_{cache}", 'ours shuffle="chunks", arrays'),
                (f"full_{cache}", "ours shuffle=True, arrays"),
            ):
                d = s.get(key)
                if d is None:
                    continue
                out += (
                    f"\n| {label} | {cache} | {val(d)} | {ratio(d, lim, 'bps')} "
                    f"| {ratio(d, chunks, 'bps')} |"
                )
        if lim is not None:
            out += f"\n| limit: read+decode every chunk once | | {val(lim)} | 1x | |"
    crow = []
    if "C1" in agg and "C1" in names:
        c = agg["C1"]
        crow.append(
            f"| W1a (99,937 batches) | {val(c.get('ours'), 'ms')} | {val(c.get('xb04'), 'ms')} | | |"
        )
    if "C2" in agg and "C2" in names:
        c = agg["C2"]
        for key, label in (
            ("ours", "dask (1e5,1e3,1e3), input 8x8 overlap 5, batch_dims time=1"),
            ("ours_samples", "same, batch_size=32, shuffle=True"),
        ):
            d = c.get(key) or {}
            n = d.get("len")
            label += f" ({n:.3g} batches)" if isinstance(n, (int, float)) else ""
            crow.append(
                f"| {label} | {val(d, 'ms')} | not run (would not finish) "
                f"| {val(d, 'first_batch_ms')} | {val(d, 'last_batch_ms')} |"
            )
    if crow:
        out += (
            "\n\nConstruction of BatchGenerator (median ms)\n\n| case | ours ms | 0.4 ms "
            "| ours arrays[0] ms | ours arrays[-1] ms |\n|---|---|---|---|---|\n"
            + "\n".join(crow)
        )
    return out


def targets(agg: dict[str, dict[str, Any]]) -> str:
    """The project's performance targets, each with its measured value."""
    rows = [
        "| target | workload | measured | ceiling | status |",
        "|---|---|---|---|---|",
    ]

    def status(v: float | None, goal: float, above: bool = True) -> str:
        if v is None:
            return "n/a"
        return "pass" if (v >= goal if above else v <= goal) else "**FAIL**"

    def x(v: float | None) -> str:
        return "n/a" if v is None else (f"{v:.3g}x" if v < 1000 else f"{v:.0f}x")

    def get(w: str, m: str) -> dict[str, Any] | None:
        d = agg.get(w, {}).get(m)
        return d if d and "error" not in d else None

    for w in C.WORKLOADS:
        if get(w, "xb04") and get(w, "ours_xarray"):
            v = ratio_value(get(w, "ours_xarray"), get(w, "xb04"))
            rows.append(f"| xarray path >= 1x 0.4 | {w} | {x(v)} | | {status(v, 1)} |")
    for w in ("W1b", "W2c", "W4d", "W4z", "W4zd"):
        old = get(w, "xb04")
        if not old:
            continue
        ceil = ratio_value(get(w, "limit"), old)
        for m, lab in (("ours_xarray", "xarray"), ("ours_arrays", "arrays")):
            v = ratio_value(get(w, m), old)
            rows.append(
                f"| >= 100x 0.4 (concat/dask/zarr), {lab} path | {w} | {x(v)} "
                f"| limit/0.4 = {x(ceil)} | {status(v, 100)} |"
            )
    for w, goal in (
        ("W1b", 0.5),
        ("W2a", 0.5),
        ("W2b", 0.5),
        ("W2c", 0.5),
        ("W3", 0.5),
        ("W4z", 0.8),
        ("W4zd", 0.8),
    ):
        v = ratio_value(get(w, "ours_arrays"), get(w, "limit"))
        if v is not None:
            ref = "numpy gather" if goal == 0.5 else "read each chunk once + gather"
            rows.append(
                f"| arrays path >= {goal}x {ref} | {w} | {x(v)} | | {status(v, goal)} |"
            )
    for w, m, lab in (
        ("C1", "ours", "W1a"),
        ("C2", "ours", "1.1e10 batches"),
        ("C2", "ours_samples", "1.1e10 samples, shuffled"),
    ):
        d = get(w, m)
        if d and "ms" in d:
            rows.append(
                f"| construction < 10 ms | {lab} | {d['ms']:.3g} ms | "
                f"| {status(d['ms'], 10, above=False)} |"
            )
    s1 = agg.get("S1", {})
    if get("S1", "chunks_arrays"):
        v = ratio_value(s1["chunks_arrays"], get("S1", "limit"), "bps")
        rows.append(
            f"| S1 chunk-aware >= 0.8x read-each-chunk-once | S1 | {x(v)} | | {status(v, 0.8)} |"
        )
        v = ratio_value(s1["chunks_arrays"], get("S1", "naive"), "bps")
        rows.append(
            f"| S1 chunk-aware >= 10x naive | S1 | {x(v)} | | {status(v, 10)} |"
        )
    for mode, sh in (
        ("inorder", "in order"),
        ("chunks", "chunk-aware"),
        ("full", "full shuffle"),
    ):
        for key, opening in (("arrays", "open_dataset"), ("arrays_dask", "open_zarr")):
            v = ratio_value(
                get("S1", f"{mode}_{key}"), get("S1", f"ideal_{mode}"), "bps"
            )
            if v is not None:
                rows.append(
                    f"| S1 {sh}, {opening} >= 0.9x the all-core ideal | S1 | {x(v)} "
                    f"| | {status(v, 0.9)} |"
                )
    return "\n".join(rows)


def errors_report(agg: dict[str, dict[str, Any]]) -> str:
    out = []
    for w, modes in agg.items():
        for mode, d in modes.items():
            if "error" in d and d["error"] and "skipped" not in str(d["error"]).lower():
                out.append(f"--- {w} / {mode}:\n{str(d['error']).strip()}")
    return "\n".join(out)


# --------------------------------------------------------------------------


def render(
    info: dict[str, Any],
    agg: dict[str, dict[str, Any]],
    names: list[str],
    checks: list[str],
) -> str:
    """The markdown report of one run."""
    old = "xbatcher 0.4.0" if info.get("xb04") else str(info.get("xb04_setup"))
    out = [
        f"### Run of {info['date']}, commit {info['commit']}",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}, {info.get('mem', '?')} RAM; "
        f"Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        f"ours: xbatcher {info.get('ours')}; 0.4: {old}. "
        f"Median of {info.get('repeats_done')} repeat(s); each measurement capped at "
        f"{info.get('cap_s'):g} s († = time-boxed: throughput from the batches done). "
        "Ratios use GB/s and are medians of the per-repeat ratios. "
        f"Run took {info.get('wall_s', 0) / 60:.1f} min.",
        "",
        tables(agg, names),
        "",
        "Targets (ratios from GB/s; ceiling = what the limit itself reaches):",
        "",
        targets(agg),
    ]
    if checks:
        out += ["", "Checks (batches compared before timing):", ""]
        out += [f"    {m}" for m in checks]
    errs = errors_report(agg)
    if errs:
        out += ["", "Errors:", "", "```", errs, "```"]
    return "\n".join(out)


DOC_START = (
    "<!-- benchmark results: start (written by benchmarks/run.py --update-doc) -->"
)
DOC_END = "<!-- benchmark results: end -->"


def update_doc(path: str, report: str) -> None:
    """Replace the text between the two markers of ``path`` with ``report``."""
    with open(path) as f:
        text = f.read()
    if DOC_START not in text or DOC_END not in text:
        log(f"[run] {path} lacks the result markers; not updated")
        return
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{DOC_START}\n\n{report}\n\n{DOC_END}{tail}")
    log(f"[run] updated {path}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="3 s caps, 1 repeat (about 2-3 min)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per measurement (default 3; --quick 1)",
    )
    p.add_argument("--only", default="", help=f"comma list of {','.join(C.ALL_NAMES)}")
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument(
        "--cap",
        type=float,
        default=None,
        help="seconds per measurement (default 15; --quick 3)",
    )
    p.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="repeat whole epochs until this many seconds (default 1.5; --quick 0.3)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="wall-time budget of the whole run",
    )
    p.add_argument("--results-dir", default=os.path.join(HERE, ".results"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-04", action="store_true", help="skip xbatcher 0.4")
    p.add_argument(
        "--no-check", action="store_true", help="skip the batch-equality checks"
    )
    p.add_argument(
        "--update-doc",
        default=None,
        help="rewrite the results section of this markdown file (docs/performance.md)",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="do not run: render the report of a JSON written by an earlier --json",
    )
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.cap = args.cap or (3.0 if args.quick else 15.0)
    args.min_time = (
        args.min_time if args.min_time is not None else (0.3 if args.quick else 1.5)
    )
    args.data_dir = args.data_dir or os.path.join(args.results_dir, "data")
    names = [n for n in args.only.split(",") if n] if args.only else list(C.ALL_NAMES)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        report = render(saved["meta"], aggregate(saved["raw"]), names, saved["checks"])
        print(report)
        if args.update_doc:
            update_doc(args.update_doc, report)
        return 0
    unknown = [n for n in names if n not in C.ALL_NAMES]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; known: {', '.join(C.ALL_NAMES)}")

    t_start = time.time()
    deadline = t_start + args.max_minutes * 60
    os.makedirs(args.results_dir, exist_ok=True)
    info = machine_info()
    log(
        f"[setup] {info['nproc']} cores, {info['cpu']}, python {info['python']}, {info['versions']}"
    )

    if not C.data_ready(args.data_dir):
        log(f"[setup] writing benchmark data to {args.data_dir}")
        C.make_data(args.data_dir)
    if "S2" in names:
        C.ensure_s2_store(args.data_dir)
    py04, how = (
        (None, "skipped (--no-04)")
        if args.no_04
        else ensure_xb04_venv(args.results_dir)
    )
    log(f"[setup] xbatcher 0.4 venv: {how}")
    ours_ok, ours_ver = ours_status()
    log(
        f"[setup] ours: {'xbatcher ' + ours_ver if ours_ok else 'NOT importable: ' + ours_ver}"
    )
    info.update(
        ours=ours_ver if ours_ok else None,
        xb04=py04 is not None,
        xb04_setup=how,
        cap_s=args.cap,
        repeats=args.repeats,
        min_time_s=args.min_time,
    )

    lines04_names = [n for n in names if n not in ("S1", "S2", "C2")]
    checks: list[str] = []
    if not args.no_check:
        dump = os.path.join(args.results_dir, "dump")
        os.makedirs(dump, exist_ok=True)
        for f in os.listdir(dump):
            os.remove(os.path.join(dump, f))
        dn = [n for n in names if n in C.WORKLOADS or n == "S1"]
        dl = run_worker(
            sys.executable, _env_ours(), "ours", dn, args, "dump", 0, 0, 600, dump
        )
        if py04:
            dl += run_worker(
                py04,
                _env04(),
                "xb04",
                [n for n in dn if n in C.WORKLOADS],
                args,
                "dump",
                0,
                0,
                600,
                dump,
            )
        checks = compare_dumps(dl, dump)
        for m in checks:
            log(m)

    lines: list[dict[str, Any]] = []
    repeats_done = 0
    last = 0.0
    for r in range(args.repeats):
        now = time.time()
        if r > 0 and now + last > deadline:
            log(
                f"[run] stopping after {r} repeat(s): another would pass the {args.max_minutes:g} min budget"
            )
            break
        t0 = time.time()
        order = ["ours", "xb04"] if r % 2 == 0 else ["xb04", "ours"]
        for lib in order:
            remaining = max(30.0, deadline - time.time() + 60)
            if lib == "ours":
                lines += run_worker(
                    sys.executable,
                    _env_ours(),
                    "ours",
                    names,
                    args,
                    "bench",
                    r,
                    deadline,
                    remaining,
                )
            elif py04:
                lines += run_worker(
                    py04,
                    _env04(),
                    "xb04",
                    lines04_names,
                    args,
                    "bench",
                    r,
                    deadline,
                    remaining,
                )
        last = time.time() - t0
        repeats_done += 1
    agg = aggregate(lines)
    info["repeats_done"] = repeats_done
    info["wall_s"] = round(time.time() - t_start, 1)

    report = render(info, agg, names, checks)
    print(report)
    if args.update_doc:
        update_doc(args.update_doc, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"meta": info, "results": agg, "checks": checks, "raw": lines},
                f,
                indent=1,
                default=str,
            )
        log(f"[run] wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
