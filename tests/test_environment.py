"""environment.yml installs the environment `make` builds (the CPU lock), and how `make` runs Python."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_the_cpu_lock_like_make():
    # The environment `make` builds: Python 3.11 (the locks' Python), locks/cpu.txt, and the
    # project with the extras cpu, book and test; the lock carries every version, so no range
    # is repeated here to drift from pyproject.toml.
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["dependencies"] == ["python=3.11", "pip", {"pip": ["-r locks/cpu.txt", "-e .[cpu,book,test]"]}]
    assert "for Python 3.11 on Linux x86_64" in (ROOT / "locks" / "cpu.txt").read_text()
    assert set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]) >= {"cpu", "book", "test"}


def test_ci_runs_make_test_only():
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[-1] == "make test"


def test_make_lets_python_keep_its_bytecode_inside_the_project(tmp_path):
    """`make` runs Python with bytecode written to .cache/pycache, whatever the caller's
    PYTHONDONTWRITEBYTECODE: the ~40 processes of `make test` then compile each module once."""
    import os
    import subprocess

    probe = tmp_path / "Makefile"
    # The project's variables, then a target printing what a Python child of make sees.
    probe.write_text(f"include {ROOT / 'Makefile'}\n"
                     "probe:\n\t@python3 -c 'import sys; print(sys.flags.dont_write_bytecode, sys.pycache_prefix)'\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "-f", str(probe), "probe"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", str(ROOT / ".cache" / "pycache")]


def test_reading_runs_does_not_import_tensorflow():
    """The chapters that only read runs (tables, intervals, prose) start without TensorFlow:
    its import costs each of the ~20 notebook kernels of `make test` several seconds. Training
    (dlga.training.train), models and predictions import it where they are used."""
    import subprocess
    import sys

    modules = ("dlga.book.presets, dlga.book.data, dlga.book.experiments, dlga.book.parameters, dlga.book.report, "
               "dlga.book.intervals, dlga.book.figures, dlga.book.models, dlga.book.controls, dlga.book.prose, "
               "dlga.book.baselines, dlga.runs.cache, dlga.config")
    probe = (f"import sys, {modules}\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'dlga.training.train', 'dlga.training.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
