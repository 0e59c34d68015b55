"""Reference numbers: a build's headline numbers and verdicts, and whether they match the shipped ones.

A run is reproducible only on the same instruction set (book/decisions.md, "Verdicts that
reproduce"): on another CPU every run is another draw of training noise. So the book ships the
headline of one build (``book/reference/<preset>.json``), with tolerances set from the spread
measured between two builds on different instruction sets, and any build can say whether it
matches:

* the learning rate the rule chose (exact);
* per setting, the mean Testing and Development RMSE over seeds (within ``rmse_bdi``);
* every verdict: the ablation family (difference / equivalent / inconclusive), the controls
  (leak / no leak) and the smallest flagged leak (exact, except for the verdicts the
  reference itself marks fragile: those may differ, and the report says so).

Command line (``python -m dlga.book``)::

    python -m dlga.book reference --preset demo     # write book/reference/demo.json from the runs
    python -m dlga.book verify --preset demo        # compare this build's runs with it

Two builds on two CPUs (say a native one and one with ``ONEDNN_MAX_CPU_ISA=AVX2``), each from
its own clone::

    python -m dlga.book reference --out native.json          # in the first clone, after make book
    python -m dlga.book reference --out avx2.json            # in the second
    python -m dlga.book verdicts native.json avx2.json       # their verdicts side by side
    python -m dlga.book verify --reference native.json       # or: the second against the first
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from data_prep.store import atomic_write_json
from dlga.book import controls, data, experiments, intervals, presets
from dlga.settings import PROJECT_ROOT, lock_hash

REFERENCE_DIR = PROJECT_ROOT / "book" / "reference"
REFERENCE_FORMAT_VERSION = 1

DEFAULT_TOLERANCES = {"rmse_bdi": 0.5}
"""BDI points a setting's mean RMSE over seeds may move between builds on different CPUs. The
demo's is set from the measured cross-CPU spread (the reference file carries its own)."""


FRAGILE_ALLOWED = " (fragile in the reference: allowed)"
"""The end of a :func:`compare` line for a verdict the reference marks fragile (an interval end
within the measured cross-CPU spread of its boundary): another CPU may read it otherwise, so
it is listed but is no mismatch."""


def reference_path(preset: str) -> Path:
    return REFERENCE_DIR / f"{preset}.json"


def cpu_isa() -> str:
    """The instruction set oneDNN may use: ``$ONEDNN_MAX_CPU_ISA`` when set, else the widest
    vector extension the CPU reports (Linux ``/proc/cpuinfo``)."""
    forced = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if forced:
        return f"{forced} (ONEDNN_MAX_CPU_ISA)"
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.machine()
    for isa, flag in (("AVX512 + AMX", "amx_tile"), ("AVX512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"), ("SSE4.1", "sse4_1")):
        if flag in flags:
            return isa
    return platform.machine()


def build_environment() -> str:
    """What a build ran on beyond its parameters, one line for the Status page and ``verify``: the
    instruction set oneDNN may use and the hash of the lock file the libraries came from."""
    return f"CPU instruction set (oneDNN): {cpu_isa()}. Lock file: {lock_hash()}."


def _ablation(P, store) -> tuple[dict, dict, float, str]:
    study = experiments.ensure_runs(experiments.rate_selection_specs(P, store), executor="serial")
    lr, how = experiments.ablation_learning_rate(P, study)
    runs = experiments.ensure_runs(experiments.ablation_specs(P, store, lr), executor="serial")
    by: dict[str, list] = {}
    for r in runs:
        by.setdefault(r.params["setting"], []).append(r)
    settings = {s: {"seeds": len(rs),
                    "test_rmse": sum(r.metrics["test"]["rmse"] for r in rs) / len(rs),
                    "dev_rmse": sum(r.metrics["dev"]["rmse"] for r in rs) / len(rs)} for s, rs in by.items()}
    table, _ = intervals.comparisons_with(runs, "G", n=P.bootstrap)
    verdicts = {f"G vs {row['G minus']}": {"verdict": row["verdict"], "reading": row["reading"],
                                           "low": round(float(row["low"]), 3), "high": round(float(row["high"]), 3),
                                           "fragile": bool(row["fragile"])}
                for row in table.to_dict("records")}
    return settings, verdicts, lr, how


