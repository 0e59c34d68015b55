"""Command line of dlga: ``python -m dlga {predict,export,runs,bench} --help``.

- ``predict``: BDI-II estimate and severity band of face videos with a trained run or an
  exported model; per-frame CSV and an annotated video on request.
- ``export``: a trained run as a self-contained SavedModel or a ``.keras`` file.
- ``runs``: the run cache (``python -m dlga.runs``): status, plan, run.
- ``bench``: parameters, GFLOPs and speed of the model (``make bench``).

Exit status: 0 on success, 1 when some videos could not be scored (the others are), 2 when
the run, the model or the arguments cannot be used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from data_prep.store import atomic_write_csv
from dlga.runs.rundir import RunError

# dlga.inference.predict and dlga.inference.export load TensorFlow (seconds): each command imports what it needs,
# so that `--help` and the delegated commands answer without it.

DELEGATED = {
    "runs": ("dlga.runs.cli", "the run cache: status, plan, run (see `python -m dlga runs --help`)"),
    "bench": ("dlga.bench", "benchmark: parameters, GFLOPs, speed, memory (see `python -m dlga bench --help`)"),
}

PREDICT_EPILOG = """\
The video is preprocessed as the training store was (sampling rate, face detector, aligned
size, as recorded in the run's params.json or the export's dlga.json); every sampled frame with a face
is scored and the video's estimate is the mean of its frames. Severity bands (BDI-II):
0-13 minimal, 14-19 mild, 20-28 moderate, 29-63 severe. A research model, not a diagnosis.
Every output (printed lines, CSV, overlay) says so, and says when the model learned from
synthetic faces (the book's demo runs do): its number then means nothing for a real person.

examples:
  python -m dlga predict interview.mp4 --run runs/G-1a2b3c4d5e6f
  python -m dlga predict a.mp4 b.mp4 --model exports/G --out frames.csv --overlay annotated.mp4
"""

EXPORT_EPILOG = """\
savedmodel: a directory that loads with tf.saved_model.load() without this project (inputs
  image float32 (None,S,S,3) 0-255 and landmarks float32 (None,68,2) aligned pixels; outputs
  score, local_attention, global_attention).
keras: a .keras file; load it with `import dlga.model.layers; keras.models.load_model(PATH)`.
Both carry dlga.json (format version, model configuration, preprocessing parameters, what the
training faces were and the notice), which `python -m dlga predict --model PATH` reads, and
NOTICE.txt (the notice in words).

example:
  python -m dlga export runs/G-1a2b3c4d5e6f --format savedmodel --out exports/G
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dlga", description="DLGA-CNN: score videos with a trained model, export it, manage runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,export,runs,bench}")

    p = sub.add_parser("predict", help="BDI-II estimate of face videos with a trained run or exported model",
                       description="Estimate depression severity (BDI-II, 0-63) from face videos.",
                       epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files (anything OpenCV decodes)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="RUN_DIR", help="a complete run directory (runs/<id>)")
    src.add_argument("--model", type=Path, metavar="PATH",
                     help="an exported model: SavedModel directory or .keras file from `python -m dlga export`")
    p.add_argument("--store", type=Path, metavar="STORE_DIR",
                   help="read the preprocessing from this training store's params.json instead of the copy "
                        "the run recorded (only needed for runs that recorded none)")
    p.add_argument("--out", type=Path, metavar="CSV",
                   help="write per-frame predictions: video, frame_index, how, prediction, a1..a24, global_attention, "
                        "training_data (synthetic, real or unknown), notice")
    p.add_argument("--overlay", type=Path, metavar="OUT.mp4",
                   help="write the video with face box, patch centres coloured by attention, the running "
                        "estimate and the notice (several videos: OUT_<video name>.mp4 each)")
    p.add_argument("--batch-size", type=int, default=64, help="frames per model call (default: %(default)s)")

    e = sub.add_parser("export", help="write a trained run as a SavedModel or .keras file",
                       description="Export the selected weights of a complete run for inference.",
                       epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", type=Path, metavar="RUN_DIR", help="a complete run directory (runs/<id>)")
    e.add_argument("--format", choices=("savedmodel", "keras"), default="savedmodel",
                   help="savedmodel (self-contained, default) or keras (needs `import dlga.model.layers` to load)")
    e.add_argument("--out", type=Path, required=True, metavar="PATH",
                   help="SavedModel directory, or .keras file (the suffix is added if missing)")
    e.add_argument("--store", type=Path, metavar="STORE_DIR", help="the run's training store, if it moved")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    for name, (_, text) in DELEGATED.items():
        d = sub.add_parser(name, help=text, add_help=False)
        d.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def cmd_predict(args) -> int:
    from dlga.inference.predict import (  # deferred: loads TensorFlow, see the note at the imports
        PredictError, frame_table, load_predictor, overlay_paths, predict_video, write_overlay,
    )

    if args.batch_size < 1:
        _error(f"--batch-size must be >= 1, got {args.batch_size}")
        return 2
    if args.overlay is not None and args.overlay.suffix.lower() != ".mp4":
        _error(f"--overlay {args.overlay}: the overlay is written as mp4v, give a path ending in .mp4")
        return 2
    try:
        predictor = load_predictor(args.run or args.model, args.store)
    except RunError as exc:
        _error(str(exc))
        return 2
    from data_prep.extract import make_detector
    from dlga.inference.notice import describe

    print(f"training data: {describe(predictor.training_data)}", flush=True)
    detector = make_detector(predictor.preprocessing)  # the store's detector, fallback included
    overlays = overlay_paths(args.overlay, args.videos) if args.overlay is not None else [None] * len(args.videos)
    results, failed = [], 0
    for video, overlay in zip(args.videos, overlays):
        try:
            result = predict_video(video, predictor, detector=detector, batch_size=args.batch_size)
        except PredictError as exc:
            _error(str(exc))
            failed += 1
            continue
        results.append(result)
        print(result.summary(), flush=True)
        if overlay is not None:
            print(f"  overlay: {write_overlay(result, overlay, predictor)}")
    if args.out is not None and results:
        atomic_write_csv(args.out, frame_table(results))
        print(f"per-frame predictions: {args.out}")
    if failed:
        print(f"{failed} of {len(args.videos)} video(s) could not be scored", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    from dlga.inference.export import export_run  # deferred: loads TensorFlow, see the note at the imports

    try:
        out = export_run(args.run, args.out, args.format, store_dir=args.store, overwrite=args.overwrite)
    except (RunError, FileExistsError) as exc:
        _error(str(exc))
        return 2
    from dlga.inference.exportdir import read_metadata
    from dlga.inference.notice import describe, notice

    meta = read_metadata(out)[0]
    print(f"exported {args.run} as {args.format}: {out}")
    print(f"training data: {describe(meta['training_data'])}\nnote: {notice(meta['training_data'])}")
    if args.format == "keras":
        print("load it with: import dlga.model.layers, keras; keras.models.load_model(PATH)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Delegated commands keep their own parsers (and --help) untouched.
    if argv and argv[0] in DELEGATED:
        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    return {"predict": cmd_predict, "export": cmd_export}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
