"""Dataset adapters: a folder on disk -> one manifest (Decisions: Data).

A manifest has one row per video with the columns ``store.MANIFEST_COLUMNS``:
``video_id, subject_id, session_id, task, partition, bdi, path`` (``path`` absolute).

Adapters (``load_dataset(name, root, **opts)``):

- ``avec2014``: ``<id>_<Task>_video.mp4`` under ``Training``/``Development``/``Testing``
  folders (the nearest such folder above a video gives its partition, case-insensitively),
  labels ``<id>_Depression.csv`` anywhere under the root. ``video_id = <id>_<Task>``
  (``203_1_Freeform``), ``session_id = <id>`` (``203_1``), ``subject_id = 203``.
- ``avec2013``: one video per recording, stems like ``203_1_cut_combined``; ``video_id =
  session_id = 203_1``. The AVEC2013 recordings join several tasks of one session (reading,
  counting, telling a story...) into one file, so the task is called ``"Combined"``.
- ``manifest``: a user CSV with ``video_id, subject_id, task, partition, bdi, path``
  (``session_id`` optional, default ``video_id``; relative paths are relative to the CSV).
- ``openface``: OpenFace FeatureExtraction outputs, ``<name>.csv`` (columns ``frame``,
  ``confidence``, ``success``, ``x_0..x_67``, ``y_0..y_67``; OpenFace separates header fields
  with ", ") next to ``<name>_aligned/``; labels come from a ``labels`` CSV like ``manifest``'s
  without ``path`` (``video_id`` = ``<name>``). ``path`` is the OpenFace CSV.

Validation happens here, once. Problems the user must fix (no or unreadable label files, a label
that is not a number in 0-63, duplicate ids, an empty partition) raise one :class:`DatasetError`
that lists every such problem. Videos without labels are skipped and listed, labels without
videos are listed as warnings: nothing is silently dropped. The official AVEC partitions are
session-disjoint, not subject-disjoint; subjects shared between partitions are reported as a
warning with the count, or as an error with ``subject_disjoint=True`` (for custom splits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .store import MANIFEST_COLUMNS, PARTITIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm")
BDI_RANGE = (0.0, 63.0)
AVEC2014_TASKS = ("Freeform", "Northwind")
AVEC2013_TASK = "Combined"

_AVEC2014_STEM = re.compile(r"^(\d+)_(\d+)_(freeform|northwind)(?:_video)?$", re.IGNORECASE)
_AVEC2013_STEM = re.compile(r"^(\d+)_(\d+)(?:_.*)?$")
_LABEL_NAME = re.compile(r"^(\d+)_(\d+)_depression\.csv$", re.IGNORECASE)


class DatasetError(ValueError):
    """A dataset on disk cannot be turned into a manifest; the message says what to fix."""


@dataclass
class DatasetReport:
    """What an adapter found besides the manifest.

    Attributes:
        warnings: facts the user should know (labels without videos, shared subjects...).
        skipped: ``(path, reason)`` for every file that is not in the manifest.
    """

    dataset: str
    root: Path
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"warning: {w}" for w in self.warnings]
        out += [f"skipped: {p}: {why}" for p, why in self.skipped]
        return out


def _partition_of(path: Path, root: Path) -> str | None:
    """The nearest Training/Development/Testing folder above ``path`` (case-insensitive)."""
    names = {p.lower(): p for p in PARTITIONS}
    for parent in path.relative_to(root).parents:
        if parent.name.lower() in names:
            return names[parent.name.lower()]
    return None


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _find_videos(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not _is_hidden(p, root)
    )


def parse_bdi(text: str) -> float:
    """A BDI-II score from a label file's text: one number in 0-63, else ValueError."""
    tokens = text.replace(",", " ").split()
    if len(tokens) != 1:
        raise ValueError(f"expected one number, found {len(tokens)} values {tokens[:5]}")
    try:
        value = float(tokens[0])
    except ValueError:
        raise ValueError(f"{tokens[0]!r} is not a number") from None
    if not np.isfinite(value) or not BDI_RANGE[0] <= value <= BDI_RANGE[1]:
        raise ValueError(f"{value:g} is outside the BDI-II range 0-63")
    return value


