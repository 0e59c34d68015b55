"""The book build: papermill executes the chapters, jupyter-book renders them, and its CLI.

What the book runs is planned elsewhere: presets in :mod:`dlga.book.presets`, their data in
:mod:`dlga.book.data`, run specs and the learning-rate choice in :mod:`dlga.book.experiments`,
chapter parameters in :mod:`dlga.book.parameters`; this module only executes and renders the
chapters.

Command line::

    python -m dlga.book data  --preset demo                       # cohort + store; prints the store
    python -m dlga.book data  --preset paper --dataset avec2014 --root /data/AVEC2014
    python -m dlga.book build --preset demo                       # notebooks + HTML
    python -m dlga.book build --preset ci --only 01_introduction  # a few chapters
    python -m dlga.book build --preset demo --set learning_rate=1e-4 --set max_steps=600
    python -m dlga.book build --preset demo --executor dask://HOST:8786
    python -m dlga.book runs  --preset demo                       # dry run: the runs the book needs

``build`` first trains every run the chapters need through one executor (``--executor``, see
:mod:`dlga.runs.executors`; the chapters get the same one as their ``executor`` parameter), under
one progress bar: the learning-rate study, then the ablation grid at the rate it selects on
Development. It then executes every chapter notebook with papermill (parameters ``preset``,
``dataset``, ``root`` and each ``--set NAME=VALUE`` the chapter has in its parameters cell)
into ``_build/executed/<preset>-<dataset>-<hash>/``, keyed by a hash of the notebook, its
parameters, the source of the project modules it imports (:func:`chapter_modules`), the
numerics of its runs and the data fingerprint, so an unchanged second build skips papermill. It then stages the executed notebooks with the
Markdown pages (the Decisions chapter among them), a status page (when each chapter ran, how
long, its parameters and library versions), ``_config.yml`` and ``_toc.yml`` into
``_build/src/`` and runs ``jupyter-book build`` there (no execution by jupyter-book, warnings
are errors); the output is ``_build/html/index.html``.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import functools
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import pandas as pd
import papermill as pm
import yaml
from tqdm import tqdm  # tqdm.auto warns in every notebook kernel without ipywidgets

from data_prep.store import store_fingerprint
from dlga.book.data import is_synthetic, prepare_data
from dlga.book.experiments import (
    ablation_learning_rate,
    book_specs,
    cross_dataset_specs,
    rate_selection_specs,
    train_book_runs,
)
from dlga.book.controls import control_specs, control_stores
from dlga.book.parameters import KNOBS, chapter_preset, format_value, unknown_parameters_message
from dlga.book.presets import AVEC_DATASETS, BOOK_PRESETS, get_preset
from dlga.runs.cache import load_run, numerics_identity, plan
from dlga.settings import BUILD_DIR, PROJECT_ROOT, RUNS_DIR, lock_hash

BOOK_DIR = PROJECT_ROOT / "book"

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
    "11_controls",
)
# Markdown pages (nothing to execute), in toc order after the chapters; every build stages them.
PAGES = ("decisions",)
# Pages the build writes (after PAGES in the toc): the status of this build's chapters.
GENERATED_PAGES = ("status",)
# The chapters that read runs: the build trains their runs before executing any chapter.
RUN_CHAPTERS = ("04_training", "05_ablations", "06_learning_rate", "07_comparison", "08_attention", "11_controls")
# Chapters that time things: they execute alone, after the others, so nothing runs beside them.
TIMED_CHAPTERS = ("09_efficiency",)
# Libraries whose versions the status page lists for each chapter.
STATUS_LIBRARIES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "papermill", "jupyter-book", "myst-nb")


# --- notebooks and the HTML build -------------------------------------------------------------


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def chapter_parameter_names(name: str) -> tuple[str, ...]:
    """The names the parameters cell of ``book/<name>.ipynb`` assigns, in order."""
    nb = nbformat.read(BOOK_DIR / f"{name}.ipynb", as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError(f"book/{name}.ipynb has no cell tagged 'parameters'")
    return tuple(t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name))


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``["learning_rate=1e-4", "seeds=0,1"]`` as ``{"learning_rate": 0.0001, "seeds": "0,1"}``:
    numbers and JSON are parsed, ``True``/``False``/``None`` too; anything else stays a string
    (a chapter reads a comma-separated list from it). Names are checked against the knobs."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set learning_rate=1e-4")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = {"True": True, "False": False, "None": None}.get(text, text)
        out[name.strip()] = value
    unknown = [k for k in out if k not in KNOBS]
    if unknown:
        raise ValueError(unknown_parameters_message(unknown, KNOBS))
    return out


def chapter_parameters(name: str, dataset: str, root, base: dict[str, Any], executor: str = "local") -> dict[str, Any]:
    """The papermill parameters of chapter ``name``: ``preset`` etc., ``executor`` (where a
    chapter that trains sends its runs) and each override of ``base`` that its parameters cell
    has (a chapter without a knob does not get it)."""
    names = set(chapter_parameter_names(name))
    params = {"preset": base["preset"], "dataset": dataset, "root": None if root is None else str(root),
              "executor": executor}
    params.update({k: list(v) if isinstance(v, tuple) else v for k, v in base.items() if k != "preset"})
    return {k: v for k, v in params.items() if k in names}


def notebook_source_key(path: Path) -> str:
    """A hash of a notebook's cells (type, source, tags), not of its stored outputs: refreshing
    the outputs that nbval checks does not invalidate the executed copies."""
    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]
    return _sha(json.dumps(cells))


PACKAGES = ("dlga", "data_prep")
"""The project's packages: a chapter's cache key covers the modules of these it imports."""


def _module_file(module: str) -> Path | None:
    """The source file of a project module (``dlga.book.report``), or None outside the packages."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, package: str = "") -> set[str]:
    """The project modules an AST imports (``from dlga.book import report`` names ``dlga.book.report``;
    a relative import is resolved against ``package``)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if _module_file(m) is not None}


def module_closure(modules) -> list[str]:
    """``modules`` and every project module they import, transitively, sorted. A package's
    ``__init__`` counts as imported with any of its modules."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(1, len(module.split(".")))]
        path = _module_file(module)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        st = path.stat()
        todo.extend(parents + sorted(_file_imports(str(path), st.st_mtime_ns, st.st_size, package)))
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def _file_imports(path: str, mtime_ns: int, size: int, package: str) -> frozenset[str]:
    """:func:`_imported_modules` of one source file, parsed once per version of the file: a
    build keys eleven chapters whose closures share most modules (parsing them again for each
    took about 20 s of an unchanged build)."""
    return frozenset(_imported_modules(ast.parse(Path(path).read_text()), package))


