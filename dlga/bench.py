"""Benchmark of the model: parameters, GFLOPs, inference and training speed, peak memory.

``python -m dlga bench`` (``make bench``) prints a table and writes JSON. Each configuration
runs in its own subprocess so that its peak resident memory is its own. These are numbers
the project prints, never timed assertions in tests.

The paper (section 4.3.3) measured 2.12 s per image on an Intel i7-6700 with TensorFlow.

TensorFlow, the model and the run cache are imported inside the measuring functions on purpose:
every measurement runs in a subprocess of its own, and the parent process stays without
TensorFlow so that it holds no threads or memory beside the one being measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

PAPER_SECONDS_PER_IMAGE = 2.12
GOALS_MS = {"paper_batch32": 70.0, "paper_batch1": 150.0}
# Calls are repeated for at least this long (seconds): fast ones (batch 1, the tiny step) get
# tens of calls, so their median stands on more than the few a slow one can afford.
TIMING_MIN_SECONDS = 1.0


@dataclass(frozen=True)
class BenchCase:
    """One benchmark row: a preset, weight sharing and numeric precision."""

    preset: str = "tiny"
    shared: bool = False
    precision: str = "float32"  # or "mixed_bfloat16"
    train: bool = True
    repeats: int = 3
    conv_impl: str = "auto"  # LocalAttention's per-patch convolution
    threads: int = 0  # TensorFlow intra-op threads (0: TensorFlow's default, all cores)
    fused_adam: bool = True  # False: keras.optimizers.Adam, the first version's optimizer

    @property
    def label(self) -> str:
        return f"{self.preset}/{'shared' if self.shared else 'per-patch'}/{self.precision}"


DEFAULT_CASES = (
    BenchCase("tiny", False), BenchCase("tiny", True),
    BenchCase("small", False), BenchCase("small", True),
    BenchCase("paper", False, repeats=2), BenchCase("paper", True, repeats=2),
    BenchCase("paper", False, "mixed_bfloat16", train=False, repeats=2),
)
QUICK_CASES = (BenchCase("tiny", False, repeats=2), BenchCase("tiny", True, repeats=2))


def _time(fn, repeats: int, min_seconds: float = TIMING_MIN_SECONDS) -> float:
    """Median seconds of one call of ``fn``: after one untimed call (trace, warm-up), at least
    ``repeats`` timed calls and as many more as fit in ``min_seconds``.

    The median, not the mean: on a shared machine one call now and then runs long (paper G's
    batch-1 calls ranged from 66 to 120 ms within one minute here), and a mean of two calls
    could be a third off.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    fn()
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(case: BenchCase) -> dict:
    """Measure one case in this process (call it in a fresh process for honest memory)."""
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    from dlga.model.complexity import flops_per_image
    from dlga.config import ModelConfig
    from dlga.model.network import build_model
    from dlga.training.train import dtype_policy

    if case.threads:
        tf.config.threading.set_intra_op_parallelism_threads(case.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    cfg = ModelConfig.setting("G", preset=case.preset, share_local_weights=case.shared)
    with dtype_policy(case.precision):
        model = build_model(cfg, conv_impl=case.conv_impl)
    rng = np.random.default_rng(0)
    s = cfg.input_size

    def batch(n):
        return {
            "image": tf.constant(rng.uniform(0, 255, (n, s, s, 3)).astype("float32")),
            "landmarks": tf.constant(rng.uniform(0.2 * s, 0.8 * s, (n, 68, 2)).astype("float32")),
        }

    infer = tf.function(lambda x: model(x, training=False)["score"])
    row = {
        "case": case.label,
        "preset": case.preset,
        "weights": "shared" if case.shared else "per-patch",
        "precision": case.precision,
        "input": s,
        "parameters": int(model.count_params()),
        # From shapes and dtypes: copying the weights out (850 MB for paper) would add to the peak RSS.
        "weight_mb": sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights) / 1e6,
        "gflops_per_image": flops_per_image(cfg)["total"] / 1e9,
    }
    for n in (1, 32):
        x = batch(n)
        sec = _time(lambda: infer(x).numpy(), case.repeats)
        row[f"infer_ms_batch{n}"] = 1000 * sec / n
    row["gflops_per_s_batch32"] = row["gflops_per_image"] / (row["infer_ms_batch32"] / 1000)
    if case.train:
        from dlga.config import TrainConfig
        from dlga.training.step import make_train_step

        step = make_train_step(model, TrainConfig.preset("paper", jit_compile=False, fused_adam=case.fused_adam))
        x, y = batch(32), tf.constant(rng.uniform(0, 45, 32).astype("float32"))
        row["train_s_per_step_batch32"] = _time(lambda: float(step(x, y)[0]), case.repeats)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return row