def _read_avec_labels(root: Path, errors: list[str]) -> dict[str, tuple[float, Path]]:
    """``{session_id: (bdi, file)}`` from every ``<id>_Depression.csv`` under ``root``."""
    labels: dict[str, tuple[float, Path]] = {}
    files = sorted(p for p in root.rglob("*") if _LABEL_NAME.match(p.name) and not _is_hidden(p, root))
    if not files:
        errors.append(
            f"no label files `<subject>_<session>_Depression.csv` anywhere under {root}; the AVEC labels ship "
            "separately from the videos: copy their folders (e.g. Training_DepressionLabels/) under the root"
        )
        return labels
    for path in files:
        m = _LABEL_NAME.match(path.name)
        sid = f"{int(m.group(1))}_{int(m.group(2))}"
        try:
            value = parse_bdi(path.read_text(encoding="utf-8-sig", errors="strict"))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: unreadable label file ({exc}); replace it with the original")
            continue
        except ValueError as exc:
            errors.append(f"{path}: bad label: {exc}; a label file holds one BDI-II score, 0-63")
            continue
        if sid in labels:
            errors.append(f"duplicate label id {sid}: {labels[sid][1]} and {path}; keep one of them")
            continue
        labels[sid] = (value, path)
    return labels


def _avec(root: Path, report: DatasetReport, version: int) -> tuple[pd.DataFrame, list[str]]:
    errors: list[str] = []
    labels = _read_avec_labels(root, errors)
    rows, seen = [], {}
    pattern = _AVEC2014_STEM if version == 2014 else _AVEC2013_STEM
    videos = _find_videos(root)
    if not videos:
        errors.append(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}; is --root the dataset folder?")
    for path in videos:
        m = pattern.match(path.stem)
        if not m:
            expected = "<subject>_<session>_<Freeform|Northwind>_video" if version == 2014 else "<subject>_<session>_cut_combined"
            report.skipped.append((str(path), f"name does not look like {expected}"))
            continue
        subject, session = int(m.group(1)), int(m.group(2))
        sid = f"{subject}_{session}"
        task = m.group(3).capitalize() if version == 2014 else AVEC2013_TASK
        vid = f"{sid}_{task}" if version == 2014 else sid
        partition = _partition_of(path, root)
        if partition is None:
            report.skipped.append((str(path), "no Training/Development/Testing folder above it"))
            continue
        if vid in seen:
            errors.append(f"duplicate video id {vid}: {seen[vid]} and {path}; keep one of them")
            continue
        seen[vid] = path
        if sid not in labels:
            report.skipped.append((str(path), f"no label file {sid}_Depression.csv"))
            continue
        rows.append(
            dict(video_id=vid, subject_id=str(subject), session_id=sid, task=task, partition=partition,
                 bdi=labels[sid][0], path=str(path.resolve()))
        )
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    used = set(frame["session_id"])
    orphans = sorted(set(labels) - used, key=_id_key)
    if orphans and labels:
        report.warnings.append(
            f"{len(orphans)} label file(s) without a video: " + ", ".join(str(labels[s][1]) for s in orphans[:20])
            + (" ..." if len(orphans) > 20 else "")
        )
    if version == 2014 and len(frame):
        tasks = frame.groupby("session_id")["task"].agg(set)
        for task in AVEC2014_TASKS:
            lacking = sorted(tasks[tasks.map(lambda have: task not in have)].index, key=_id_key)
            if lacking:
                report.warnings.append(
                    f"{len(lacking)} session(s) without their {task} video (AVEC2014 sessions have "
                    f"{' and '.join(AVEC2014_TASKS)}): " + ", ".join(lacking[:20]) + (" ..." if len(lacking) > 20 else "")
                )
        parts = frame.groupby("session_id")["partition"].nunique()
        split = sorted(parts[parts > 1].index, key=_id_key)
        if split:
            report.warnings.append(f"{len(split)} session(s) with tasks in different partitions: {', '.join(split[:20])}")
    return frame, errors