def chapter_modules(name: str) -> list[str]:
    """The project modules chapter ``name`` imports, with everything they import."""
    nb = nbformat.read(BOOK_DIR / f"{name}.ipynb", as_version=4)
    roots: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            try:
                roots |= _imported_modules(ast.parse(cell.source))
            except SyntaxError:  # IPython magics: such a cell imports nothing of ours
                continue
    return module_closure(roots)


NOT_IN_CHAPTER_KEY = ("executor",)
"""Chapter parameters that change no number of an executed chapter, so not its cache key."""


def _notebook_key(name: str, parameters: dict[str, Any], fingerprint: str) -> str:
    """What decides an executed chapter: its cells, its parameters, the data fingerprint, the
    numerics of the runs it reads (:func:`dlga.runs.cache.numerics_identity`: with the parameters
    and the data they fix the run ids) and the source of every project module it imports, so a
    table or prose edit re-executes the chapters that use it (seconds) and retrains nothing."""
    src = BOOK_DIR / f"{name}.ipynb"
    modules = chapter_modules(name)
    code = _sha(*(m.encode() + b"\0" + _module_file(m).read_bytes() for m in modules))
    # Where runs train decides no number (a run id is the same on every executor).
    numbers = {k: v for k, v in parameters.items() if k not in NOT_IN_CHAPTER_KEY}
    return _sha(notebook_source_key(src), json.dumps(numbers, sort_keys=True),
                json.dumps(numerics_identity(), sort_keys=True), code, fingerprint)


