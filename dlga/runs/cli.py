"""The run cache's command line: ``python -m dlga.runs {status,plan,run}`` (also ``python -m dlga runs``).

What each command does is :mod:`dlga.runs.cache`'s: ``status`` lists the runs under
``--runs``, ``plan`` says which runs of a grid are complete or missing, ``run`` executes the
missing ones (or one by ``--id``) through an executor (:mod:`dlga.runs.executors`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dlga.config import MODEL_PRESETS, SETTINGS, TRAIN_PRESETS
from dlga.runs import cache, rundir
from dlga.runs.cache import RunSpec, execute_all, grid, is_complete, list_runs, plan
from dlga.settings import RUNS_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dlga.runs", description=cache.__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(RUNS_DIR), help="runs directory (default: $DLGA_RUNS or runs/ of the checkout)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="list the runs under --runs")
    for name, text in (("plan", "dry run: which runs of a grid are complete or missing"),
                       ("run", "execute the missing runs of a grid, or one run by --id")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--store", help="preprocessed store directory")
        p.add_argument("--settings", nargs="+", default=["G"], choices=list(SETTINGS))
        p.add_argument("--lrs", nargs="+", type=float, default=None, help="learning rates (default: preset's)")
        p.add_argument("--seeds", nargs="+", type=int, default=[0])
        p.add_argument("--model-preset", default="tiny", choices=sorted(MODEL_PRESETS))
        p.add_argument("--train-preset", default="ci", choices=sorted(TRAIN_PRESETS))
        p.add_argument("--max-steps", type=int, default=None)
        p.add_argument("--test-store", help="cross-dataset: evaluate the Testing partition of this other store")
        if name == "run":
            p.add_argument("--id", help="resume or run the run with this id (from its params.json)")
            p.add_argument("--no-progress", action="store_true")
            p.add_argument("--executor", default="local",
                           help="where the runs train: local (one worker per core, default), local:N, serial, "
                                "or dask://HOST:PORT (a Dask scheduler)")
    return parser


def _specs(args) -> list[RunSpec]:
    if not args.store:
        raise SystemExit("--store is required: the preprocessed store the runs train on")
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    return grid(args.store, args.settings, args.lrs, args.seeds, args.model_preset, args.train_preset,
                test_store_dir=args.test_store, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pd.set_option("display.width", 200)
    if args.command == "status":
        table = list_runs(args.runs)
        print(table.drop(columns=["path"]).to_string(index=False) if len(table) else f"no runs under {args.runs}")
        return 0
    if args.command == "plan":
        print(plan(_specs(args), args.runs).to_string(index=False))
        return 0
    root = Path(args.runs)
    if args.id:
        if is_complete(root / args.id):
            print(root / args.id)
            return 0
        params_path = rundir.partial_dir(root, args.id) / rundir.PARAMS
        if params_path.is_file():
            specs = [RunSpec.from_params(rundir.read_params(params_path.parent))]
        else:
            specs = [s for s in _specs(args) if s.run_id == args.id]
        if not specs:
            raise SystemExit(f"no run {args.id!r} under {root} or in the given grid; see `plan` for ids")
    else:
        specs = _specs(args)
    for path in execute_all(specs, root, args.executor, progress=not args.no_progress):
        print(path)
    return 0