def _id_key(sid: str) -> tuple:
    """Natural sort key: ``2_1`` before ``10_1``; mixed text and numbers never compare."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(sid).split("_"))


def _normalise_partition(values: pd.Series, where: str, errors: list[str]) -> pd.Series:
    names = {p.lower(): p for p in PARTITIONS}
    out = values.astype(str).str.strip().str.lower().map(names)
    bad = sorted(set(values[out.isna()].astype(str)))
    if bad:
        errors.append(f"{where}: unknown partition(s) {bad}; expected one of {list(PARTITIONS)}")
    return out


def _validate_table(table: pd.DataFrame, where: str, required: list[str], errors: list[str]) -> pd.DataFrame | None:
    """Shared checks of a user CSV: columns, ids, partitions, BDI range."""
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        errors.append(f"{where}: missing column(s) {missing}; expected {required}")
        return None
    for col in ("video_id", "subject_id", "task"):
        table[col] = table[col].astype(str).str.strip()
    if "session_id" not in table.columns:
        table["session_id"] = table["video_id"]
    table["session_id"] = table["session_id"].astype(str).str.strip()
    dup = sorted(set(table.loc[table["video_id"].duplicated(), "video_id"]))
    if dup:
        errors.append(f"{where}: duplicate video_id(s) {dup[:20]}; each video needs its own id")
    table["partition"] = _normalise_partition(table["partition"], where, errors)
    bdi = pd.to_numeric(table["bdi"], errors="coerce")
    bad = table.loc[bdi.isna() | (bdi < BDI_RANGE[0]) | (bdi > BDI_RANGE[1]), "video_id"]
    if len(bad):
        errors.append(f"{where}: bdi is not a number in 0-63 for video(s) {list(bad)[:20]}")
    table["bdi"] = bdi.astype(float)
    return table


def _read_user_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{path}: cannot read the CSV ({exc})") from exc


def _manifest(root: Path, report: DatasetReport) -> tuple[pd.DataFrame, list[str]]:
    path = root / "manifest.csv" if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"{path}: no such manifest CSV; pass --root FILE.csv (columns {MANIFEST_COLUMNS})")
    errors: list[str] = []
    table = _validate_table(_read_user_csv(path), str(path), ["video_id", "subject_id", "task", "partition", "bdi", "path"], errors)
    if table is None:
        return pd.DataFrame(columns=MANIFEST_COLUMNS), errors
    keep = []
    for i, row in table.iterrows():
        p = Path(str(row["path"]).strip())
        p = p if p.is_absolute() else (path.parent / p)
        if not p.is_file():
            report.skipped.append((str(p), f"video {row['video_id']} has a label but no file"))
            continue
        table.at[i, "path"] = str(p.resolve())
        keep.append(i)
    return table.loc[keep, MANIFEST_COLUMNS].reset_index(drop=True), errors


OPENFACE_REQUIRED = ["frame", "confidence", "success"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]


def read_openface_csv(path: Path) -> pd.DataFrame:
    """An OpenFace FeatureExtraction CSV with stripped column names, validated.

    Returns a frame with at least ``frame, confidence, success, x_0..x_67, y_0..y_67``.
    """
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{path}: cannot read the OpenFace CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in OPENFACE_REQUIRED if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{path}: not an OpenFace FeatureExtraction CSV with 2-D landmarks: missing {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}; run FeatureExtraction with -2Dfp -aligned"
        )
    return table


def _openface(root: Path, report: DatasetReport, labels: str | Path | None) -> tuple[pd.DataFrame, list[str]]:
    if labels is None:
        raise DatasetError("the openface adapter needs labels=CSV (--labels) with video_id, subject_id, task, partition, bdi")
    labels = Path(labels)
    if not labels.is_file():
        raise DatasetError(f"{labels}: no such labels CSV")
    errors: list[str] = []
    table = _validate_table(_read_user_csv(labels), str(labels), ["video_id", "subject_id", "task", "partition", "bdi"], errors)
    if table is None:
        return pd.DataFrame(columns=MANIFEST_COLUMNS), errors
    table["path"] = ""
    csvs = {p.stem: p for p in sorted(root.rglob("*.csv")) if (p.parent / f"{p.stem}_aligned").is_dir()}
    keep = []
    for i, row in table.iterrows():
        p = csvs.get(row["video_id"])
        if p is None:
            report.skipped.append((row["video_id"], f"no OpenFace output {row['video_id']}.csv with {row['video_id']}_aligned/ under {root}"))
            continue
        try:
            read_openface_csv(p)
        except DatasetError as exc:
            errors.append(str(exc))
            continue
        table.at[i, "path"] = str(p.resolve())
        keep.append(i)
    for stem in sorted(set(csvs) - set(table["video_id"])):
        report.warnings.append(f"OpenFace output without a label: {csvs[stem]}")
    return table.loc[keep, MANIFEST_COLUMNS].reset_index(drop=True), errors


def shared_subjects(manifest: pd.DataFrame) -> list[str]:
    """Subjects with videos in more than one partition."""
    n = manifest.groupby("subject_id")["partition"].nunique()
    return sorted(n[n > 1].index, key=_id_key)


def load_dataset(
    name: str,
    root: str | Path,
    *,
    subject_disjoint: bool = False,
    require_partitions: tuple[str, ...] = PARTITIONS,
    labels: str | Path | None = None,
) -> tuple[pd.DataFrame, DatasetReport]:
    """Turn a dataset folder into a validated manifest.

    Args:
        name: ``avec2014``, ``avec2013``, ``manifest`` or ``openface``.
        root: the dataset folder (for ``manifest``: the CSV, or a folder holding manifest.csv).
        subject_disjoint: raise when a subject has videos in two partitions (for custom splits;
            the official AVEC partitions share subjects, which is only a warning by default).
        require_partitions: partitions that must hold at least one labelled video.
        labels: the labels CSV of the ``openface`` adapter.

    Returns:
        ``(manifest, report)``: a DataFrame with ``MANIFEST_COLUMNS`` sorted by partition and
        video id, and a :class:`DatasetReport` of warnings and skipped files.

    Raises:
        DatasetError: listing every problem that needs a fix.
    """
    adapters = ("avec2014", "avec2013", "manifest", "openface")
    if name not in adapters:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {list(adapters)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or directory")
    if name in ("avec2014", "avec2013", "openface") and not root.is_dir():
        raise DatasetError(f"{root}: expected the dataset folder")
    bad_req = [p for p in require_partitions if p not in PARTITIONS]
    if bad_req:
        raise DatasetError(f"require_partitions: unknown {bad_req}; expected names from {list(PARTITIONS)}")
    report = DatasetReport(name, root)
    if name == "avec2014":
        frame, errors = _avec(root, report, 2014)
    elif name == "avec2013":
        frame, errors = _avec(root, report, 2013)
    elif name == "manifest":
        frame, errors = _manifest(root, report)
    else:
        frame, errors = _openface(root, report, labels)
    if not errors:
        counts = frame["partition"].value_counts()
        for part in require_partitions:
            if counts.get(part, 0) == 0:
                errors.append(
                    f"partition {part} is empty: no labelled video in it"
                    + (" (see the skipped files below)" if report.skipped else "")
                )
    shared = shared_subjects(frame) if len(frame) else []
    if shared:
        msg = (
            f"{len(shared)} subject(s) have videos in more than one partition ({', '.join(shared[:10])}"
            f"{' ...' if len(shared) > 10 else ''})"
        )
        if subject_disjoint:
            errors.append(msg + "; the split is not subject-disjoint: put each subject's videos in one partition, "
                          "or leave out --subject-disjoint (subject_disjoint=True) for the official AVEC partitions")
        else:
            report.warnings.append(msg + "; the official AVEC partitions separate sessions, not people")
    if errors:
        extra = "".join(f"\n  {line}" for line in report.lines())
        raise DatasetError(
            f"{name} dataset at {root}: {len(errors)} problem(s):\n  - " + "\n  - ".join(errors) + extra
        )
    order = {p: i for i, p in enumerate(PARTITIONS)}
    frame = frame.assign(_p=frame["partition"].map(order), _k=frame["video_id"].map(_id_key))
    frame = frame.sort_values(["_p", "_k"], kind="stable").drop(columns=["_p", "_k"]).reset_index(drop=True)
    frame["bdi"] = frame["bdi"].astype(float)
    return frame[MANIFEST_COLUMNS], report


def summarize(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts per partition and task, and label statistics per partition."""
    counts = manifest.pivot_table(index="partition", columns="task", values="video_id", aggfunc="count", fill_value=0)
    counts["videos"] = counts.sum(axis=1)
    counts["subjects"] = manifest.groupby("partition")["subject_id"].nunique()
    counts["sessions"] = manifest.groupby("partition")["session_id"].nunique()
    per_session = manifest.drop_duplicates("session_id")
    stats = per_session.groupby("partition")["bdi"].agg(["count", "mean", "std", "min", "median", "max"])
    stats = stats.rename(columns={"count": "sessions"})
    order = [p for p in PARTITIONS if p in counts.index]
    return counts.loc[order], stats.loc[[p for p in order if p in stats.index]].round(2)
