"""The library apart from the book: what trains, runs and uses a model imports none of the
book's or the tests' tools (they are the `book` and `test` extras of pyproject.toml)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The library: the model, the data pipeline, training, runs, executors, prediction and export,
# and the package's command line.
LIBRARY = (
    "dlga", "dlga.__main__", "dlga.settings", "dlga.config", "dlga.bench",
    "dlga.model.patches", "dlga.model.layers", "dlga.model.network", "dlga.model.complexity",
    "dlga.training.data", "dlga.training.metrics", "dlga.training.train",
    "dlga.runs.cache", "dlga.runs.rundir", "dlga.runs.executors", "dlga.runs.__main__",
    "dlga.inference.predict", "dlga.inference.export", "dlga.inference.exportdir",
    "data_prep", "data_prep.store", "data_prep.video", "data_prep.faces", "data_prep.align", "data_prep.extract",
    "data_prep.datasets", "data_prep.preprocess", "data_prep.openface", "data_prep.qc",
    "data_prep.synthetic", "data_prep.toystore", "data_prep.morph", "data_prep.workers", "data_prep.bench",
    "data_prep.__main__",
)
# The book's and the tests' tools (the `book` and `test` extras), and the book's own code.
FORBIDDEN = ("jupyter_book", "papermill", "nbval", "myst_nb", "pytest", "nbformat", "seaborn", "dlga.book")
# TensorFlow imports matplotlib and IPython itself when they are installed, so for these the
# check is on our source: no library module imports them.
NOT_IMPORTED_BY_THE_LIBRARY = ("matplotlib", "seaborn", "IPython", "yaml", *FORBIDDEN)


def test_library_imports_without_the_book_and_test_tools():
    probe = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport {', '.join(LIBRARY)}\n"
             f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))")
    # A fresh interpreter: nothing this pytest process imported is in its sys.modules.
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_library_source_imports_no_book_tool():
    offenders = []
    for module in LIBRARY:
        path = ROOT.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{module}: {n}" for n in names
                          if any(n == f or n.startswith(f + ".") for f in NOT_IMPORTED_BY_THE_LIBRARY)]
    assert offenders == []


def test_without_tensorflow_importing_the_library_says_which_extra_to_install():
    """TensorFlow is an extra (cpu: tensorflow-cpu, gpu: tensorflow[and-cuda]): without either,
    `import dlga` stops with one error naming both, not a ModuleNotFoundError deep in Keras."""
    # sys.modules["tensorflow"] = None: Python's own way to make a package unimportable.
    probe = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nsys.modules['tensorflow'] = None\nimport dlga.runs.cache"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: dlga needs TensorFlow, which is not installed")
    assert "dlga-book[cpu]" in last and "dlga-book[gpu]" in last