def _holds(out_dir: Path, name: str, key: str) -> bool:
    out, key_file = out_dir / f"{name}.ipynb", out_dir / f"{name}.key"
    return out.is_file() and key_file.is_file() and key_file.read_text().strip() == key


def is_executed(name: str, parameters: dict[str, Any], out_dir: Path, fingerprint: str) -> bool:
    """Whether ``out_dir`` holds chapter ``name`` executed from its current cells, with these
    parameters, on the store with this fingerprint and the current code."""
    return _holds(out_dir, name, _notebook_key(name, parameters, fingerprint))


def execute_notebook(
    name: str, parameters: dict[str, Any], out_dir: Path, fingerprint: str, *, force: bool = False,
    log=print,
) -> tuple[Path, bool]:
    """Run ``book/<name>.ipynb`` through papermill into ``out_dir`` unless a cached copy matches.

    Returns ``(executed notebook, whether papermill ran)``.
    """
    src = BOOK_DIR / f"{name}.ipynb"
    key = _notebook_key(name, parameters, fingerprint)
    out, key_file = out_dir / f"{name}.ipynb", out_dir / f"{name}.key"
    if not force and _holds(out_dir, name, key):
        return out, False
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp.ipynb"
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(tmp), parameters=parameters, cwd=str(BOOK_DIR), kernel_name="python3",
                        progress_bar=False, log_output=False)
    nb = nbformat.read(tmp, as_version=4)
    for cell in nb.cells:
        # Both parameter cells stay in the file but not on the page: their defaults (None, the
        # ci preset) would mislead; the chapter's table shows the values it ran with.
        tags = cell.metadata.get("tags", [])
        if ("injected-parameters" in tags or "parameters" in tags) and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nb.metadata["dlga"] = {"parameters": parameters, "versions": status_versions(),
                           "seconds": round(time.perf_counter() - t0, 1),
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    nbformat.write(nb, tmp)
    os.replace(tmp, out)
    key_file.write_text(key + "\n")
    log(f"  {name}: executed in {time.perf_counter() - t0:.0f} s")
    return out, True


def status_versions() -> dict[str, str]:
    """The installed versions of :data:`STATUS_LIBRARIES` for the status page (read from package
    metadata: nothing is imported; :func:`data_prep.store.library_versions` is the general form,
    this one also finds TensorFlow installed as ``tensorflow-cpu``), and the lock file they were
    installed from (:func:`dlga.settings.lock_hash`)."""
    out = {"python": sys.version.split()[0], "lock file": lock_hash()}
    for lib in STATUS_LIBRARIES:
        out[lib] = "not installed"
        for dist in (lib, f"{lib}-cpu"):  # the cpu extra installs TensorFlow as tensorflow-cpu
            try:
                out[lib] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def reference_section(preset: str, dataset: str, root=None, overrides: dict | None = None) -> str:
    """The Status page's "Reference" section: whether this build matches the preset's shipped
    reference numbers (:mod:`dlga.book.reference`), the CPU instruction set it ran on and the lock
    file of its libraries. A build with changed parameters or another dataset has no reference to match."""
    from dlga.book import reference
    head = [reference.build_environment(), ""]
    if overrides or not is_synthetic(dataset) or not reference.reference_path(preset).is_file():
        why = ("its parameters were changed" if overrides else "it is not the synthetic cohort" if not is_synthetic(dataset)
               else f"no reference ships for preset {preset!r}")
        return "\n".join(["## Reference", "", *head, f"This build is not compared with a reference: {why}.", ""])
    matches, diffs, _ = reference.verify(preset, dataset, root)
    return "\n".join(["## Reference", "", *head, reference.verify_text(preset, matches, diffs), ""])


def status_page(executed: dict[str, Path], extra: str = "") -> str:
    """The status page (Markdown): per chapter when it ran, how long it took, its parameters
    and the library versions, read from the executed notebooks' metadata."""
    rows, versions = [], {}
    for name, path in executed.items():
        meta = nbformat.read(path, as_version=4).metadata.get("dlga", {})
        given = sorted(meta.get("parameters", {}).items(), key=lambda kv: (kv[0] not in ("preset", "dataset", "root"), kv[0]))
        params = ", ".join(f"`{k}={format_value(v)}`" for k, v in given if v is not None)
        rows.append(f"| [{name}]({name}.ipynb) | {meta.get('finished', '?')} | {meta.get('seconds', '?')} | {params} |")
        for lib, v in meta.get("versions", {}).items():
            versions.setdefault(lib, {}).setdefault(v, []).append(name.split("_", 1)[0])
    lib_rows = [f"| {lib} | " + "; ".join(f"{v} ({', '.join(chs)})" if len(by) > 1 else v for v, chs in by.items()) + " |"
                for lib, by in versions.items()]
    return "\n".join([
        "# Status", "",
        "When each chapter of this build was executed (by papermill; a chapter whose notebook, "
        "parameters, code and data did not change is reused from an earlier build), how long it "
        "took, the parameters it ran with and the libraries it ran on.", "",
        "| chapter | executed | seconds | parameters |", "|---|---|---|---|", *rows, "",
        "## Library versions", "",
        "| library | version (chapters, where they differ) |", "|---|---|", *lib_rows, "",
        extra,
    ])


def stage(executed: dict[str, Path], staging: Path, status_extra: str = "") -> None:
    """Copy the executed notebooks, the Markdown pages, the config, the toc and the book's
    stylesheets (``_static/*.css``) into ``staging``;
    ``status_extra``: Markdown appended to the status page (:func:`reference_section`)."""
    staging.mkdir(parents=True, exist_ok=True)
    wanted = {"_config.yml", "_toc.yml"}
    for name in wanted:
        _copy_if_changed(PROJECT_ROOT / name, staging / name)
    for style in (PROJECT_ROOT / "_static").glob("*.css"):  # jupyter-book links every _static/*.css
        _copy_if_changed(style, staging / "_static" / style.name)
    for md in BOOK_DIR.glob("*.md"):
        _copy_if_changed(md, staging / "book" / md.name)
    for asset in (BOOK_DIR / "references.bib",):
        if asset.is_file():
            _copy_if_changed(asset, staging / "book" / asset.name)
    for name, path in executed.items():
        _copy_if_changed(path, staging / "book" / f"{name}.ipynb")
    status = staging / "book" / "status.md"
    text = status_page(executed, status_extra)
    if not status.is_file() or status.read_text() != text:
        status.write_text(text)
    # Anything staged earlier that is no longer part of the book goes.
    keep = ({f"{n}.ipynb" for n in executed} | {p.name for p in BOOK_DIR.glob("*.md")} | {"references.bib"}
            | {f"{p}.md" for p in GENERATED_PAGES})
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
    overrides: dict[str, Any] | None = None,
    executor: str | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> Path:
    """Data, the runs (one executor, one bar), every chapter through papermill (cached), then
    the HTML. Returns index.html.

    ``overrides``: chapter parameters (``{"learning_rate": 1e-4, "max_steps": 600}``), given to
    every chapter whose parameters cell has them; ``seeds`` is the override ``seeds``.
    ``executor``: where runs train (None: ``local``; the chapters get it as their parameter). ``jobs``:
    chapters executed at once (None: one per core, at most :data:`CHAPTER_JOBS`).
    """
    t0 = time.perf_counter()
    overrides = dict(overrides or {})
    if seeds is not None:
        overrides["seeds"] = [int(s) for s in seeds]
    chapters = [c for c in CHAPTERS if not only or c in only or c.split("_", 1)[0] in only]
    unknown = [o for o in (only or []) if not any(c == o or c.split("_", 1)[0] == o for c in CHAPTERS)]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; chapters: {list(CHAPTERS)}")
    had = set().union(*(chapter_parameter_names(c) for c in chapters))
    unused = sorted(set(overrides) - had)
    if unused:
        raise ValueError(f"no chapter built has the parameters {unused}; "
                         f"the chapters built have: {', '.join(sorted(had & set(KNOBS)))}")
    p = chapter_preset(get_preset(preset), dataset, **overrides)  # a bad value stops the build here
    build_dir = Path(build_dir)
    store = prepare_data(p, dataset, root, progress=progress)
    log(f"store: {store} ({time.perf_counter() - t0:.0f} s)")
    fingerprint = store_fingerprint(store)
    executor = executor or "local"
    if set(chapters) & set(RUN_CHAPTERS):
        cross, controls = None, {}
        if "07_comparison" in chapters and is_synthetic(dataset):
            cross = prepare_data(p, "synthetic", cohort_seed=1)
        if "11_controls" in chapters and is_synthetic(dataset):
            controls = control_stores(p, progress=progress)
            log(f"control cohorts: {', '.join(controls)} ({time.perf_counter() - t0:.0f} s)")

        def extra(lr: float) -> list:
            specs = [] if cross is None else cross_dataset_specs(p, store, cross, lr)
            return specs + [s for group in control_specs(p, controls, lr).values() for s in group]

        train_book_runs(p, store, RUNS_DIR, executor, progress=progress, extra=extra,
                        announce=lambda n: log(device_line(p, n, executor)))
    base = {"preset": p.name, **overrides}
    key = _sha(json.dumps({"dataset": dataset, "root": str(root), **base}, sort_keys=True, default=str))[:8]
    out_dir = build_dir / "executed" / f"{p.name}-{dataset}-{key}"
    executed = execute_chapters(chapters, lambda name: chapter_parameters(name, dataset, root, base, executor),
                                out_dir, fingerprint, force=force, jobs=jobs, progress=progress, log=log)
    staging = build_dir / "src"
    write_toc(chapters, staging)
    extra = reference_section(p.name, dataset, root, overrides) if len(chapters) == len(CHAPTERS) else ""
    stage(executed, staging, extra)
    write_toc(chapters, staging)
    html = build_dir / "html"
    jupyter_book_build(staging, html, log=log, strict=len(chapters) == len(CHAPTERS))
    log(f"book built in {time.perf_counter() - t0:.0f} s: {html / 'index.html'}")
    return html / "index.html"


def device_line(preset, n_runs: int, executor: str = "local", bench_json: str | os.PathLike | None = None) -> str:
    """Where the book's runs will train, said before they start: the GPUs TensorFlow sees, or
    that it runs on the CPU and about how long ``n_runs`` runs of the preset's schedule take
    there (from the training step ``make bench`` timed for the preset's model, if it did).
    Runs on another executor (Dask) train where its workers are: this names that instead."""
    if executor not in ("local", "serial") and not executor.startswith("local:"):
        return f"device: the workers of {executor} (their GPUs, if any, are theirs)"
    from dlga import bench

    gpus = bench.machine(gpus=True)["gpus"]
    if gpus:
        return f"device: {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(gpus)}); the runs train there"
    train = preset.train_config()
    steps = n_runs * train.max_steps
    saved = bench.load_result(bench_json or PROJECT_ROOT / "bench" / "dlga.json") or {}
    timed = [r["train_s_per_step_batch32"] for r in saved.get("rows", [])
             if r.get("preset") == preset.model_preset and r.get("train_s_per_step_batch32")]
    text = f"device: CPU only (TensorFlow sees no GPU); up to {n_runs} runs x {train.max_steps} steps"
    if not timed:
        return text + (f"; `make bench` times a {preset.model_preset!r} training step, which gives an estimate")
    hours = steps * min(timed) * train.batch_size / 32 / 3600
    return text + f", about {hours:,.1f} h at the {min(timed):.3g} s per 32-frame step make bench measured here"


CHAPTER_JOBS = 2
"""At most this many chapter kernels at once by default: each keeps about one core busy."""


def _execute_in_worker(name: str, parameters: dict[str, Any], out_dir: Path, fingerprint: str,
                       force: bool) -> tuple[Path, list[str]]:
    """What a chapter worker process does: :func:`execute_notebook`, its log lines returned.
    (A process, not a thread: papermill changes the process's working directory.)"""
    lines: list[str] = []
    out, _ran = execute_notebook(name, parameters, out_dir, fingerprint, force=force, log=lines.append)
    return out, lines


def execute_chapters(
    chapters: Sequence[str], parameters: Callable[[str], dict[str, Any]], out_dir: Path, fingerprint: str, *,
    force: bool = False, jobs: int | None = None, progress: bool = True, log=print,
) -> dict[str, Path]:
    """Execute ``chapters`` (:func:`execute_notebook`; cached copies are reused), ``jobs`` at
    once in worker processes, under one progress bar; :data:`TIMED_CHAPTERS` run after the
    others, alone. ``parameters(name)``: a chapter's papermill parameters. Returns the executed
    notebooks in the order of ``chapters``. When a chapter fails, the ones already running
    finish (their executed copies are kept), the others do not start, and the error is raised.
    """
    jobs = max(1, min(CHAPTER_JOBS, os.cpu_count() or 1)) if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    params = {name: parameters(name) for name in chapters}
    done = {name: out_dir / f"{name}.ipynb" for name in chapters
            if not force and is_executed(name, params[name], out_dir, fingerprint)}
    todo = [name for name in chapters if name not in done]
    waves = [[c for c in todo if c not in TIMED_CHAPTERS], [c for c in todo if c in TIMED_CHAPTERS]]
    with tqdm(total=len(chapters), initial=len(done), desc="chapters", unit="chapter", disable=not progress,
              dynamic_ncols=True) as bar:
        say = bar.write if progress else log
        for wave in (w for w in waves if w):
            workers = min(jobs, len(wave))
            if workers == 1:  # in this process: no worker to start
                for name in wave:
                    bar.set_postfix_str(name)
                    done[name] = execute_notebook(name, params[name], out_dir, fingerprint, force=force, log=say)[0]
                    bar.update(1)
                continue
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(_execute_in_worker, name, params[name], out_dir, fingerprint, force): name
                           for name in wave}
                waiting = list(wave)
                bar.set_postfix_str(", ".join(waiting[:workers]))
                try:
                    for future in concurrent.futures.as_completed(futures):
                        done[futures[future]], lines = future.result()
                        for line in lines:
                            say(line)
                        waiting.remove(futures[future])
                        bar.set_postfix_str(", ".join(waiting[:workers]))  # in submit order: about the ones running
                        bar.update(1)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    return {name: done[name] for name in chapters}


