"""Command line of data_prep: ``python -m data_prep {check,preprocess,qc,bench,synth} --help``.

- ``check``: validate a dataset and write its manifest without decoding any video (seconds).
- ``preprocess``: videos -> aligned faces, one ``.npz`` per video (resumable, parallel).
- ``qc``: detection rates per video and partition, and a montage of aligned faces.
- ``bench``: frames per second of the face pipeline and the accuracy of its fast path.
- ``synth``: the synthetic cohort (``data_prep.synthetic``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import synthetic
from .bench import run_bench
from .datasets import DatasetError, load_dataset, summarize
from .preprocess import preprocess, read_qc
from .qc import qc_report
from .store import StoreError, atomic_write_csv

DATASETS = ("avec2014", "avec2013", "manifest", "openface")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS, help="adapter that reads --root")
    p.add_argument("--root", required=True, type=Path,
                   help="dataset folder (for --dataset manifest: the CSV, or a folder with manifest.csv)")
    p.add_argument("--labels", type=Path, help="labels CSV for --dataset openface (video_id, subject_id, task, partition, bdi)")
    p.add_argument("--subject-disjoint", action="store_true",
                   help="fail when a subject has videos in two partitions (for your own splits; the official AVEC ones share subjects)")
    p.add_argument("--partitions", default=",".join(("Training", "Development", "Testing")),
                   help="comma-separated partitions that must not be empty (default: all three)")


def _load(args) -> tuple[pd.DataFrame, object]:
    req = tuple(p.strip() for p in args.partitions.split(",") if p.strip())
    return load_dataset(args.dataset, args.root, subject_disjoint=args.subject_disjoint,
                        require_partitions=req, labels=args.labels)


def _print_report(manifest: pd.DataFrame, report) -> None:
    counts, stats = summarize(manifest)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(f"{report.dataset} at {report.root}: {len(manifest)} videos, "
              f"{manifest['session_id'].nunique()} sessions, {manifest['subject_id'].nunique()} subjects")
        print("\nvideos per partition and task:")
        print(counts.to_string())
        print("\nBDI-II per partition (one value per session):")
        print(stats.to_string())
    lines = report.lines()
    if lines:
        print(f"\n{len(report.warnings)} warning(s), {len(report.skipped)} skipped file(s):")
        for line in lines:
            print("  " + line)


def cmd_check(args) -> int:
    manifest, report = _load(args)
    _print_report(manifest, report)
    if args.out:
        atomic_write_csv(args.out, manifest)
        print(f"\nwrote {args.out}")
    return 0


def cmd_preprocess(args) -> int:
    manifest, report = _load(args)
    _print_report(manifest, report)
    print()
    store_dir = preprocess(
        manifest, args.out, size=args.size, sample_fps=args.sample_fps, workers=args.workers,
        dataset=args.dataset, detect_max_side=None if args.detect_max_side == 0 else args.detect_max_side,
        upsample=args.upsample, max_reuse=args.max_reuse, max_frames=args.max_frames,
        fallback=None if args.fallback == "none" else args.fallback, progress=not args.quiet,
        **({} if args.min_confidence is None else {"openface_min_confidence": args.min_confidence}),
    )
    qc = read_qc(store_dir)
    bad = qc[qc["status"] != "ok"]
    ok = qc[qc["status"] == "ok"]
    print(f"\nstore: {store_dir}")
    print(f"{len(ok)} of {len(qc)} videos preprocessed, {int(ok['frames_kept'].sum())} faces, "
          f"mean detection rate {ok['detection_rate'].mean() if len(ok) else 0:.3f}")
    if len(bad):
        print(f"{len(bad)} video(s) failed (details in {store_dir / 'qc.csv'}):")
        for _, r in bad.iterrows():
            print(f"  {r['video_id']}: {r['reason']}")
        if not args.allow_failures:
            print("exit status 1: rerun with --allow-failures to accept these failures")
            return 1
    return 0


def cmd_qc(args) -> int:
    qc_report(args.store, out=args.out, n_videos=args.videos, per_video=args.per_video)
    return 0


def cmd_bench(args) -> int:
    run_bench(out=args.out, frames=args.frames, workers=tuple(args.workers))
    return 0


def cmd_synth(args) -> int:
    return int(synthetic.run(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Datasets, faces and the preprocessed store of the DLGA-CNN book.",
        epilog="Run `check` before a long `preprocess`: it validates labels and layout in seconds.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,preprocess,qc,bench,synth}")

    p = sub.add_parser("check", help="validate a dataset and write its manifest (no video is decoded)",
                       description="Validate a dataset folder and print counts, label statistics and every warning.")
    _add_dataset_args(p)
    p.add_argument("--out", type=Path, help="write the manifest CSV here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preprocess", help="videos -> aligned faces (one .npz per video)",
                       description="Detect, landmark and align faces; write a store under OUT/<dataset>-s<size>-<hash>/. "
                                   "Reruns skip finished videos; other parameters write a new folder.")
    _add_dataset_args(p)
    p.add_argument("--out", required=True, type=Path, help="parent folder of the store")
    p.add_argument("--size", type=int, default=224, help="aligned face side in pixels (default 224, the paper's)")
    p.add_argument("--sample-fps", type=float, default=None, help="frames per second to keep (default: every frame)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--detect-max-side", type=int, default=400,
                   help="detect faces on frames shrunk to this longest side, landmarks at full resolution (0: no shrinking)")
    p.add_argument("--upsample", type=int, default=0, help="dlib HOG upsampling (finds smaller faces, slower)")
    p.add_argument("--max-reuse", type=int, default=5, help="frames a lost face's last box may be reused for")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many faces per video")
    p.add_argument("--fallback", choices=("none", "cascade"), default="none",
                   help="detector to try where dlib's HOG finds no face: OpenCV's Haar cascade (default: none)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="--dataset openface: drop frames with a lower OpenFace confidence (and those with success 0); "
                        "default preprocess.OPENFACE_MIN_CONFIDENCE (0.8)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even when some videos failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("qc", help="QC report of a store: detection rates and a face montage",
                       description="Print detection rates per partition and the worst videos; write qc_summary.csv and a PNG montage.")
    p.add_argument("store", type=Path, help="a store folder made by `preprocess`")
    p.add_argument("--out", type=Path, default=None, help="folder for the report files (default: STORE/qc_report)")
    p.add_argument("--videos", type=int, default=4, help="videos in the montage (default 4)")
    p.add_argument("--per-video", type=int, default=6, help="frames per video in the montage (default 6)")
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("bench", help="frames/s of decode+detect+landmarks+align, and the fast path's landmark error",
                       description="Benchmark the face pipeline on a synthetic 640x480 face video made from the CC0 photos.")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--frames", type=int, default=300, help="frames per worker (default 300)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    p.set_defaults(func=cmd_bench)

    # --- synth: the synthetic cohort registers its own arguments here -------------------
    p = sub.add_parser("synth", help="make the synthetic cohort (data_prep.synthetic)")
    synthetic.add_arguments(p)
    p.set_defaults(func=cmd_synth)
    # ---------------------------------------------------------------------------------------
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, StoreError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
