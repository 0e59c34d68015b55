"""The book's orchestration: presets, data, runs, executed notebooks and the HTML build.

Three presets (DESIGN.md section 5), all in :data:`PRESETS`:

* ``ci``: the tiny synthetic cohort, the tiny model, a short schedule; what the tests and nbval
  run (minutes for everything);
* ``demo``: the default of ``make book``: the demo synthetic cohort, the tiny model, the
  ``demo`` schedule and several seeds (goal: at most 45 minutes on 2 CPU cores);
* ``paper``: real AVEC data, the paper's 224 px model and schedule (a GPU job).

Command line::

    python -m dlga.book data  --preset demo                       # cohort + store; prints the store
    python -m dlga.book data  --preset paper --dataset avec2014 --root /data/AVEC2014
    python -m dlga.book build --preset demo                       # notebooks + HTML
    python -m dlga.book build --preset ci --only 01_introduction  # a few chapters
    python -m dlga.book runs  --preset demo                       # dry run: the runs the book needs

``build`` executes every chapter notebook with papermill (parameters ``preset``, ``dataset``,
``root``, ``seeds``) into ``_build/executed/<preset>/``, keyed by a hash of the notebook, its
parameters, the package source (:func:`dlga.runs.source_hash`) and the data fingerprint, so an
unchanged second build skips papermill. It then stages the executed notebooks with the
Markdown pages, ``_config.yml`` and ``_toc.yml`` into ``_build/src/`` and runs
``jupyter-book build`` there (no execution by jupyter-book, warnings are errors); the output
is ``_build/html/index.html``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = PROJECT_ROOT / "book"
DATASETS = ("synthetic", "avec2013", "avec2014")
PARTITIONS = ("Training", "Development", "Testing")

# The chapters, in order; the toc lists the same stems.
CHAPTERS = (
    "01_introduction",
    "02_data",
    "03_architecture",
    "04_training",
    "05_ablations",
    "06_learning_rate",
    "07_comparison",
    "08_attention",
    "09_efficiency",
    "10_reproducibility",
)


@dataclass(frozen=True)
class BookPreset:
    """Everything a preset fixes for the book.

    Args:
        name: ``ci``, ``demo`` or ``paper``.
        cohort: the synthetic cohort preset (``data_prep.synthetic.PRESETS``); None for real data.
        model_preset: :data:`dlga.config.PRESETS` name.
        train_preset: :data:`dlga.train.TRAIN_PRESETS` name.
        train_overrides: fields of the training schedule changed for the book.
        seeds: seeds of the ablation grid (every setting, every seed).
        lr_seeds: seeds of the learning-rate study.
        learning_rates: the rates of the learning-rate study (setting G).
        ablation_lr: the rate of the ablation runs; None: the rate the learning-rate study
            selects on Development (lowest mean Development RMSE over ``lr_seeds``).
        size: side of the aligned faces in the store (the model resizes to its input).
        sample_fps: frames per second kept by preprocessing.
        max_frames: faces kept per video by preprocessing (None: all).
        workers: processes for the cohort and preprocessing.
        bootstrap: resamples of the paired bootstrap in the summary chapters.
        bench_quick: the efficiency chapter times the tiny preset only.
    """

    name: str
    cohort: str | None
    model_preset: str = "tiny"
    train_preset: str = "ci"
    train_overrides: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    lr_seeds: tuple[int, ...] = (0,)
    learning_rates: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    ablation_lr: float | None = None
    size: int = 64
    sample_fps: float | None = 5.0
    max_frames: int | None = None
    workers: int = 2
    bootstrap: int = 2000
    bench_quick: bool = True

    def train_config(self, **changes: Any):
        from dlga.train import TrainConfig

        return TrainConfig.preset(self.train_preset, **{**dict(self.train_overrides), **changes})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_overrides"] = dict(self.train_overrides)
        return d


PRESETS: dict[str, BookPreset] = {
    # Tests: 10 settings x 3 seeds of a short schedule; the learning-rate study with one seed.
    # jit_compile=False: compiling the training step with XLA took minutes on a busy 2-core
    # machine, more than a whole short run costs without it.
    # Warm-up 20 of 80 steps: with 40, C (GA + WSPP) collapsed to the mean for seed 1 (its
    # global gate shut, DESIGN.md section 2); with 20 all 10 settings x 3 seeds learned, C
    # seed 1 barely (prediction sd 1.0, Development RMSE 12.5 against 13.96).
    # The ablation rate is fixed at 1e-3 (the rate the demo study selects; the ci chapter
    # shows its own study beside it) so that the ablation grid does not wait for the study.
    "ci": BookPreset(
        name="ci", cohort="ci", train_preset="ci",
        train_overrides=(("max_steps", 80), ("eval_every", 20), ("warmup_steps", 20), ("jit_compile", False)),
        seeds=(0, 1, 2), lr_seeds=(0,), learning_rates=(1e-5, 1e-4, 1e-3, 1e-2),
        ablation_lr=1e-3, bootstrap=500,
    ),
    # `make book`: the demo cohort and schedule; the ablation rate is selected on Development.
    # 30 ablation runs + 4 learning rates of ~300 steps at batch 32 fit the 45-minute goal
    # on 2 cores (estimated from the ci runs' cost; 1e-6 learns nothing in so few steps and
    # 1e-1 diverges, so the study spans 1e-5..1e-2; the paper preset studies all six).
    "demo": BookPreset(
        name="demo", cohort="demo", train_preset="demo",
        train_overrides=(("max_steps", 300), ("eval_every", 50), ("jit_compile", False)),
        seeds=(0, 1, 2), lr_seeds=(0,), learning_rates=(1e-5, 1e-4, 1e-3, 1e-2), ablation_lr=None,
        bootstrap=2000,
    ),
    # Real data on a GPU: the paper's model and schedule, lr 1e-6 as the paper.
    "paper": BookPreset(
        name="paper", cohort=None, model_preset="paper", train_preset="paper",
        seeds=(0, 1, 2), lr_seeds=(0,), ablation_lr=1e-6, size=224, sample_fps=5.0,
        workers=4, bench_quick=False,
    ),
}


def get_preset(name: str) -> BookPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown book preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


# --- data -----------------------------------------------------------------------------------
def data_root(preset: BookPreset) -> Path:
    return PROJECT_ROOT / "data" / preset.name


def cohort_dir(preset: BookPreset, seed: int = 0) -> Path:
    return data_root(preset) / ("cohort" if seed == 0 else f"cohort-seed{seed}")


def _stamp_path(preset: BookPreset, dataset: str, root: str | None, seed: int = 0) -> Path:
    data = [preset.cohort, preset.size, preset.sample_fps, preset.max_frames, dataset, str(root)]
    if seed:
        data.append(seed)
    key = hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]
    return data_root(preset) / f"store-{dataset}-{key}.json"


def prepare_data(
    preset: str | BookPreset = "ci",
    dataset: str = "synthetic",
    root: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    cohort_seed: int = 0,
) -> Path:
    """Return the preprocessed store the book uses, making it first if needed.

    ``dataset="synthetic"`` makes the preset's synthetic cohort under ``data/<preset>/cohort``
    (nothing is redone if it is there) and preprocesses it. ``avec2013``/``avec2014`` read the
    user's copy at ``root``; any other value is taken as a path to a manifest CSV (the
    ``manifest`` adapter). The store is ``data/<preset>/stores/<dataset>-s<size>-<hash>/``.
    A stamp file remembers a finished store, so a second call costs milliseconds.

    ``cohort_seed`` > 0 makes another synthetic cohort of the same preset with that seed (new
    subjects and labels), of which only Testing is full-size: the cross-dataset test set.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    stamp = _stamp_path(preset, dataset, None if root is None else str(root), cohort_seed)
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        store = Path(info["store"])
        if (store / "manifest.csv").is_file() and (store / "qc.csv").is_file():
            return store
    from data_prep.datasets import load_dataset
    from data_prep.preprocess import preprocess
    from data_prep.store import atomic_write_json

    if dataset == "synthetic":
        if preset.cohort is None:
            raise ValueError(
                f"preset {preset.name!r} runs on real data: pass --dataset avec2014 (or avec2013) --root DIR"
            )
        from data_prep.synthetic import CohortConfig, make_cohort

        cohort = CohortConfig.preset(preset.cohort)
        if cohort_seed:  # only Testing is read from a cross-dataset cohort
            cohort = dataclasses.replace(cohort, n_train=1, n_dev=1, name=f"{cohort.name}-seed{cohort_seed}")
        make_cohort(cohort, cohort_dir(preset, cohort_seed), seed=cohort_seed,
                    workers=preset.workers, progress=progress)
        adapter, where = "avec2014", cohort_dir(preset, cohort_seed)
    elif dataset in ("avec2013", "avec2014"):
        if root is None:
            raise ValueError(f"--dataset {dataset} needs --root: the folder of your {dataset.upper()} copy")
        adapter, where = dataset, Path(root)
    else:
        adapter, where = "manifest", Path(dataset)
    manifest, _report = load_dataset(adapter, where)
    name = "synthetic" if dataset == "synthetic" else adapter
    if cohort_seed:
        name = f"synthetic-seed{cohort_seed}"
    store = preprocess(
        manifest, data_root(preset) / "stores", size=preset.size, sample_fps=preset.sample_fps,
        workers=preset.workers, dataset=name, max_frames=preset.max_frames, progress=progress,
    )
    atomic_write_json(stamp, {"store": str(store), "dataset": dataset, "root": None if root is None else str(root),
                              "made": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return store


def is_synthetic(dataset: str) -> bool:
    return dataset == "synthetic"


# --- runs -----------------------------------------------------------------------------------
RUNS_ROOT = PROJECT_ROOT / "runs"


def run_specs(
    preset: str | BookPreset,
    store: str | os.PathLike,
    settings: Iterable[str] = ("G",),
    learning_rates: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
):
    """RunSpecs of settings x learning rates x seeds for the preset's model and schedule."""
    from dlga.runs import RunSpec

    preset = get_preset(preset) if isinstance(preset, str) else preset
    seeds = preset.seeds if seeds is None else tuple(seeds)
    rates = [preset.train_config().learning_rate] if learning_rates is None else list(learning_rates)
    return [
        RunSpec(setting=s, model_preset=preset.model_preset,
                train=preset.train_config(learning_rate=float(lr)), store_dir=str(store), seed=int(seed))
        for s in settings for lr in rates for seed in seeds
    ]


def ensure_runs(specs, runs_root: str | os.PathLike = RUNS_ROOT, progress: bool = False) -> list:
    """Execute the missing runs of ``specs`` (complete ones are reused); return loaded Runs."""
    from dlga.runs import execute, load_run

    out = []
    for i, spec in enumerate(specs, 1):
        path = execute(spec, runs_root, progress=progress)
        out.append(load_run(path))
    return out


def lr_study_specs(preset: str | BookPreset, store, seeds: Iterable[int] | None = None):
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return run_specs(preset, store, ["G"], preset.learning_rates, preset.lr_seeds if seeds is None else seeds)


def select_learning_rate(runs) -> float:
    """The rate with the lowest mean Development RMSE (per video) over its seeds."""
    import pandas as pd

    table = pd.DataFrame({"lr": [r.params["train"]["learning_rate"] for r in runs],
                          "dev_rmse": [r.metrics["dev"]["rmse"] for r in runs]})
    return float(table.groupby("lr")["dev_rmse"].mean().idxmin())


def ablation_learning_rate(preset: str | BookPreset, store, runs_root=RUNS_ROOT) -> tuple[float, str]:
    """The ablation rate and how it was chosen (the preset's fixed rate, or the LR study's)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if preset.ablation_lr is not None:
        return float(preset.ablation_lr), "fixed by the preset"
    runs = ensure_runs(lr_study_specs(preset, store), runs_root)
    return select_learning_rate(runs), "selected by the learning-rate study on Development"


def ablation_specs(preset: str | BookPreset, store, settings: Iterable[str] | None = None,
                   seeds: Iterable[int] | None = None, runs_root=RUNS_ROOT):
    from dlga.config import SETTINGS

    lr, _ = ablation_learning_rate(preset, store, runs_root)
    return run_specs(preset, store, list(settings or SETTINGS), [lr], seeds)


def cross_dataset_specs(preset: str | BookPreset, store, test_store, seeds: Iterable[int] | None = None,
                        runs_root=RUNS_ROOT):
    """Setting G trained (and selected) on ``store``, tested on the Testing partition of
    ``test_store``: the cross-dataset runs (same seeds as the learning-rate study)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    lr, _ = ablation_learning_rate(preset, store, runs_root)
    specs = run_specs(preset, store, ["G"], [lr], preset.lr_seeds if seeds is None else seeds)
    return [dataclasses.replace(s, test_store_dir=str(test_store)) for s in specs]


def cross_dataset(preset: str | BookPreset, store, dataset: str, cross: str | None = None,
                  cross_root=None, runs_root=RUNS_ROOT):
    """Runs of G trained on ``store`` and tested on another dataset, with that dataset's name.

    ``cross=None`` on synthetic data: a second synthetic cohort made with another seed. For
    real data name the other dataset (``avec2013`` <-> ``avec2014``) and its ``cross_root``.
    Returns ``(runs, name)``, or ``([], reason)`` when no second dataset is given.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if cross is None:
        if not is_synthetic(dataset):
            return [], "no second dataset given (set cross_dataset and cross_root)"
        test_store, name = prepare_data(preset, "synthetic", cohort_seed=1), "synthetic, seed 1"
    else:
        test_store, name = prepare_data(preset, cross, cross_root), cross
    return ensure_runs(cross_dataset_specs(preset, store, test_store, runs_root=runs_root), runs_root), name


# --- notebooks and the HTML build -------------------------------------------------------------
BUILD_DIR = PROJECT_ROOT / "_build"


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def notebook_parameters(preset: BookPreset, dataset: str, root, seeds) -> dict[str, Any]:
    return {"preset": preset.name, "dataset": dataset, "root": None if root is None else str(root),
            "seeds": None if seeds is None else [int(s) for s in seeds]}


def notebook_source_key(path: Path) -> str:
    """A hash of a notebook's cells (type, source, tags), not of its stored outputs: refreshing
    the outputs that nbval checks does not invalidate the executed copies."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]
    return _sha(json.dumps(cells))


def execute_notebook(
    name: str, parameters: dict[str, Any], out_dir: Path, fingerprint: str, *, force: bool = False,
    log=print,
) -> tuple[Path, bool]:
    """Run ``book/<name>.ipynb`` through papermill into ``out_dir`` unless a cached copy matches.

    Returns ``(executed notebook, whether papermill ran)``.
    """
    from dlga.runs import source_hash

    src = BOOK_DIR / f"{name}.ipynb"
    key = _sha(notebook_source_key(src), json.dumps(parameters, sort_keys=True), source_hash(), fingerprint)
    out = out_dir / f"{name}.ipynb"
    key_file = out_dir / f"{name}.key"
    if not force and out.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        return out, False
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp.ipynb"
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(tmp), parameters=parameters, cwd=str(BOOK_DIR), kernel_name="python3",
                        progress_bar=False, log_output=False)
    import nbformat

    nb = nbformat.read(tmp, as_version=4)
    for cell in nb.cells:  # papermill's copy of the parameters: kept in the file, not on the page
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, tmp)
    os.replace(tmp, out)
    key_file.write_text(key + "\n")
    log(f"  {name}: executed in {time.perf_counter() - t0:.0f} s")
    return out, True