def _controls(P, lr: float) -> dict[str, Any]:
    stores = controls.control_stores(P)
    runs = {c: experiments.ensure_runs(s, executor="serial") for c, s in controls.control_specs(P, stores, lr).items()}
    return controls.read_controls(runs, n=P.bootstrap).verdicts()


def headline(preset: str = "demo", dataset: str = "synthetic", root=None) -> dict[str, Any]:
    """This build's headline numbers and verdicts, from its complete runs (a run that is
    missing is trained first, one at a time: build the book first to avoid that)."""
    P = presets.get_preset(preset)
    store = data.prepare_data(P, dataset, root)
    settings, verdicts, lr, how = _ablation(P, store)
    out = {"format_version": REFERENCE_FORMAT_VERSION, "preset": P.name, "dataset": dataset, "learning_rate": lr,
           "how": how, "settings": settings, "verdicts": verdicts, "cpu_isa": cpu_isa(),
           "lock": lock_hash()}
    if data.is_synthetic(dataset) and P.cohort is not None:
        out["controls"] = _controls(P, lr)
    return out


def write_reference(head: Mapping[str, Any], tolerances: Mapping[str, float] | None = None,
                    path: str | os.PathLike | None = None) -> Path:
    """Write ``head`` (:func:`headline`) with its ``tolerances`` as the preset's reference file."""
    path = Path(path or reference_path(head["preset"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**head, "tolerances": dict(tolerances or DEFAULT_TOLERANCES)})
    return path


def load_reference(preset: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path or reference_path(preset))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference for preset {preset!r}; write one from a complete build with "
                                f"`python -m dlga.book reference --preset {preset}`")
    ref = json.loads(path.read_text())
    if ref.get("format_version") != REFERENCE_FORMAT_VERSION:
        raise ValueError(f"{path}: reference format {ref.get('format_version')!r}, this version reads {REFERENCE_FORMAT_VERSION}; "
                         "write it again with `python -m dlga.book reference`")
    return ref


def compare(head: Mapping[str, Any], ref: Mapping[str, Any]) -> list[str]:
    """What differs between a build's headline and the reference, one line each (empty: it
    matches). A verdict the reference marks fragile may read otherwise on another CPU: its line
    ends with :data:`FRAGILE_ALLOWED` and :func:`verify` does not count it as a mismatch."""
    tol = float(ref.get("tolerances", DEFAULT_TOLERANCES)["rmse_bdi"])
    diffs = []
    if head["learning_rate"] != ref["learning_rate"]:
        diffs.append(f"learning rate: {head['learning_rate']:g} (reference {ref['learning_rate']:g})")
    for s, want in ref["settings"].items():
        got = head["settings"].get(s)
        if got is None:
            diffs.append(f"{s}: no runs (reference has {want['seeds']} seeds)")
            continue
        if got["seeds"] != want["seeds"]:
            diffs.append(f"{s}: {got['seeds']} seeds (reference {want['seeds']})")
        for key in ("test_rmse", "dev_rmse"):
            if abs(got[key] - want[key]) > tol:
                diffs.append(f"{s} mean {key}: {got[key]:.2f} (reference {want[key]:.2f}, tolerance {tol:g} BDI)")
    for name, want in ref["verdicts"].items():
        got = head["verdicts"].get(name)
        if got is None or (got["verdict"], got["reading"]) != (want["verdict"], want["reading"]):
            shown = "missing" if got is None else f"{got['verdict']}, {got['reading']}"
            diffs.append(f"{name}: {shown} (reference {want['verdict']}, {want['reading']})"
                         + (FRAGILE_ALLOWED if want.get("fragile") else ""))
    for name, want in ref.get("controls", {}).items():
        got = head.get("controls", {}).get(name)
        if name == "positive":
            if got is None or got["smallest flagged level"] != want["smallest flagged level"]:
                diffs.append(f"positive control: smallest flagged leak {None if got is None else got['smallest flagged level']} "
                             f"(reference {want['smallest flagged level']})" + (FRAGILE_ALLOWED if want.get("fragile") else ""))
        elif got is None or got["verdict"] != want["verdict"]:
            diffs.append(f"{name} control: {None if got is None else got['verdict']} (reference {want['verdict']})")
    return diffs


def verify(preset: str = "demo", dataset: str = "synthetic", root=None, path=None) -> tuple[bool, list[str], dict]:
    """Compare this build with the preset's reference: ``(matches, differences, headline)``."""
    ref = load_reference(preset, path)
    head = headline(preset, dataset, root)
    diffs = compare(head, ref)
    return not [d for d in diffs if not d.endswith(FRAGILE_ALLOWED)], diffs, head


