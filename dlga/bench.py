"""Benchmark of the model: parameters, GFLOPs, inference and training speed, peak memory.

``python -m dlga bench`` (``make bench``) prints a table and writes JSON. Each configuration
runs in its own subprocess so that its peak resident memory is its own. These are numbers
the project prints, never timed assertions in tests.

The paper (section 4.3.3) measured 2.12 s per image on an Intel i7-6700 with TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PAPER_SECONDS_PER_IMAGE = 2.12
GOALS_MS = {"paper_batch32": 70.0, "paper_batch1": 150.0}


@dataclass(frozen=True)
class BenchCase:
    """One benchmark row: a preset, weight sharing and numeric precision."""

    preset: str = "tiny"
    shared: bool = False
    precision: str = "float32"  # or "mixed_bfloat16"
    train: bool = True
    repeats: int = 3

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


def _time(fn, repeats: int) -> float:
    fn()  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(case: BenchCase) -> dict:
    """Measure one case in this process (call it in a fresh process for honest memory)."""
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    from .complexity import flops_per_image
    from .config import ModelConfig
    from .model import build_model

    keras.mixed_precision.set_global_policy(case.precision)
    keras.utils.set_random_seed(0)
    cfg = ModelConfig.setting("G", preset=case.preset, share_local_weights=case.shared)
    model = build_model(cfg)
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
        "gflops_per_image": flops_per_image(cfg)["total"] / 1e9,
    }
    for n in (1, 32):
        x = batch(n)
        sec = _time(lambda: infer(x).numpy(), case.repeats)
        row[f"infer_ms_batch{n}"] = 1000 * sec / n
    row["gflops_per_s_batch32"] = row["gflops_per_image"] / (row["infer_ms_batch32"] / 1000)
    if case.train:
        from .train import TrainConfig, make_train_step

        step = make_train_step(model, TrainConfig.preset("paper", jit_compile=False))
        x, y = batch(32), tf.constant(rng.uniform(0, 45, 32).astype("float32"))
        row["train_s_per_step_batch32"] = _time(lambda: float(step(x, y)[0]), case.repeats)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def machine() -> dict:
    import tensorflow as tf

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "tensorflow": tf.__version__,
            "python": platform.python_version()}


def run_cases(cases, progress=True) -> list[dict]:
    rows = []
    for i, case in enumerate(cases, 1):
        if progress:
            print(f"[{i}/{len(cases)}] {case.label} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "dlga.bench", "--worker", json.dumps(case.__dict__)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            rows.append({"case": case.label, "error": res.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict]) -> str:
    import pandas as pd

    cols = ["case", "parameters", "gflops_per_image", "infer_ms_batch1", "infer_ms_batch32",
            "gflops_per_s_batch32", "train_s_per_step_batch32", "peak_rss_mb"]
    frame = pd.DataFrame(rows).reindex(columns=cols)
    return frame.to_string(index=False, float_format=lambda v: f"{v:,.2f}")


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlga bench", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/dlga.json", help="JSON output path (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="tiny preset only (seconds)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(BenchCase(**json.loads(args.worker)))))
        return 0
    rows = run_cases(QUICK_CASES if args.quick else DEFAULT_CASES)
    result = {"machine": machine(), "rows": rows, "goals": goals(rows),
               "paper_seconds_per_image": PAPER_SECONDS_PER_IMAGE,
               "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(f"DLGA-CNN benchmark on {result['machine']['cpu']} ({result['machine']['cores']} cores), "
          f"TensorFlow {result['machine']['tensorflow']}")
    print(format_table(rows))
    for key, value in result["goals"].items():
        print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