def write_toc(chapters: Sequence[str], staging: Path) -> None:
    """The staged ``_toc.yml``: the project's toc, cut to the chapters built."""
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    keep = {f"book/{c}" for c in (*chapters, *PAGES, *GENERATED_PAGES)}
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


def runs_plan(preset: str, dataset: str = "synthetic", root=None, seeds: Sequence[int] | None = None,
              runs_root=RUNS_DIR) -> pd.DataFrame:
    """The runs the book needs and their state (a dry run: nothing trains).

    While the learning-rate study that selects the ablation rate is incomplete, the ablation
    grid is listed at the schedule's own rate, and the column ``note`` says so.
    """
    p = get_preset(preset)
    store = prepare_data(p, dataset, root)
    study = rate_selection_specs(p, store)
    if study and not plan(study, runs_root)["state"].eq("complete").all():
        lr = p.train_config().learning_rate
        note = f"ablation rate {lr:g} is a placeholder until the learning-rate study is complete"
    else:
        lr, note = ablation_learning_rate(p, [load_run(s.run_dir(runs_root)) for s in study])[0], ""
    table = plan(book_specs(p, store, lr, seeds), runs_root)
    return table.assign(note=note) if note else table


# --- command line ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dlga.book", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("data", "make (if synthetic) and preprocess the dataset; print the store"),
                       ("build", "execute the chapters (cached) and build the HTML"),
                       ("runs", "dry run: the runs the book needs and which are missing"),
                       ("reference", "write book/reference/<preset>.json from this build's runs"),
                       ("verify", "compare this build's runs with book/reference/<preset>.json")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--preset", default="demo", choices=sorted(BOOK_PRESETS))
        p.add_argument("--dataset", default="synthetic",
                       help="synthetic, avec2013, avec2014, or the path of a manifest CSV")
        p.add_argument("--root", default=None, help="the dataset folder for avec2013/avec2014")
        if name == "reference":
            p.add_argument("--rmse-tolerance", type=float, default=None,
                           help="BDI a setting's mean RMSE may move between CPUs (default: keep the file's, else 0.5)")
            p.add_argument("--out", default=None,
                           help="write the headline here instead of book/reference/<preset>.json "
                                "(to compare builds: see the verdicts command)")
        if name == "verify":
            p.add_argument("--reference", default=None,
                           help="compare with this headline file (default: book/reference/<preset>.json)")
        if name in ("build", "runs"):
            p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the preset's)")
        if name == "build":
            p.add_argument("--only", nargs="+", default=None, help="chapters to build (e.g. 01 02 05_ablations)")
            p.add_argument("--force", action="store_true", help="rerun papermill even when the cache matches")
            p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                           help="a chapter parameter for every chapter that has it (repeatable), "
                                "e.g. --set learning_rate=1e-4 --set max_steps=600 --set seeds=0,1")
            p.add_argument("--jobs", type=int, default=None,
                           help=f"chapters executed at once (default: one per core, at most {CHAPTER_JOBS})")
            p.add_argument("--executor", default=None,
                           help="where runs train (the book build's and the chapters'): local (default), "
                                "local:N, serial, dask://HOST:PORT")
    verdicts = sub.add_parser("verdicts", help="headlines of builds (reference --out) side by side: the rate, "
                                               "every verdict and control, and whether they agree")
    verdicts.add_argument("files", nargs="+", help="headline JSON files, one per build")
    verdicts.add_argument("--labels", nargs="+", default=None, help="column titles (default: the files' CPU instruction sets)")
    pages = sub.add_parser("pages", add_help=False,
                           help="measure the built pages in headless Chromium: do tables and code fit the column? "
                                "(python -m dlga.book pages --help)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pages"]:  # its own options (argparse's REMAINDER would not pass --html on)
        from dlga.book import pages
        return pages.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "verdicts":
        from dlga.book import reference
        heads = [reference.read_headline(f) for f in args.files]
        labels = args.labels or [f"{h.get('cpu_isa', '?')} ({Path(f).name})" for h, f in zip(heads, args.files)]
        if len(labels) != len(heads) or len(set(labels)) != len(labels):
            raise SystemExit(f"--labels: give {len(heads)} different titles, one per file")
        print(reference.markdown_table(reference.side_by_side(dict(zip(labels, heads)))))
        return 0
    if args.dataset in AVEC_DATASETS and not args.root:
        raise SystemExit(f"--dataset {args.dataset} needs --root DIR (your copy of the dataset)")
    if args.command == "data":
        print(prepare_data(args.preset, args.dataset, args.root, progress=True))
        return 0
    if args.command in ("reference", "verify"):
        from dlga.book import reference
        if args.command == "reference":
            old = reference.reference_path(args.preset)
            tol = {"rmse_bdi": args.rmse_tolerance} if args.rmse_tolerance is not None else (
                json.loads(old.read_text()).get("tolerances") if old.is_file() else None)
            print(reference.write_reference(reference.headline(args.preset, args.dataset, args.root), tol, args.out))
            return 0
        matches, diffs, _head = reference.verify(args.preset, args.dataset, args.root, args.reference)
        print(reference.build_environment())
        print(reference.verify_text(args.preset, matches, diffs, None if args.reference is None else Path(args.reference)))
        return 0 if matches else 1
    if args.command == "runs":
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(runs_plan(args.preset, args.dataset, args.root, args.seeds).to_string(index=False))
        return 0
    try:
        overrides = parse_set(args.set)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    build(args.preset, args.dataset, args.root, args.seeds, args.only, args.force, overrides=overrides,
          executor=args.executor, jobs=args.jobs)
    return 0