def stage(executed: dict[str, Path], staging: Path) -> None:
    """Copy the executed notebooks, the Markdown pages, the config and the toc into ``staging``."""
    staging.mkdir(parents=True, exist_ok=True)
    wanted = {"_config.yml", "_toc.yml"}
    for name in wanted:
        _copy_if_changed(PROJECT_ROOT / name, staging / name)
    for md in BOOK_DIR.glob("*.md"):
        _copy_if_changed(md, staging / "book" / md.name)
    for asset in (BOOK_DIR / "references.bib",):
        if asset.is_file():
            _copy_if_changed(asset, staging / "book" / asset.name)
    for name, path in executed.items():
        _copy_if_changed(path, staging / "book" / f"{name}.ipynb")
    # Anything staged earlier that is no longer part of the book goes.
    keep = {f"{n}.ipynb" for n in executed} | {p.name for p in BOOK_DIR.glob("*.md")} | {"references.bib"}
    for p in (staging / "book").iterdir():
        if p.is_file() and p.name not in keep:
            p.unlink()


def _copy_if_changed(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    shutil.copy2(src, dst)


def jupyter_book_build(staging: Path, html_out: Path, log=print, strict: bool = True) -> None:
    """``jupyter-book build`` of the staged sources (warnings are errors when ``strict``); HTML
    into ``html_out``. A partial book (``--only``) is not strict: its links to the chapters
    left out cannot resolve."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(staging), "--builder", "html",
           "--path-output", str(staging)]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(staging))
    if res.returncode:
        sys.stderr.write(res.stdout[-8000:] + res.stderr[-8000:])
        raise RuntimeError(f"jupyter-book build failed (exit {res.returncode}); see the log above")
    built = staging / "_build" / "html"
    if html_out.exists():
        shutil.rmtree(html_out)
    shutil.copytree(built, html_out)
    if not strict:
        log("  (partial book: warnings were not errors)")
    log(f"  jupyter-book: {time.perf_counter() - t0:.0f} s -> {html_out / 'index.html'}")


def build(
    preset: str = "demo",
    dataset: str = "synthetic",
    root: str | os.PathLike | None = None,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    force: bool = False,
    build_dir: str | os.PathLike = BUILD_DIR,
    log=print,
) -> Path:
    """Data, every chapter through papermill (cached), then the HTML. Returns index.html."""
    from data_prep.store import store_fingerprint

    t0 = time.perf_counter()
    p = get_preset(preset)
    build_dir = Path(build_dir)
    store = prepare_data(p, dataset, root, progress=True)
    log(f"store: {store} ({time.perf_counter() - t0:.0f} s)")
    fingerprint = store_fingerprint(store)
    params = notebook_parameters(p, dataset, root, seeds)
    chapters = [c for c in CHAPTERS if not only or c in only or c.split("_", 1)[0] in only]
    unknown = [o for o in (only or []) if not any(c == o or c.split("_", 1)[0] == o for c in CHAPTERS)]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; chapters: {list(CHAPTERS)}")
    out_dir = build_dir / "executed" / f"{p.name}-{dataset}-{_sha(json.dumps(params, sort_keys=True))[:8]}"
    executed = {}
    for name in chapters:
        executed[name], _ran = execute_notebook(name, params, out_dir, fingerprint, force=force, log=log)
    staging = build_dir / "src"
    write_toc(chapters, staging)
    stage(executed, staging)
    write_toc(chapters, staging)
    html = build_dir / "html"
    jupyter_book_build(staging, html, log=log, strict=len(chapters) == len(CHAPTERS))
    log(f"book built in {time.perf_counter() - t0:.0f} s: {html / 'index.html'}")
    return html / "index.html"


def write_toc(chapters: Sequence[str], staging: Path) -> None:
    """The staged ``_toc.yml``: the project's toc, cut to the chapters built."""
    import yaml

    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    keep = {f"book/{c}" for c in chapters}
    root = toc["root"]
    if "parts" in toc:
        for part in toc["parts"]:
            part["chapters"] = [c for c in part["chapters"] if c["file"] in keep]
        toc["parts"] = [p for p in toc["parts"] if p["chapters"]]
    if "chapters" in toc:
        toc["chapters"] = [c for c in toc["chapters"] if c["file"] in keep]
    if root not in keep and toc.get("chapters"):
        toc["root"] = toc["chapters"].pop(0)["file"]
    if not toc.get("chapters") and not toc.get("parts"):
        # One page alone: jb-book insists on a non-empty chapter list, an article does not.
        toc = {"format": "jb-article", "root": toc["root"]}
    text = yaml.safe_dump(toc, sort_keys=False)
    staging.mkdir(parents=True, exist_ok=True)
    dst = staging / "_toc.yml"
    if not dst.is_file() or dst.read_text() != text:
        dst.write_text(text)


def refresh_committed(executed_dir: str | os.PathLike, chapters: Sequence[str] = CHAPTERS) -> list[str]:
    """Copy the outputs of the cells tagged ``nbval-check-output`` from executed ``ci`` notebooks
    into ``book/*.ipynb`` (matched by cell id), clearing every other output: the committed
    notebooks then hold exactly what ``pytest --nbval-lax book/`` compares. Returns the
    chapters whose stored outputs changed."""
    import nbformat

    changed = []
    for name in chapters:
        src_path = BOOK_DIR / f"{name}.ipynb"
        src = nbformat.read(src_path, as_version=4)
        done = nbformat.read(Path(executed_dir) / f"{name}.ipynb", as_version=4)
        by_id = {c.get("id"): c for c in done.cells}
        before = nbformat.writes(src)
        for cell in src.cells:
            if cell.cell_type != "code":
                continue
            cell.execution_count = None
            cell.outputs = []
            if "nbval-check-output" in cell.metadata.get("tags", []):
                ran = by_id.get(cell.get("id"))
                if ran is None or ran.source != cell.source:
                    raise ValueError(f"{name}: executed notebook does not match the source; rebuild it first")
                cell.outputs = [o for o in ran.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
                cell.execution_count = ran.execution_count  # nbval skips outputs of "unrun" cells
        if nbformat.writes(src) != before:
            nbformat.write(src, src_path)
            changed.append(name)
    return changed


# --- command line ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dlga.book", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("data", "make (if synthetic) and preprocess the dataset; print the store"),
                       ("build", "execute the chapters (cached) and build the HTML"),
                       ("runs", "dry run: the runs the book needs and which are missing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
        p.add_argument("--dataset", default="synthetic",
                       help="synthetic, avec2013, avec2014, or the path of a manifest CSV")
        p.add_argument("--root", default=None, help="the dataset folder for avec2013/avec2014")
        if name in ("build", "runs"):
            p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the preset's)")
        if name == "build":
            p.add_argument("--only", nargs="+", default=None, help="chapters to build (e.g. 01 02 05_ablations)")
            p.add_argument("--force", action="store_true", help="rerun papermill even when the cache matches")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dataset in ("avec2013", "avec2014") and not args.root:
        raise SystemExit(f"--dataset {args.dataset} needs --root DIR (your copy of the dataset)")
    if args.command == "data":
        print(prepare_data(args.preset, args.dataset, args.root, progress=True))
        return 0
    if args.command == "runs":
        import pandas as pd
        from dlga.runs import plan

        store = prepare_data(args.preset, args.dataset, args.root)
        p = get_preset(args.preset)
        specs = lr_study_specs(p, store) if p.ablation_lr is None else []
        lr = p.ablation_lr
        if lr is None:
            print("ablation rate: selected by the learning-rate study (the runs below come first)")
            lr = p.train_config().learning_rate
            try:
                lr, _ = ablation_learning_rate(p, store) if plan(specs, RUNS_ROOT)["state"].eq("complete").all() else (lr, "")
            except Exception:  # noqa: BLE001 - dry run: fall back to the preset's rate
                pass
        from dlga.config import SETTINGS
        specs += run_specs(p, store, list(SETTINGS), [lr], args.seeds)
        specs += lr_study_specs(p, store) if p.ablation_lr is not None else []
        seen, unique = set(), []
        for s in specs:
            if s.run_id not in seen:
                seen.add(s.run_id)
                unique.append(s)
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(plan(unique, RUNS_ROOT).to_string(index=False))
        return 0
    build(args.preset, args.dataset, args.root, args.seeds, args.only, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