def verify_text(preset: str, matches: bool, diffs: list[str], ref_path: Path | None = None) -> str:
    """The verdict of :func:`verify` as Markdown, for the terminal and the Status page."""
    where = ref_path or reference_path(preset)
    listed = "\n".join(f"- {d}" for d in diffs)
    if not matches:
        return f"This build **differs** from the reference `{where.name}` in {len(diffs)} place(s):\n\n{listed}"
    text = f"This build **matches** the reference `{where.name}` (rate, every setting's mean RMSE within tolerance, every verdict"
    if not diffs:
        return text + ")."
    # Only verdicts the reference marks fragile differ (verify): name them rather than hide them.
    return text + f" but {len(diffs)} the reference marks fragile, which read otherwise here):\n\n{listed}"


def _reading(v: Mapping[str, Any]) -> str:
    text = f"{v['verdict']}, {v['reading'].replace(' within 1 BDI', '')}"
    if "low" in v:
        text += f" [{v['low']:+.2f}, {v['high']:+.2f}]"
    return text + (" (fragile)" if v.get("fragile") else "")


def _level(v: Mapping[str, Any] | None) -> str:
    if v is None or v.get("smallest flagged level") is None:
        return "none flagged"
    text = f"{v['smallest flagged level']:g} (gain {v['gain at it (BDI)']:.2f} BDI)" + (" (fragile)" if v.get("fragile") else "")
    robust = v.get("smallest robustly flagged level")
    return text + f"; robustly {'none' if robust is None else f'{robust:g}'}"


def side_by_side(heads: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Builds' headlines (:func:`headline` or reference files, by label) as one table: a row for
    the rate, each setting's mean Testing RMSE, each ablation verdict with its Holm interval
    and each control, a column per build, and ``agree``: for a verdict whether every build reads
    it the same (tie/difference and equivalent/inconclusive; the interval may move), for an
    RMSE how far the means lie apart (BDI)."""
    if not heads:
        raise ValueError("side_by_side needs at least one headline")
    labels = list(heads)
    first = heads[labels[0]]
    rows: list[dict[str, Any]] = []

    def row(name, cells, agree):
        rows.append({"": name, **dict(zip(labels, cells)), "agree": agree})

    def same(values):
        return "yes" if len(set(values)) == 1 else "no"

    rates = [h["learning_rate"] for h in heads.values()]
    row("learning rate", [f"{r:g}" for r in rates], same(rates))
    for s in first["settings"]:
        got = [h["settings"].get(s) for h in heads.values()]
        means = [g["test_rmse"] for g in got if g is not None]
        row(f"{s}: mean Testing RMSE (seeds)", ["missing" if g is None else f"{g['test_rmse']:.2f} ({g['seeds']})" for g in got],
            f"{max(means) - min(means):.2f} apart" if len(means) == len(got) else "no")
    for name in first["verdicts"]:
        got = [h["verdicts"].get(name) for h in heads.values()]
        row(name, ["missing" if g is None else _reading(g) for g in got],
            same([None if g is None else (g["verdict"], g["reading"]) for g in got]))
    for name in first.get("controls", {}):
        got = [h.get("controls", {}).get(name) for h in heads.values()]
        if name == "positive":
            row("positive control: smallest flagged leak (grey levels)", [_level(g) for g in got],
                same([None if g is None else g["smallest flagged level"] for g in got]))
        else:
            row(f"{name} control", ["missing" if g is None else g["verdict"] + (" (fragile)" if g.get("fragile") else "") for g in got],
                same([None if g is None else g["verdict"] for g in got]))
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a Markdown (GitHub) table, for the terminal and a closing note: its columns
    padded to one width each, no index."""
    cells = [list(map(str, table.columns))] + [[str(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]])


def read_headline(path: str | os.PathLike) -> dict[str, Any]:
    """A headline written by ``reference --out`` (or a shipped reference file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such headline; write one in a built clone with "
                                "`python -m dlga.book reference --out FILE`")
    head = json.loads(path.read_text())
    missing = [k for k in ("learning_rate", "settings", "verdicts") if k not in head]
    if missing:
        raise ValueError(f"{path}: not a headline of `python -m dlga.book reference` (no {', '.join(missing)})")
    return head