def build_model_grouped(config):
    """The model with the grouped per-patch convolution at every crop size: the training path
    of the first version, the baseline of the throughput table."""
    from dlga.model.network import build_model

    return build_model(config, conv_impl="grouped")


def measure_matmul(dtype: str = "float32", n: int = 4096, repeats: int = 5) -> dict:
    """GFLOP/s of an ``n`` x ``n`` matrix product on every core: the machine's own roof."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((n, n)), dtype)
    b = tf.cast(rng.normal((n, n)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    sec = _time(lambda: float(matmul()), repeats)
    return {"case": f"matmul/{n}/{dtype}", "dtype": dtype, "gflops": 2 * n**3 / sec / 1e9}


def measure_bandwidth(gib: float = 1.0, repeats: int = 5) -> dict:
    """GB/s of reading a ``gib`` GiB float32 tensor on every core: the roof of batch 1, where
    each weight is read once per image."""
    import tensorflow as tf

    x = tf.ones((int(gib * 2**28),), tf.float32)
    total = tf.function(lambda: tf.reduce_sum(x))
    sec = _time(lambda: float(total()), repeats)
    return {"case": f"read/{gib:g}GiB", "gb_per_s": x.shape[0] * 4 / sec / 1e9}


DEMO_STORE_SIZES = {"Training": 200, "Development": 50, "Testing": 90}  # sessions, as the demo cohort
DEMO_FRAMES_PER_VIDEO = 6


def demo_specs(store_dir: str, n: int, baseline: bool, precision: str = "float32") -> list:
    """``n`` runs of setting G on the ``demo`` schedule (300 steps at batch 32), seeds 0..n-1,
    in ``precision`` (:attr:`dlga.config.TrainConfig.precision`; the baseline's is float32)."""
    from dlga.config import TrainConfig
    from dlga.runs.cache import RunSpec

    # The baseline keeps the first version's optimizer (Keras's Adam) as well as its threads and
    # per-patch convolution.
    schedule = TrainConfig.preset("demo", max_steps=300, eval_every=50, jit_compile=False, fused_adam=not baseline,
                                  precision="float32" if baseline else precision)
    return [RunSpec("G", "tiny", schedule, store_dir, seed=seed, notes="bench baseline" if baseline else "bench")
            for seed in range(n)]


def runs_folder(workdir: str | Path, baseline: bool, precision: str = "float32") -> Path:
    """Where the throughput table's runs of one side (baseline or ``precision``) are written."""
    name = "runs-baseline" if baseline else "runs" if precision == "float32" else f"runs-{precision}"
    return Path(workdir) / name


def measure_runs(n: int, baseline: bool, workdir: str, precision: str = "float32") -> dict:
    """Runs per hour of the demo schedule on a toy store of the demo cohort's size.

    ``baseline``: one process, one run after another, TensorFlow's default threads, the
    grouped per-patch convolution and Keras's Adam (the first version's path). Otherwise: the local executor,
    one-thread worker per core, the default model, training in ``precision``.
    """
    from data_prep.toystore import make_store

    from dlga.runs.cache import execute, execute_all

    root = Path(workdir)
    store = root / "store"
    if not (store / "manifest.csv").is_file():
        make_store(store, DEMO_STORE_SIZES, frames_per_video=DEMO_FRAMES_PER_VIDEO,
                   tasks=("Freeform", "Northwind"), seed=0)
    specs = demo_specs(str(store), n, baseline, precision)
    runs_root = runs_folder(root, baseline, precision)
    start = time.perf_counter()
    if baseline:
        for spec in specs:
            execute(spec, runs_root, progress=False, model_fn=build_model_grouped)
    else:
        execute_all(specs, runs_root, "local", progress=False)
    wall = time.perf_counter() - start
    return {"case": "demo runs" + (" (baseline)" if baseline else f" ({precision})"), "runs": n, "wall_s": wall,
            "runs_per_hour": 3600 * n / wall}


def _worker(job: dict) -> dict:
    kind = job.pop("kind", "case")
    if kind == "matmul":
        return measure_matmul(**job)
    if kind == "bandwidth":
        return measure_bandwidth(**job)
    if kind == "runs":
        return measure_runs(**job)
    return measure(BenchCase(**job))


def _in_subprocess(job: dict, label: str, progress: bool) -> dict:
    """One measurement in a fresh process, so that its memory and threads are its own."""
    if progress:
        print(f"  {label} ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "dlga.bench", "--worker", json.dumps(job)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        return {"case": label, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


THROUGHPUT_CASES = (
    BenchCase("tiny", False, repeats=10, conv_impl="grouped", threads=0, fused_adam=False),  # baseline: the first version's step
    BenchCase("tiny", False, repeats=10, threads=0),  # today's step on the same threads as the baseline
    BenchCase("tiny", False, repeats=10, threads=1),  # what each run of the local executor does
    BenchCase("tiny", False, "mixed_bfloat16", repeats=10, threads=0),  # TrainConfig(precision="mixed_bfloat16")
)


# The demo-runs sides of the throughput table, in the order they are measured: ours, the
# first version's path, ours in mixed bfloat16.
THROUGHPUT_SIDES = ((False, "float32"), (True, "float32"), (False, "mixed_bfloat16"))


def throughput(workdir: str, progress: bool = True, runs: int | None = None) -> dict:
    """The throughput table: the tiny G training step and demo runs per hour, against the
    first version's path measured in the same call.

    The two steps are compared on the same threads (TensorFlow's default: every core); the
    one-thread step of a local-executor worker is reported beside them. Both run counts are
    ``runs`` (default: four per core), so that worker start-up and each process's first
    traces weigh the same on both sides. The bfloat16 keys are the same measurements with
    ``TrainConfig(precision="mixed_bfloat16")``, an option (float32 is the default and the
    goals' measure).
    """
    base_step, step, one_thread, bf16_step = (
        _in_subprocess({**c.__dict__}, f"train step {c.label} {c.conv_impl} threads={c.threads or 'all'}", progress)
        for c in THROUGHPUT_CASES)
    cores = os.cpu_count() or 1
    runs = runs or 4 * cores
    ours, base_runs, bf16_runs = (
        _in_subprocess({"kind": "runs", "n": runs, "baseline": baseline, "workdir": workdir, "precision": precision},
                       f"{runs} demo runs, " + ("baseline" if baseline else f"local executor, {precision}"), progress)
        for baseline, precision in THROUGHPUT_SIDES)
    out = {
        "tiny_G_train_step_s_batch32": step.get("train_s_per_step_batch32"),
        "tiny_G_train_step_s_batch32_baseline": base_step.get("train_s_per_step_batch32"),
        "tiny_G_train_step_s_batch32_one_thread": one_thread.get("train_s_per_step_batch32"),
        "demo_runs_per_hour": ours.get("runs_per_hour"),
        "demo_runs_per_hour_baseline": base_runs.get("runs_per_hour"),
        "tiny_G_train_step_s_batch32_bfloat16": bf16_step.get("train_s_per_step_batch32"),
        "demo_runs_per_hour_bfloat16": bf16_runs.get("runs_per_hour"),
        "runs": runs,
        "workers": cores,
        "errors": [r for r in (base_step, step, one_thread, bf16_step, ours, base_runs, bf16_runs) if "error" in r],
    }
    if all(out[k] for k in ("tiny_G_train_step_s_batch32", "tiny_G_train_step_s_batch32_baseline")):
        out["step_speedup"] = out["tiny_G_train_step_s_batch32_baseline"] / out["tiny_G_train_step_s_batch32"]
        out["step_goal_met"] = out["step_speedup"] >= 1.5
    if all(out[k] for k in ("demo_runs_per_hour", "demo_runs_per_hour_baseline")):
        out["runs_per_hour_ratio"] = out["demo_runs_per_hour"] / out["demo_runs_per_hour_baseline"]
        out["runs_goal_met"] = out["runs_per_hour_ratio"] >= 3.0
    if out["tiny_G_train_step_s_batch32_bfloat16"] and out["tiny_G_train_step_s_batch32_baseline"]:
        out["step_speedup_bfloat16"] = out["tiny_G_train_step_s_batch32_baseline"] / out["tiny_G_train_step_s_batch32_bfloat16"]
    if out["demo_runs_per_hour_bfloat16"] and out["demo_runs_per_hour_baseline"]:
        out["runs_per_hour_ratio_bfloat16"] = out["demo_runs_per_hour_bfloat16"] / out["demo_runs_per_hour_baseline"]
    return out


BATCH1_GOAL = 1.3  # batch 1 at most this many times batch 32's time per image


def efficiency(rows: list[dict], matmul: dict[str, float], read_gb_per_s: float | None = None) -> dict:
    """The paper preset's GFLOP/s at batch 32 as a fraction of the machine's matmul roof, and
    its batch-1 time per image against batch 32's and against the time to read its weights
    once at ``read_gb_per_s`` (a floor for batch 1, where no weight is reused across images)."""
    out = {"matmul_gflops_float32": matmul.get("float32"), "matmul_gflops_bfloat16": matmul.get("bfloat16"),
           "memory_read_gb_per_s": read_gb_per_s}
    for precision, key, goal in (("float32", "float32", 0.75), ("mixed_bfloat16", "bfloat16", 0.6)):
        paper = [r for r in rows if r.get("preset") == "paper" and r.get("weights") == "per-patch"
                 and r.get("precision") == precision and "gflops_per_s_batch32" in r]
        if paper and matmul.get(key):
            best = max(paper, key=lambda r: r["gflops_per_s_batch32"])
            out[f"paper_fraction_{key}"] = best["gflops_per_s_batch32"] / matmul[key]
            out[f"paper_fraction_{key}_goal"] = goal
            out[f"paper_fraction_{key}_met"] = out[f"paper_fraction_{key}"] >= goal
            out[f"paper_batch1_over_batch32_{key}"] = best["infer_ms_batch1"] / best["infer_ms_batch32"]
            if key == "float32":
                out["paper_batch1_over_batch32_float32_met"] = out["paper_batch1_over_batch32_float32"] <= BATCH1_GOAL
                out["paper_batch1_goal_ms_float32"] = BATCH1_GOAL * best["infer_ms_batch32"]
                if read_gb_per_s and best.get("weight_mb"):
                    out["paper_batch1_weight_read_floor_ms_float32"] = best["weight_mb"] / read_gb_per_s
    return out


def machine(gpus: bool = True) -> dict:
    """The CPU, its cores, the GPUs TensorFlow sees and the versions. ``gpus=False``: without
    importing TensorFlow (``"gpus"`` is None; its version comes from the installed package)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if gpus:
        import tensorflow as tf

        devices, version = [d.name for d in tf.config.list_physical_devices("GPU")], tf.__version__
    else:
        from importlib.metadata import PackageNotFoundError, version as package_version

        devices, version = None, None
        for name in ("tensorflow", "tensorflow-cpu"):  # the gpu extra's distribution, else the cpu extra's
            try:
                version = package_version(name)
                break
            except PackageNotFoundError:
                pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": devices, "tensorflow": version,
            "python": platform.python_version()}


# The modules whose code a case's timing depends on: a change to any of them is a new measurement.
TIMED_SOURCES = ("bench.py", "config.py", "model/complexity.py", "model/layers.py", "model/network.py",
                 "model/patch_conv.py", "model/patches.py", "training/optimizer.py", "training/step.py",
                 "training/train.py")


def code_hash(package_dir: str | Path, names: Sequence[str]) -> str:
    """A hash of the files ``names`` of ``package_dir``: the code a measurement timed."""
    return hashlib.sha256(b"".join((Path(package_dir) / name).read_bytes() for name in names)).hexdigest()


def measured_once(cache_dir: str | Path | None, key: dict, measure: Callable[[], dict]) -> dict:
    """``measure()``'s result (a JSON dict) with ``"measured"`` (when it was timed) and
    ``"reused"``: read back from ``cache_dir`` when the same ``key`` (what was measured, the
    code, this machine: CPU, cores, versions, visible GPUs) was measured before; else measured
    and kept there, unless it holds an ``"error"``. ``cache_dir=None``: always measured."""
    path = None
    if cache_dir is not None:
        data = {**key, "machine": machine(gpus=False), "visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
        path = Path(cache_dir) / (hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16] + ".json")
        if path.is_file():
            return {**json.loads(path.read_text()), "reused": True}
    row = {**measure(), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if path is not None and "error" not in row:
        from data_prep.store import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, row)
    return {**row, "reused": False}


def run_cases(cases, progress=True, cache_dir: str | Path | None = None) -> list[dict]:
    """One row per case, each measured in a subprocess of its own; ``cache_dir``: a row
    measured earlier for the same case, code (:data:`TIMED_SOURCES`) and machine is read back
    (:func:`measured_once`)."""
    code = code_hash(Path(__file__).resolve().parent, TIMED_SOURCES)
    return [measured_once(cache_dir, {"case": case.__dict__, "code": code},
                          lambda i=i, case=case: _in_subprocess(dict(case.__dict__), f"[{i}/{len(cases)}] {case.label}",
                                                                progress))
            for i, case in enumerate(cases, 1)]


def preprocessing_bench(frames: int = 30, cache_dir: str | Path | None = None) -> dict:
    """:func:`data_prep.bench.run_bench` on one worker (``frames`` frames of a 640x480 video),
    read back from ``cache_dir`` while the code it times and the machine are unchanged
    (:func:`measured_once`)."""
    from data_prep import bench as prep

    key = {"data_prep_bench": {"frames": int(frames), "workers": [1]},
           "code": code_hash(Path(prep.__file__).resolve().parent, prep.TIMED_SOURCES)}
    return measured_once(cache_dir, key, lambda: prep.run_bench(frames=int(frames), workers=(1,), show=False))


# The columns of a table of benchmark rows, and how each is printed: counts as integers, the
# tiny preset's 0.03 GFLOPs and 0.025 s steps with the digits that tell them apart.
ROW_COLUMNS = ("case", "parameters", "gflops_per_image", "infer_ms_batch1", "infer_ms_batch32",
               "gflops_per_s_batch32", "train_s_per_step_batch32", "peak_rss_mb")
ROW_FORMATS = {"parameters": "{:,.0f}", "gflops_per_image": "{:,.3f}", "infer_ms_batch1": "{:.2f}",
               "infer_ms_batch32": "{:.2f}", "gflops_per_s_batch32": "{:,.1f}",
               "train_s_per_step_batch32": "{:,.4f}", "peak_rss_mb": "{:,.0f}"}


def format_table(rows: list[dict]) -> str:
    """The rows as text, one line each (missing values as a dash)."""
    import pandas as pd

    frame = pd.DataFrame(rows).reindex(columns=list(ROW_COLUMNS))
    formatters = {c: (lambda v, f=f: "–" if pd.isna(v) else f.format(v)) for c, f in ROW_FORMATS.items()}
    return frame.to_string(index=False, formatters=formatters, na_rep="–")


def goals(rows: list[dict]) -> dict:
    """The issue's speed goals, checked against the best paper-preset per-patch rows."""
    paper = [r for r in rows if r.get("preset") == "paper" and r.get("weights") == "per-patch"]
    out = {}
    if paper:
        b32 = min(r["infer_ms_batch32"] for r in paper)
        b1 = min(r["infer_ms_batch1"] for r in paper)
        out = {
            "paper_batch32_ms": b32, "paper_batch32_goal_ms": GOALS_MS["paper_batch32"],
            "paper_batch32_met": b32 <= GOALS_MS["paper_batch32"],
            "paper_batch1_ms": b1, "paper_batch1_goal_ms": GOALS_MS["paper_batch1"],
            "paper_batch1_met": b1 <= GOALS_MS["paper_batch1"],
            "speedup_vs_paper_2120ms": 1000 * PAPER_SECONDS_PER_IMAGE / b32,
        }
    return out


def load_result(path: str | Path = "bench/dlga.json") -> dict | None:
    """The JSON that ``make bench`` wrote (machine, rows, goals), or None if it has not run."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _print_block(title: str, block: dict) -> None:
    print(title)
    for key, value in block.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlga bench", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/dlga.json", help="JSON output path (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="tiny preset only, no throughput runs (seconds)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the demo-runs-per-hour table (minutes)")
    ap.add_argument("--workdir", default=".cache/bench", help="toy store and runs of the throughput table")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    rows = run_cases(QUICK_CASES if args.quick else DEFAULT_CASES)
    matmul, read_gb_per_s = {}, None
    if not args.quick:
        for dtype in ("float32", "bfloat16"):
            row = _in_subprocess({"kind": "matmul", "dtype": dtype}, f"matmul 4096 {dtype}", True)
            matmul[dtype] = row.get("gflops")
        read_gb_per_s = _in_subprocess({"kind": "bandwidth"}, "read 1 GiB", True).get("gb_per_s")
    from dlga.runs.cache import git_commit

    result = {"machine": machine(), "commit": git_commit(), "rows": rows, "goals": goals(rows),
              "efficiency": efficiency(rows, matmul, read_gb_per_s),
              "paper_seconds_per_image": PAPER_SECONDS_PER_IMAGE,
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not (args.quick or args.no_throughput):
        for baseline, precision in THROUGHPUT_SIDES:  # measure training, not the cache
            shutil.rmtree(runs_folder(args.workdir, baseline, precision), ignore_errors=True)
        result["throughput"] = {**throughput(args.workdir), "commit": result["commit"]}
    print(f"DLGA-CNN benchmark on {result['machine']['cpu']} ({result['machine']['cores']} cores), "
          f"TensorFlow {result['machine']['tensorflow']}, commit {result['commit']}")
    print(format_table(rows))
    _print_block("goals", result["goals"])
    _print_block("efficiency (model GFLOP/s at batch 32 / matmul GFLOP/s)", result["efficiency"])
    if "throughput" in result:
        _print_block("throughput (baseline: one process, default threads, grouped convolution, Keras Adam)", result["throughput"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
