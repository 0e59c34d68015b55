"""Dataset adapters and their validation, on directory trees built here (data_prep.datasets)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_prep import __main__ as cli
from data_prep.datasets import DatasetError, load_dataset
from data_prep.store import MANIFEST_COLUMNS


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def avec2014_tree(root: Path, sessions=None) -> Path:
    """AVEC2014 layout: Video/<Partition>/<Task>/<id>_<Task>_video.mp4, labels in varied folders."""
    sessions = sessions or {
        "Training": {"203_1": 12, "205_1": 3},
        "Development": {"206_1": 25, "205_2": 7},  # subject 205 again: session-disjoint only
        "Testing": {"210_2": 40},
    }
    label_dirs = {
        "Training": "Training_DepressionLabels",
        "Development": "Development_DepressionLabels",
        "Testing": "AVEC2014_Labels_Testset/Testing/DepressionLabels",
    }
    for part, ids in sessions.items():
        video_part = part.lower() if part == "Development" else part  # case-insensitive folders
        for sid, bdi in ids.items():
            for task in ("Freeform", "Northwind"):
                touch(root / "Video" / video_part / task / f"{sid}_{task}_video.mp4")
            touch(root / label_dirs[part] / f"{sid}_Depression.csv", f"{bdi}\n")
    return root


def test_avec2014_manifest(tmp_path):
    manifest, report = load_dataset("avec2014", avec2014_tree(tmp_path))
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 10
    row = manifest.set_index("video_id").loc["203_1_Freeform"]
    assert (row.subject_id, row.session_id, row.task, row.partition, row.bdi) == ("203", "203_1", "Freeform", "Training", 12.0)
    assert manifest.groupby("partition").size().to_dict() == {"Training": 4, "Development": 4, "Testing": 2}
    assert set(manifest[manifest.session_id == "205_2"].partition) == {"Development"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest.path)
    shared = [w for w in report.warnings if "more than one partition" in w]
    assert len(shared) == 1 and shared[0].startswith("1 subject(s)") and "205" in shared[0]
    assert report.skipped == []
    with pytest.raises(DatasetError, match="not subject-disjoint"):
        load_dataset("avec2014", tmp_path, subject_disjoint=True)


def test_avec2013_manifest(tmp_path):
    for part, sid, bdi in [("Training", "203_1", 20), ("Development", "204_2", 0), ("Testing", "207_1", 63)]:
        touch(tmp_path / part / f"{sid}_cut_combined.mp4")
        touch(tmp_path / "labels" / part / f"{sid}_Depression.csv", str(bdi))
    touch(tmp_path / "Training" / "notes.avi")
    manifest, report = load_dataset("avec2013", tmp_path)
    assert manifest.video_id.tolist() == ["203_1", "204_2", "207_1"]
    assert manifest.session_id.tolist() == manifest.video_id.tolist()
    assert set(manifest.task) == {"Combined"} and manifest.bdi.tolist() == [20.0, 0.0, 63.0]
    assert [Path(p).name for p, _ in report.skipped] == ["notes.avi"]


@pytest.mark.parametrize(
    "label, message",
    [("abc", "'abc' is not a number"), ("64", "outside the BDI-II range 0-63"), ("-1", "outside the BDI-II range"),
     ("3 4", "expected one number"), ("", "expected one number")],
)
def test_bad_label_values(tmp_path, label, message):
    avec2014_tree(tmp_path)
    bad = touch(tmp_path / "Training_DepressionLabels" / "203_1_Depression.csv", label)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset("avec2014", tmp_path)
    assert str(bad) in str(err.value)


def test_unreadable_and_missing_label_files(tmp_path):
    avec2014_tree(tmp_path)
    path = tmp_path / "Training_DepressionLabels" / "203_1_Depression.csv"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DatasetError, match="unreadable label file"):
        load_dataset("avec2014", tmp_path)
    other = tmp_path / "novideo"
    touch(other / "Training" / "203_1_Freeform_video.mp4")
    with pytest.raises(DatasetError, match="no label files"):
        load_dataset("avec2014", other)


def test_unlabelled_videos_are_skipped_and_orphan_labels_warned(tmp_path):
    avec2014_tree(tmp_path)
    touch(tmp_path / "Video" / "Testing" / "Freeform" / "300_1_Freeform_video.mp4")
    touch(tmp_path / "Training_DepressionLabels" / "400_1_Depression.csv", "9")
    manifest, report = load_dataset("avec2014", tmp_path)
    assert "300_1_Freeform" not in set(manifest.video_id)
    assert [(Path(p).name, why) for p, why in report.skipped] == [("300_1_Freeform_video.mp4", "no label file 300_1_Depression.csv")]
    assert any(w.startswith("1 label file(s) without a video") and "400_1_Depression.csv" in w for w in report.warnings)


def test_duplicate_ids_and_empty_partition(tmp_path):
    avec2014_tree(tmp_path)
    touch(tmp_path / "copy" / "Training" / "203_1_Freeform_video.mp4")
    with pytest.raises(DatasetError, match="duplicate video id 203_1_Freeform"):
        load_dataset("avec2014", tmp_path)
    empty = avec2014_tree(tmp_path / "e", {"Training": {"1_1": 1}, "Development": {"2_1": 2}, "Testing": {}})
    with pytest.raises(DatasetError, match="partition Testing is empty"):
        load_dataset("avec2014", empty)
    manifest, _ = load_dataset("avec2014", empty, require_partitions=("Training",))
    assert len(manifest) == 4


def test_manifest_adapter(tmp_path):
    touch(tmp_path / "v" / "a.mp4")
    touch(tmp_path / "v" / "b.mp4")
    table = pd.DataFrame({
        "video_id": ["a", "b", "c"], "subject_id": ["s1", "s2", "s3"], "task": ["T"] * 3,
        "partition": ["training", "Development", "Testing"], "bdi": [1, 2.5, 3], "path": ["v/a.mp4", "v/b.mp4", "v/c.mp4"],
    })
    table.to_csv(tmp_path / "manifest.csv", index=False)
    manifest, report = load_dataset("manifest", tmp_path / "manifest.csv", require_partitions=("Training",))
    assert manifest.video_id.tolist() == ["a", "b"] and manifest.partition.tolist() == ["Training", "Development"]
    assert manifest.session_id.tolist() == ["a", "b"]
    assert len(report.skipped) == 1 and "video c has a label but no file" in report.skipped[0][1]
    table["bdi"] = table["bdi"].astype(object)
    table.loc[1, "bdi"] = "high"
    table.loc[2, "video_id"] = "a"
    table.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(DatasetError) as err:
        load_dataset("manifest", tmp_path)
    assert "duplicate video_id(s) ['a']" in str(err.value) and "bdi is not a number in 0-63 for video(s) ['b']" in str(err.value)
    table.drop(columns="bdi").to_csv(tmp_path / "m2.csv", index=False)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['bdi'\]"):
        load_dataset("manifest", tmp_path / "m2.csv")


def openface_csv(path: Path, n: int = 3) -> None:
    cols = ["frame", "face_id", "timestamp", "confidence", "success"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    rows = [[i + 1, 0, i / 30, 0.98, 1] + [100.0 + i] * 68 + [120.0] * 68 for i in range(n)]
    lines = [", ".join(cols)] + [", ".join(str(v) for v in r) for r in rows]  # OpenFace's ", " separator
    touch(path, "\n".join(lines) + "\n")
    (path.parent / f"{path.stem}_aligned").mkdir(exist_ok=True)


def test_openface_adapter(tmp_path):
    openface_csv(tmp_path / "of" / "203_1_Freeform.csv")
    openface_csv(tmp_path / "of" / "204_1_Freeform.csv")
    labels = pd.DataFrame({"video_id": ["203_1_Freeform", "204_1_Freeform", "999_1_Freeform"], "subject_id": ["203", "204", "999"],
                           "task": ["Freeform"] * 3, "partition": ["Training", "Testing", "Testing"], "bdi": [4, 5, 6]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    manifest, report = load_dataset("openface", tmp_path / "of", labels=tmp_path / "labels.csv", require_partitions=("Training", "Testing"))
    assert manifest.video_id.tolist() == ["203_1_Freeform", "204_1_Freeform"]
    assert all(p.endswith(".csv") for p in manifest.path)
    assert len(report.skipped) == 1 and report.skipped[0][0] == "999_1_Freeform"
    touch(tmp_path / "of" / "204_1_Freeform.csv", "frame, confidence, success\n1, 0.9, 1\n")
    with pytest.raises(DatasetError, match="not an OpenFace FeatureExtraction CSV"):
        load_dataset("openface", tmp_path / "of", labels=tmp_path / "labels.csv")


def test_check_command(tmp_path, capsys):
    avec2014_tree(tmp_path / "d")
    out = tmp_path / "m.csv"
    assert cli.main(["check", "--dataset", "avec2014", "--root", str(tmp_path / "d"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 videos, 5 sessions, 4 subjects" in text and "warning: 1 subject(s)" in text
    assert len(pd.read_csv(out)) == 10
    touch(tmp_path / "d" / "Training_DepressionLabels" / "203_1_Depression.csv", "70")
    assert cli.main(["check", "--dataset", "avec2014", "--root", str(tmp_path / "d")]) == 2
    assert "outside the BDI-II range 0-63" in capsys.readouterr().err


def test_check_subject_disjoint_exits_with_an_error(tmp_path, capsys):
    import subprocess
    import sys

    avec2014_tree(tmp_path / "d")  # subject 205 is in Training and Development
    args = ["check", "--dataset", "avec2014", "--root", str(tmp_path / "d"), "--subject-disjoint"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: avec2014 dataset at") and "1 subject(s) have videos in more than one partition (205)" in err
    assert "not subject-disjoint" in err and "put each subject's videos in one partition" in err
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2 and "not subject-disjoint" in proc.stderr and proc.stdout == ""
    assert cli.main(args[:-1]) == 0  # without the flag: a warning only


def test_check_warns_about_sessions_missing_a_task_video(tmp_path, capsys):
    root = avec2014_tree(tmp_path)
    (root / "Video" / "Training" / "Northwind" / "203_1_Northwind_video.mp4").unlink()
    (root / "Video" / "Testing" / "Freeform" / "210_2_Freeform_video.mp4").unlink()
    _, report = load_dataset("avec2014", root)
    missing = [w for w in report.warnings if "without their" in w]
    assert missing == [
        "1 session(s) without their Freeform video (AVEC2014 sessions have Freeform and Northwind): 210_2",
        "1 session(s) without their Northwind video (AVEC2014 sessions have Freeform and Northwind): 203_1",
    ]
    assert cli.main(["check", "--dataset", "avec2014", "--root", str(root)]) == 0
    assert "without their Northwind video" in capsys.readouterr().out
    _, complete = load_dataset("avec2014", avec2014_tree(tmp_path / "complete"))
    assert not [w for w in complete.warnings if "without their" in w]
