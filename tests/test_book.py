"""The book: presets, the experiment plan, the build, and a full build at the ``ci`` preset.

The build test executes every chapter through papermill at ``ci`` (training the runs it
lacks), builds the HTML with jupyter-book (warnings are errors) and checks that every chapter
page exists and holds its table. The run-level checks read the runs' ``metrics.json`` and
``predictions.csv``, with tolerances, never printed text.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re

import keras
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import yaml
from myst_nb.ext.glue import GLUE_PREFIX as glue_prefix

from dlga import settings
from dlga.book import build as book, data, experiments, figures, intervals, parameters, presets, prose, report
from dlga.config import SETTING_LABELS, SETTINGS, ModelConfig
from dlga.model.network import build_model
from dlga.runs import rundir
from dlga.training.metrics import mae, rmse

BUILD_DIR = settings.BUILD_DIR / "test-ci"


# --- presets and the experiment plan (fast) --------------------------------------------------
def test_presets_are_consistent():
    assert set(presets.BOOK_PRESETS) == {"ci", "demo", "paper"}
    for name, p in presets.BOOK_PRESETS.items():
        assert p.name == name
        t = p.train_config()  # validates the overrides
        assert t.max_steps >= 1
        assert p.learning_rates == tuple(sorted(p.learning_rates))
        assert len(p.seeds) >= 1 and len(set(p.seeds)) == len(p.seeds)
    assert presets.BOOK_PRESETS["paper"].ablation_lr == 1e-6  # the paper's rate for the paper's schedule
    assert presets.BOOK_PRESETS["paper"].cohort is None and presets.BOOK_PRESETS["paper"].model_preset == "paper"
    assert presets.BOOK_PRESETS["demo"].ablation_lr is None  # selected on Development
    assert len(presets.BOOK_PRESETS["ci"].seeds) == 3  # the three-seed learning check below
    with pytest.raises(ValueError, match="unknown book preset 'huge'"):
        presets.get_preset("huge")


class FakeRun:
    """What the rate rule reads from a Run: rate, seed, Development and Testing RMSE, the
    training mean's, the stop reason and the Development predictions."""

    def __init__(self, lr, dev, test, seed=0):
        self.params = {"train": {"learning_rate": lr, "seed": seed}}
        self.metrics = {"dev": {"rmse": dev}, "test": {"rmse": test}, "stop_reason": "max_steps",
                        "mean_predictor": {"dev": {"rmse": 12.0}}}
        self.predictions = pd.DataFrame({"partition": ["Development"] * 3, "prediction": [5.0, 10.0, 15.0]})


def test_the_rate_rule_reads_development_only():
    # 1e-4 beats the default 1e-3 by 1.0 on Development on each seed; Testing favours 1e-2.
    runs = [FakeRun(1e-3, 9.0 + 0.1 * s, 9.0, s) for s in range(3)] + \
           [FakeRun(1e-4, 8.0 + 0.1 * s + 0.05 * (s == 1), 1.0, s) for s in range(3)] + \
           [FakeRun(1e-2, 9.2, 0.5, s) for s in range(3)]
    demo = presets.get_preset("demo")
    assert experiments.ablation_learning_rate(demo, runs)[0] == 1e-4
    choice = experiments.rate_choice(demo, runs)
    assert choice.default == 1e-3 and set(choice.comparisons["rate"]) == {1e-4, 1e-3, 1e-2}
    for r in runs:
        r.metrics["test"]["rmse"] = 0.0 if r.params["train"]["learning_rate"] == 1e-3 else 99.0
    assert experiments.ablation_learning_rate(demo, runs)[0] == 1e-4  # Testing changes nothing
    with pytest.raises(ValueError, match="no learning-rate study runs"):
        experiments.rate_choice(demo, [])


def test_ablation_rate_is_passed_in_and_planning_never_trains(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("planning must not execute a run")

    monkeypatch.setattr(experiments, "execute_all", no_training)
    store = tmp_path / "store"  # specs are described, not identified: no store needed yet
    ci, demo = presets.get_preset("ci"), presets.get_preset("demo")
    assert experiments.rate_selection_specs(ci, store) == []  # ci fixes the rate
    assert experiments.ablation_learning_rate(ci) == (1e-3, "fixed by the preset")
    study = experiments.rate_selection_specs(demo, store)
    assert [s.train.learning_rate for s in study] == [lr for lr in demo.learning_rates for _ in demo.lr_seeds]
    assert demo.learning_rates == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1) and demo.lr_seeds == demo.seeds
    assert {s.setting for s in study} == {"G"} and {s.seed for s in study} == set(demo.lr_seeds)
    study_runs = [FakeRun(1e-4, 5.0 + 0.1 * k, 9.0, k) for k in range(3)] + [FakeRun(1e-3, 6.0 + 0.1 * k, 1.0, k) for k in range(3)]
    chosen = experiments.ablation_learning_rate(demo, study_runs)
    assert chosen[0] == 1e-4 and chosen[1].startswith("the learning-rate rule on Development: better than 0.001")
    specs = experiments.ablation_specs(demo, store, 1e-4, seeds=[0, 1])
    assert len(specs) == len(SETTINGS) * 2
    assert {s.train.learning_rate for s in specs} == {1e-4}
    assert [s.setting for s in specs[::2]] == list(SETTINGS)
    assert all(s.train.max_steps == demo.train_config().max_steps for s in specs)
    cross = experiments.cross_dataset_specs(demo, store, tmp_path / "other", 1e-4)
    assert [(s.setting, s.seed, s.test_store_dir) for s in cross] == [("G", i, str(tmp_path / "other")) for i in demo.lr_seeds]
    # The demo grid: ten seeds for G and the single-branch settings, the preset's seeds elsewhere.
    grid = pd.Series([s.setting for s in experiments.ablation_specs(demo, store, 1e-4)]).value_counts()
    assert {s: grid[s] for s in ("G", "GA", "LA-CMP+")} == {"G": 10, "GA": 10, "LA-CMP+": 10}
    assert grid.drop(["G", "GA", "LA-CMP+"]).eq(len(demo.seeds)).all() and len(grid) == len(SETTINGS)


def test_overrides_reach_the_run_specs(tmp_path):
    ci = presets.get_preset("ci")
    p = ci.with_overrides(max_steps=40, width=0.25, seeds=(5,))
    assert ci.train_config().max_steps == 80  # the preset itself is unchanged (frozen)
    (spec,) = experiments.run_specs(p, tmp_path, ["GA"], [1e-4])
    assert spec.train.max_steps == 40 and spec.train.learning_rate == 1e-4 and spec.seed == 5
    assert spec.model_config == ModelConfig.setting("GA", "tiny", width=0.25)
    (plain,) = experiments.run_specs(ci, tmp_path, ["GA"], [1e-4], [5])
    assert plain.setting == "GA"  # no model override: the spec keeps the setting's name and id
    with pytest.raises(ValueError, match=r"unknown parameters \['learnig_rate'\]; known: .*'learning_rate'"):
        ci.with_overrides(learnig_rate=1e-4)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        ci.with_overrides(max_steps=0)


def test_toc_lists_every_chapter_and_page():
    toc = yaml.safe_load((settings.PROJECT_ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in toc["chapters"]]
    assert files == [f"book/{c}" for c in (*book.CHAPTERS, *book.PAGES, *book.GENERATED_PAGES)]
    for c in book.CHAPTERS:
        assert (book.BOOK_DIR / f"{c}.ipynb").is_file()
    for page in book.PAGES:
        assert (book.BOOK_DIR / f"{page}.md").is_file()


def test_write_toc_subset(tmp_path):
    book.write_toc(["02_data", "05_ablations"], tmp_path)
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    assert toc["root"] == "book/02_data"
    assert [c["file"] for c in toc["chapters"]] == ["book/05_ablations", "book/decisions", "book/status"]


def test_stage_copies_the_decisions_page(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "stale.ipynb").write_text("{}")
    book.stage({}, tmp_path)
    staged = tmp_path / "book" / "decisions.md"
    assert staged.read_text() == (book.BOOK_DIR / "decisions.md").read_text()
    assert not (tmp_path / "book" / "stale.ipynb").exists()
    assert (tmp_path / "_static" / "dlga.css").read_text() == (settings.PROJECT_ROOT / "_static" / "dlga.css").read_text()
    headings = [l[3:].strip() for l in staged.read_text().splitlines() if l.startswith("## ")]
    assert headings == ["Architecture", "Patch centres", "Data", "Runs and presets", "Conventions",
                        "Locked environment and jupyter-book 1", "Statistics", "Controls", "Runs at scale"]


def test_notebooks_open_with_a_parameters_cell():
    for c in book.CHAPTERS:
        nb = nbformat.read(book.BOOK_DIR / f"{c}.ipynb", as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), c
        names = book.chapter_parameter_names(c)
        for name in ("preset", "dataset", "root"):
            assert name in names, (c, name)
        assert 'preset = "ci"' in code[0].source  # nbval and plain Jupyter run the ci preset
        knobs = [n for n in names if n in parameters.KNOBS]
        assert all(f"{k} = None" in code[0].source for k in knobs), c  # None: the preset's value
        # the first cell after the parameters validates them in the package, once
        assert "parameters.chapter_preset(**params)" in code[1].source, c
        assert "rerun_command" in code[-1].source, c
        if c in book.RUN_CHAPTERS:
            for k in ("learning_rate", "max_steps", "batch_size", "warmup_steps", "eval_every", "patience", "precision",
                      "model_preset", "input_size", "width", "share_local_weights", "seeds", "cues",
                      "local_strength", "pitch_deg", "n_train"):
                if c == "11_controls" and k == "cues":
                    assert k not in knobs  # the controls set the cues themselves
                    continue
                assert k in knobs, (c, k)
    assert "learning_rates" in book.chapter_parameter_names("06_learning_rate")
    assert {"settings", "bootstrap"} <= set(book.chapter_parameter_names("05_ablations"))


def _discarded_tables(source: str) -> list[str]:
    """The ``report.styled*(...)`` calls of a cell whose table nobody sees: an expression
    statement that is not the cell's last (IPython displays only the last one)."""
    tree = ast.parse(source)
    body = tree.body
    found = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list):
                continue
            for st in stmts:
                last_of_cell = stmts is body and st is body[-1]
                if (isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and not last_of_cell
                        and ast.unparse(st.value.func).split(".")[-1].startswith("styled")):
                    found.append(ast.unparse(st)[:80])
    return found


def test_discarded_table_check_finds_a_table_that_is_not_last():
    assert _discarded_tables('report.styled(a, "x")\nglue("k", 1)') == ["report.styled(a, 'x')"]
    assert _discarded_tables('if s:\n    report.styled(a, "x")\nb = 1') == ["report.styled(a, 'x')"]
    assert _discarded_tables('display(report.styled(a, "x"))\nreport.styled(b, "y")') == []
    assert _discarded_tables('report.styled_comparisons(a, "x")\nb = 1') == ["report.styled_comparisons(a, 'x')"]


def test_every_table_a_chapter_makes_is_shown():
    for c in book.CHAPTERS:
        nb = nbformat.read(book.BOOK_DIR / f"{c}.ipynb", as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not _discarded_tables(cell.source), f"{c} cell {i}: wrap the table in display(...)"


def test_progress_bars_do_not_warn_in_a_notebook():
    # tqdm.auto prints "TqdmWarning: IProgress not found" into every chapter run without ipywidgets.
    sources = sorted(settings.PROJECT_ROOT.glob("dlga/**/*.py")) + sorted(settings.PROJECT_ROOT.glob("data_prep/*.py"))
    assert len(sources) > 20
    offenders = [p.name for p in sources if re.search(r"^\s*(from tqdm\.auto|import tqdm\.auto|from tqdm\.autonotebook)",
                                                      p.read_text(), re.M)]
    assert offenders == []


def test_chapter_preset_validates_once_with_one_message():
    with pytest.raises(ValueError, match=r"unknown parameter 'learnig_rate' \(did you mean 'learning_rate'\?\); "
                                         r"known parameters: .*learning_rate, learning_rates, .*max_steps"):
        parameters.chapter_preset("ci", learnig_rate=1e-4)
    with pytest.raises(ValueError, match=r"learning_rate=20.0 is out of range: it must be > 0 and < 10"):
        parameters.chapter_preset("ci", learning_rate=20)
    with pytest.raises(ValueError, match=r"parameter max_steps: 'many' is not an int"):
        parameters.chapter_preset("ci", max_steps="many")
    with pytest.raises(ValueError, match=r"settings=\['GA'\] must include 'G'"):
        parameters.chapter_preset("ci", settings="GA")
    with pytest.raises(ValueError, match=r"parameter cues='face' is out of range: it must be one of \['local', 'global'\]"):
        parameters.chapter_preset("ci", cues="face")
    with pytest.raises(ValueError, match=r"parameter precision='fp16' is out of range: it must be one of \['float32', 'mixed_bfloat16'\]"):
        parameters.chapter_preset("ci", precision="fp16")
    assert parameters.chapter_preset("ci", precision="mixed_bfloat16").train_config().precision == "mixed_bfloat16"
    with pytest.raises(ValueError, match=r"change the synthetic cohort; dataset 'avec2014'"):
        parameters.chapter_preset("ci", "avec2014", n_train=10)
    ci = presets.get_preset("ci")
    assert parameters.chapter_preset("ci", dataset="synthetic", root=None, show_faces=False, learning_rate=None) == ci
    p = parameters.chapter_preset("ci", learning_rate=1e-4, max_steps=40, seeds="3,4", settings="G,GA")
    assert p.ablation_lr == 1e-4 and p.train_config().max_steps == 40
    assert p.seeds == (3, 4) and p.lr_seeds == (3, 4) and p.settings == ("G", "GA")  # the study pairs the same seeds
    assert experiments.ablation_learning_rate(p) == (1e-4, "fixed by the preset")


def test_cohort_knobs_key_the_cohort_directory(tmp_path):
    ci = presets.get_preset("ci")
    local = parameters.chapter_preset("ci", cues="local", local_strength=2.0)
    assert data.cohort_dir(ci) == data.data_root(ci) / "cohort"  # unchanged: the stored cohort
    assert presets.cohort_config(local).cues == ("local",) and presets.cohort_config(local).local_strength == 2.0
    assert data.cohort_dir(local) != data.cohort_dir(ci)
    assert data.cohort_dir(local) == data.cohort_dir(parameters.chapter_preset("ci", local_strength=2, cues=["local"]))
    assert data.cohort_dir(local, seed=1).name == data.cohort_dir(local).name + "-seed1"


def test_parameter_table_and_rerun_command_show_the_values_used():
    params = {"preset": "ci", "dataset": "synthetic", "root": None, "show_faces": False,
              "learning_rate": 1e-4, "max_steps": None, "seeds": "0,1"}
    p = parameters.chapter_preset(**params)
    table = parameters.parameter_table(p, params, (1e-4, "fixed by the preset")).set_index("parameter")
    assert table.loc["learning_rate", "value"] == "0.0001" and table.loc["learning_rate", "source"] == "set for this run"
    assert table.loc["max_steps", "value"] == "80" and table.loc["max_steps", "source"] == "preset ci"
    assert table.loc["seeds", "value"] == "0,1"
    cmd = parameters.rerun_command("04_training", params)
    assert "papermill book/04_training.ipynb out.ipynb -p preset ci -p learning_rate 0.0001 -p seeds 0,1\n" in cmd
    assert "python -m dlga.book build --preset ci --only 04 --set learning_rate=0.0001 --set seeds=0,1\n" in cmd
    assert "executor" not in cmd  # the default, local
    elsewhere = parameters.rerun_command("04_training", {**params, "executor": "dask://head:8786"})
    assert "-p executor dask://head:8786" in elsewhere and "--executor dask://head:8786 --only 04" in elsewhere
    # what the command passes reads back as the same preset
    assert parameters.chapter_preset("ci", learning_rate="0.0001", seeds="0,1") == p


def test_set_reaches_every_chapter_that_has_the_knob(monkeypatch, tmp_path):
    seen = {}

    def fake_execute(name, parameters, out_dir, fingerprint, force=False, log=print):
        seen[name] = parameters
        return tmp_path / f"{name}.ipynb", True

    monkeypatch.setattr(book, "prepare_data", lambda *a, **k: tmp_path)
    monkeypatch.setattr(book, "store_fingerprint", lambda store: "fp")
    monkeypatch.setattr(book, "train_book_runs", lambda *a, **k: 1e-4)
    monkeypatch.setattr(book, "execute_notebook", fake_execute)
    monkeypatch.setattr(book, "stage", lambda executed, staging, extra="": None)
    monkeypatch.setattr(book, "jupyter_book_build", lambda *a, **k: None)
    book.main(["build", "--preset", "ci", "--only", "01", "04", "05", "--set", "learning_rate=1e-4",
               "--set", "max_steps=40", "--set", "settings=G,GA", "--executor", "serial", "--jobs", "1"])
    # The executor is a parameter of the chapters that train (not an environment variable).
    assert seen["04_training"] == {"preset": "ci", "dataset": "synthetic", "root": None, "executor": "serial",
                                   "learning_rate": 1e-4, "max_steps": 40}  # no settings knob in 04
    assert seen["05_ablations"]["learning_rate"] == 1e-4 and seen["05_ablations"]["max_steps"] == 40
    assert seen["05_ablations"]["settings"] == "G,GA"
    assert seen["01_introduction"] == {"preset": "ci", "dataset": "synthetic", "root": None}
    trains = {c for c in book.CHAPTERS if "executor" in book.chapter_parameter_names(c)}
    assert trains == {"04_training", "05_ablations", "06_learning_rate", "07_comparison", "08_attention", "11_controls"}
    with pytest.raises(SystemExit, match=r"unknown parameter 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        book.main(["build", "--preset", "ci", "--set", "learnig_rate=1e-4"])
    with pytest.raises(ValueError, match=r"no chapter built has the parameters \['max_steps'\]"):
        book.main(["build", "--preset", "ci", "--only", "01", "--set", "max_steps=40"])
    assert book.parse_set(["seeds=0,1", "share_local_weights=True", "width=0.25"]) == {
        "seeds": "0,1", "share_local_weights": True, "width": 0.25}


def test_status_page_reads_the_executed_notebooks(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["dlga"] = {"parameters": {"preset": "ci", "learning_rate": 1e-4, "root": None},
                           "versions": {"python": "3.11.2", "tensorflow": "2.99"}, "seconds": 12.5,
                           "finished": "2026-01-02 03:04:05 +0000"}
    nbformat.write(nb, tmp_path / "04_training.ipynb")
    page = book.status_page({"04_training": tmp_path / "04_training.ipynb"})
    assert "| [04_training](04_training.ipynb) | 2026-01-02 03:04:05 +0000 | 12.5 | `preset=ci`, `learning_rate=0.0001` |" in page
    assert "| tensorflow | 2.99 |" in page
    assert set(book.status_versions()) >= {"python", "tensorflow", "papermill", "myst-nb", "lock file"}


def test_status_page_and_verify_show_the_lock_file_and_the_instruction_set(tmp_path, monkeypatch, capsys):
    from dlga.book import reference
    lock = tmp_path / "gpu.txt"
    lock.write_text("tensorflow==2.21.0\n")
    monkeypatch.setattr(settings, "LOCK_FILE", lock)  # what $DLGA_LOCK names
    shown = f"gpu.txt sha256 {hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    assert book.status_versions()["lock file"] == shown  # a row of the Status page's library table
    line = f"CPU instruction set (oneDNN): {reference.cpu_isa()}. Lock file: {shown}."
    assert line in book.reference_section("ci", "avec2013").splitlines()  # no reference to verify: no runs needed
    monkeypatch.setattr(reference, "verify", lambda *a, **k: (True, [], {}))
    assert book.main(["verify", "--preset", "ci"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == line
    lock.unlink()  # e.g. a package installed outside the checkout
    assert book.status_versions()["lock file"] == f"no lock ({lock} not found)"


def test_ablation_conclusion_says_what_the_table_says():
    table = pd.DataFrame({"G minus": ["GA", "C", "A", "B", "D"], "diff RMSE": [-0.7, 0.1, 0.9, 0.0, 0.5],
                          "low": [-1.1, -0.3, 0.2, -2.0, -0.2], "high": [-0.3, 0.5, 1.6, 2.0, 1.2],
                          "verdict": ["G better", "tie", "A better", "tie", "tie"],
                          "reading": ["difference", "equivalent within 1 BDI", "difference", "inconclusive", "inconclusive"],
                          "fragile": [False, False, True, False, True]})
    text = prose.ablation_conclusion(table)
    assert "lower error than **1**, the higher error than **1**, and ties with **3** of the 5" in text
    assert "(1 equivalent within 1 BDI, 2 inconclusive" in text
    assert "Fragile (an interval end within the cross-CPU spread of its boundary" in text and ": A, D." in text
    assert "GA" not in text.split("Fragile")[1]
    named = prose.ablation_conclusion(table, collapsed={"GA": 1, "C": 0})
    assert "Seeds that diverged or did not learn: GA 1." in named and "C 0" not in named


def test_reference_compare_lists_what_differs(monkeypatch):
    from dlga.book import reference
    ref = {"learning_rate": 1e-3, "tolerances": {"rmse_bdi": 0.5},
           "settings": {"G": {"seeds": 10, "test_rmse": 9.0, "dev_rmse": 8.0}},
           "verdicts": {"G vs GA": {"verdict": "tie", "reading": "inconclusive", "fragile": True}},
           "controls": {"null": {"verdict": "no leak"}, "positive": {"smallest flagged level": 16.0}}}
    same = json.loads(json.dumps(ref))
    assert reference.compare(same, ref) == []
    other = json.loads(json.dumps(ref))
    other.update(learning_rate=1e-2)
    other["settings"]["G"]["test_rmse"] = 9.6
    other["verdicts"]["G vs GA"] = {"verdict": "G better", "reading": "difference"}
    other["controls"] = {"null": {"verdict": "leak"}, "positive": {"smallest flagged level": 64.0}}
    diffs = reference.compare(other, ref)
    assert len(diffs) == 5
    assert diffs[0] == "learning rate: 0.01 (reference 0.001)"
    assert "G mean test_rmse: 9.60 (reference 9.00, tolerance 0.5 BDI)" in diffs
    assert any(d.startswith("G vs GA: G better, difference") and d.endswith(reference.FRAGILE_ALLOWED) for d in diffs)
    assert "null control: leak (reference no leak)" in diffs
    assert "positive control: smallest flagged leak 64.0 (reference 16.0)" in diffs
    other["settings"]["G"]["test_rmse"] = 9.4  # inside the tolerance
    assert not any("test_rmse" in d for d in reference.compare(other, ref))
    # Only the fragile verdict differs: listed, and still a match (verify counts the rest).
    only_fragile = json.loads(json.dumps(ref))
    only_fragile["verdicts"]["G vs GA"] = {"verdict": "tie", "reading": "equivalent within 1 BDI"}
    monkeypatch.setattr(reference, "load_reference", lambda preset, path=None: ref)
    monkeypatch.setattr(reference, "headline", lambda preset, dataset, root: only_fragile)
    matches, listed, _ = reference.verify("demo")
    assert matches and listed == ["G vs GA: tie, equivalent within 1 BDI (reference tie, inconclusive)" + reference.FRAGILE_ALLOWED]
    ref["verdicts"]["G vs GA"]["fragile"] = False
    assert reference.verify("demo")[0] is False
    assert "differs" in reference.verify_text("ci", False, diffs) and "matches" in reference.verify_text("ci", True, [])
    # A match with fragile verdicts that read otherwise names each of them, not "every verdict".
    text = reference.verify_text("demo", True, listed)
    assert "**matches**" in text and "every verdict)" not in text and "every verdict but 1 the reference marks fragile" in text
    assert "- G vs GA: tie, equivalent within 1 BDI (reference tie, inconclusive)" + reference.FRAGILE_ALLOWED in text


def test_two_builds_side_by_side(tmp_path, monkeypatch, capsys):
    from dlga.book import reference
    native = json.loads(reference.reference_path("demo").read_text())
    other = json.loads(json.dumps(native))
    other["cpu_isa"] = "AVX (ONEDNN_MAX_CPU_ISA)"
    other["settings"]["C"]["test_rmse"] += 0.25
    other["verdicts"]["G vs C"].update(reading="equivalent within 1 BDI", low=-0.93)
    other["controls"]["positive"].update({"smallest flagged level": 64.0, "gain at it (BDI)": 5.91, "fragile": False})
    table = reference.side_by_side({"native": native, "AVX": other}).set_index("")
    assert list(table.columns) == ["native", "AVX", "agree"]
    assert len(table) == 1 + len(native["settings"]) + len(native["verdicts"]) + len(native["controls"])
    assert table.loc["learning rate"].tolist() == ["0.001", "0.001", "yes"]
    assert table.loc["C: mean Testing RMSE (seeds)", "agree"] == "0.25 apart"
    assert table.loc["G vs C", "native"].startswith("tie, inconclusive [-1.44, ")
    assert table.loc["G vs C", "AVX"].startswith("tie, equivalent [-0.93, ") and table.loc["G vs C", "agree"] == "no"
    assert table.loc["G vs A", "agree"] == "yes" and table.loc["G vs A", "native"].endswith("(fragile)")
    positive = table.loc["positive control: smallest flagged leak (grey levels)"]
    assert positive["native"].startswith("16 (gain 0.23 BDI) (fragile); robustly 64") and positive["AVX"].startswith("64 (gain 5.91")
    assert positive["agree"] == "no" and table.loc["null control", "agree"] == "yes"
    # The command: headlines written by `reference --out`, printed as one Markdown table.
    monkeypatch.setattr(reference, "headline", lambda preset, dataset, root: other)
    assert book.main(["reference", "--preset", "demo", "--out", str(tmp_path / "avx.json")]) == 0
    assert json.loads((tmp_path / "avx.json").read_text())["tolerances"] == native["tolerances"]
    (tmp_path / "native.json").write_text(json.dumps(native))
    capsys.readouterr()
    assert book.main(["verdicts", str(tmp_path / "native.json"), str(tmp_path / "avx.json"), "--labels", "native", "AVX"]) == 0
    out = capsys.readouterr().out
    assert [c.strip() for c in out.splitlines()[0].split("|")[1:-1]] == ["", "native", "AVX", "agree"]
    assert "| G vs C" in out and "equivalent [-0.93" in out
    # The native build against the AVX headline: G vs C is fragile there (allowed), its robust 64 is not.
    monkeypatch.setattr(reference, "headline", lambda preset, dataset, root: native)
    assert book.main(["verify", "--preset", "demo", "--reference", str(tmp_path / "avx.json")]) == 1
    out = capsys.readouterr().out
    assert "**differs** from the reference `avx.json` in 2 place(s)" in out, out
    assert "- positive control: smallest flagged leak 16.0 (reference 64.0)\n" in out and "G vs C: tie, inconclusive" in out
    with pytest.raises(SystemExit, match="give 2 different titles"):
        book.main(["verdicts", str(tmp_path / "native.json"), str(tmp_path / "avx.json"), "--labels", "x", "x"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a headline"):
        book.main(["verdicts", str(tmp_path / "bad.json")])


def test_make_cross_cpu_reads_each_headline_on_the_cpu_it_trained_on():
    # Run ids include ONEDNN_MAX_CPU_ISA: a headline read without it would train its runs again natively.
    recipe = (book.PROJECT_ROOT / "Makefile").read_text().split("\ncross-cpu:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in recipe.splitlines()[1:]]
    isa_side = [line for line in lines if "$(CROSS_DIR)/$(ISA)" in line and "verdicts" not in line and "git clone" not in line]
    assert len(isa_side) == 2 and all("ONEDNN_MAX_CPU_ISA=$(ISA)" in line for line in isa_side)
    assert not any("ONEDNN" in line for line in lines if "$(CROSS_DIR)/native" in line and "git clone" not in line)
    assert lines[-1].endswith("verdicts $(CROSS_DIR)/native.json $(CROSS_DIR)/$(ISA).json --labels native $(ISA)")


def test_cli_requires_root_for_avec():
    with pytest.raises(SystemExit):
        book.main(["data", "--preset", "ci", "--dataset", "avec2014"])


# --- the ci book (slow) --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ci_book():
    return {"index": book.build("ci", build_dir=BUILD_DIR, log=lambda *a: None)}


CHAPTER_CONTENT = {
    "01_introduction": ["Book presets", "reported", "measured"],
    "02_data": ["Training", "Development", "Testing", "Preprocessing QC", "patch centres", "Synthetic data",
                "Difficulty", "the cues themselves", "union of the patch fields"],
    "03_architecture": ["212,438,490", "151", "Conv4_2"],
    "04_training": ["Severity-band confusion", "Largest per-video errors", "Synthetic data"],
    "05_ablations": [SETTING_LABELS[s].split(":")[-1].strip() for s in SETTINGS] + ["Table 4", "Paired two-level bootstrap",
                                                                                 "Half-width", "before their last evaluation"],
    "06_learning_rate": ["Table 6", "The learning-rate rule on Development", "Chosen on Development"],
    "07_comparison": ["Table 8", "LBP + SVR", "training-mean predictor", "Zhou et al."],
    "08_attention": ["Mean local weight", "Global weight"],
    "09_efficiency": ["Model benchmark", "2120", "machine"],
    "10_reproducibility": ["runs on this dataset", "sbatch"],
    "11_controls": ["Null cohort", "training-mean predictor", "union of the patch fields", "local only cohort",
                    "global only cohort", "Synthetic data", "Permuted Training labels", "Positive control"],
}


@pytest.mark.slow
def test_ci_book_builds_every_chapter(ci_book):
    html_dir = ci_book["index"].parent
    assert ci_book["index"].is_file()
    for chapter, needles in CHAPTER_CONTENT.items():
        page = html_dir / "book" / f"{chapter}.html"
        assert page.is_file(), f"{page} was not built"
        text = page.read_text()
        assert "<table" in text, f"{chapter}: no table"
        for needle in needles:
            assert needle in text, f"{chapter}: {needle!r} not on the page"


@pytest.mark.slow
def test_second_build_is_cached(ci_book, monkeypatch):
    executed = sorted((ci_book["index"].parents[1] / "executed").glob("ci-synthetic-*/*.ipynb"))
    before = {p: p.stat().st_mtime_ns for p in executed}

    def no_papermill(*args, **kwargs):
        raise AssertionError("an unchanged second build must not execute a chapter")

    monkeypatch.setattr(book.pm, "execute_notebook", no_papermill)
    lines = []
    book.build("ci", build_dir=BUILD_DIR, log=lines.append, progress=False)
    assert len(before) == len(book.CHAPTERS)
    assert {p: p.stat().st_mtime_ns for p in executed} == before
    assert not any("executed in" in line for line in lines)


def test_a_prose_edit_re_executes_only_the_chapters_that_import_it(monkeypatch, tmp_path):
    params = {"preset": "ci", "dataset": "synthetic"}
    keys = {c: book._notebook_key(c, params, "fingerprint") for c in book.CHAPTERS}
    real = book._module_file
    edited = tmp_path / "prose.py"
    edited.write_text(real("dlga.book.prose").read_text() + "\n# a table formatter's comment\n")
    monkeypatch.setattr(book, "_module_file", lambda m: edited if m == "dlga.book.prose" else real(m))
    changed = {c for c in book.CHAPTERS if book._notebook_key(c, params, "fingerprint") != keys[c]}
    users = {c for c in book.CHAPTERS if "dlga.book.prose" in book.chapter_modules(c)}
    assert changed == users and "05_ablations" in users and "01_introduction" not in users
    assert "dlga.book.report" in book.chapter_modules("01_introduction")  # the closure follows imports
    # Where runs train changes no number: another executor re-executes no chapter.
    assert book._notebook_key("05_ablations", {**params, "executor": "dask://head:8786"}, "fingerprint") \
        == book._notebook_key("05_ablations", {**params, "executor": "local"}, "fingerprint")


def _ci_ablation_runs():
    store = data.prepare_data("ci")
    lr, _how = experiments.ablation_learning_rate("ci")
    return experiments.ensure_runs(experiments.ablation_specs("ci", store, lr))


@pytest.mark.slow
def test_every_setting_learns_for_three_seeds(ci_book):
    """Each of the ten settings learns at the tiny preset for three seeds: predictions are not
    constant and the Development RMSE is below the training-mean predictor's."""
    runs = _ci_ablation_runs()
    seen = {}
    for r in runs:
        m = r.metrics
        test = r.predictions[r.predictions["partition"] == "Testing"]
        sd = float(test["prediction"].std())
        assert sd > 0.5, f"{r.run_id}: near-constant predictions (sd {sd:.3f})"
        assert m["dev"]["rmse"] < m["mean_predictor"]["dev"]["rmse"], (
            f"{r.run_id}: Development RMSE {m['dev']['rmse']:.2f} not below the mean predictor's "
            f"{m['mean_predictor']['dev']['rmse']:.2f}")
        seen.setdefault(r.params["setting"], set()).add(m["seed"])
    assert seen == {s: {0, 1, 2} for s in SETTINGS}


@pytest.mark.slow
def test_run_metrics_match_predictions(ci_book):
    """metrics.json agrees with predictions.csv; values are in range (tolerances, not text)."""
    for r in _ci_ablation_runs()[:: len(presets.BOOK_PRESETS["ci"].seeds)]:
        m = r.metrics
        for part, key in (("Development", "dev"), ("Testing", "test")):
            v = r.predictions[r.predictions["partition"] == part]
            assert m[key]["rmse"] == pytest.approx(rmse(v["bdi"], v["prediction"]), abs=1e-6)
            assert m[key]["mae"] == pytest.approx(mae(v["bdi"], v["prediction"]), abs=1e-6)
            assert 0 < m[key]["mae"] <= m[key]["rmse"] < 63
        assert m["test"]["rmse_low"] <= m["test"]["rmse"] <= m["test"]["rmse_high"]
        assert m["steps"] <= presets.BOOK_PRESETS["ci"].train_config().max_steps
        assert 0 < m["best_step"] <= m["steps"]


# --- what the chapters compute (fast, on fake runs) -------------------------------------------
class FakeRunWithPredictions:
    """A Run as the report functions read it, with per-video predictions of Testing."""

    def __init__(self, setting, seed, lr, predictions, bdi):
        self.run_id = f"{setting}-{seed}-{lr:g}"
        self.params = {"setting": setting, "train": {"learning_rate": lr, "seed": seed}}
        err = predictions - bdi
        rmse_, mae_ = float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))
        self.metrics = {"steps": 10, "best_step": 10, "stop_reason": "max_steps", "wall_time_s": 1.0,
                        "dev": {"rmse": rmse_ + 1, "mae": mae_ + 1}, "test": {"rmse": rmse_, "mae": mae_},
                        "mean_predictor": {"dev": {"rmse": 12.0}, "test": {"rmse": 12.0}}}
        self.predictions = pd.DataFrame({"video_id": [f"v{i}" for i in range(len(bdi))],
                                         "session_id": [f"s{i}" for i in range(len(bdi))],
                                         "partition": "Testing", "bdi": bdi, "prediction": predictions})
        self.history = pd.DataFrame(columns=rundir.HISTORY_COLUMNS)  # no evaluation recorded


def _labels_and_noise(n=60):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 45, n), rng.normal(0, 1, n)


def test_comparisons_with_g_use_the_verdict():
    bdi, noise = _labels_and_noise()
    runs = []
    for seed in (0, 1):
        for s in SETTINGS:
            # G and GA identical (a tie), every other setting four times G's error.
            scale = 1.0 if s in ("G", "GA") else 4.0
            runs.append(FakeRunWithPredictions(s, seed, 1e-3, bdi + scale * noise, bdi))
    table, lines = intervals.comparisons_with(runs, "G", n=200)
    assert list(table["G minus"]) == [s for s in SETTINGS if s != "G"]
    verdicts = dict(zip(table["G minus"], table["verdict"]))
    assert verdicts.pop("GA") == "tie"
    assert set(verdicts.values()) == {"G better"}
    assert (table["high"] < 0).sum() == len(SETTINGS) - 2
    assert len(lines) == len(table)
    assert [("**tie**" in line) for line in lines] == [v == "tie" for v in table["verdict"]]
    assert intervals.verdict_label({"diff": 1.0, "low": 0.5, "high": 1.5}, "G", "B") == "B better"


def test_paired_with_predictions_matches_by_video():
    bdi, noise = _labels_and_noise()
    g = FakeRunWithPredictions("G", 0, 1e-3, bdi + noise, bdi)
    baseline = g.predictions.assign(prediction=bdi + 3 * noise).iloc[::-1]  # another order
    res = intervals.paired_with_predictions(intervals.pooled_predictions([g]), baseline, n=200)
    expected = np.sqrt(np.mean(noise ** 2)) - np.sqrt(np.mean((3 * noise) ** 2))
    assert res["estimate"] == pytest.approx(expected)
    assert res["lo"] <= res["estimate"] <= res["hi"] < 0


def test_lr_table_marks_the_chosen_rate_and_sets_the_paper_beside_it():
    bdi, noise = _labels_and_noise()
    runs = [FakeRunWithPredictions("G", 0, lr, bdi + k * noise, bdi) for k, lr in enumerate((1e-4, 1e-3, 1e-2), 1)]
    table = intervals.lr_table(runs, "synthetic", chosen=1e-3, n_boot=100)
    assert list(table["learning rate"]) == ["0.0001", "0.001", "0.01"]
    assert list(table["selected on Development"]) == ["", "yes", ""]
    assert list(table["RMSE reported"]) == [report.PAPER_LR["avec2014"][lr][0] for lr in (1e-4, 1e-3, 1e-2)]
    assert table["RMSE measured"].iloc[0] == f"{runs[0].metrics['test']['rmse']:.2f}"


def test_backbone_table_reads_the_built_model():
    cfg = ModelConfig.setting("G", "tiny")
    table = report.backbone_table(build_model(cfg))
    assert list(table["layer"]) == [row for row, _, _ in report.PAPER_TABLE2]
    expected = []
    for row, side, channels in report.PAPER_TABLE2:  # the paper's sizes scaled to this preset
        s = side * cfg.input_size // 224
        expected.append(f"{s}x{s}x{cfg.channels(channels)}")
    assert list(table["built (measured)"]) == expected
    assert table["Table 2 (reported)"].iloc[0] == "224x224x64"
    without_cmp = report.backbone_table(build_model(ModelConfig.setting("LA-CMP-", "tiny")))
    assert without_cmp.set_index("layer").loc["CMP", "built (measured)"] == "absent"
    keras.backend.clear_session()


def test_face_frame_index_finds_the_frame_with_detail():
    rng = np.random.default_rng(1)
    frames = np.full((5, 32, 32, 3), 120, np.uint8)
    frames[3, 8:24, 8:24] = rng.integers(0, 255, (16, 16, 3))  # a "face" in the centre
    frames[1, :4] = 255  # detail outside the centre does not count
    assert figures.face_frame_index(frames) == 3


# --- chapters steered by their parameters ----------------------------------------------------------
def _papermill(chapter, out, **parameters):
    pm.execute_notebook(str(book.BOOK_DIR / f"{chapter}.ipynb"), str(out), parameters={"preset": "ci", **parameters},
                        cwd=str(book.BOOK_DIR), kernel_name="python3", progress_bar=False, log_output=False)
    return nbformat.read(out, as_version=4)


def _glued(nb, name):
    """The Markdown a chapter glued under ``name`` (myst-nb's glue with display=False)."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                return out["data"][glue_prefix + "text/markdown"]
    raise AssertionError(f"nothing glued as {name!r}")


def test_misspelt_parameter_stops_the_chapter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError,
                       match=r"unknown parameter 'learnig_rate' \(did you mean 'learning_rate'\?\); known parameters: "):
        _papermill("04_training", tmp_path / "out.ipynb", learnig_rate=1e-4)


@pytest.mark.slow
def test_training_chapter_runs_with_its_parameters(tmp_path):
    nb = _papermill("04_training", tmp_path / "out.ipynb", learning_rate=1e-4, max_steps=40)
    store = data.prepare_data("ci")
    p = parameters.chapter_preset("ci", learning_rate=1e-4, max_steps=40)
    (spec,) = experiments.run_specs(p, store, ["G"], [1e-4], [p.seeds[0]])
    params = json.loads((settings.RUNS_DIR / spec.run_id / "params.json").read_text())
    assert params["train"]["learning_rate"] == 1e-4 and params["train"]["max_steps"] == 40
    html = next(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", [])
                if "Parameters of this chapter" in o.get("data", {}).get("text/html", ""))
    for name, value in (("learning_rate", "0.0001"), ("max_steps", "40")):
        assert re.search(rf">{name}</td>\s*<td[^>]*>{value}</td>\s*<td[^>]*>set for this run</td>", html), name
    assert re.search(r">batch_size</td>\s*<td[^>]*>16</td>\s*<td[^>]*>preset ci</td>", html)
    assert f"run {spec.run_id}: setting G, lr 0.0001" in "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_ablation_conclusion_matches_its_table(ci_book):
    (executed,) = (ci_book["index"].parents[1] / "executed").glob("ci-synthetic-*/05_ablations.ipynb")
    nb = nbformat.read(executed, as_version=4)
    text = _glued(nb, "ablation_conclusion")
    p = presets.get_preset("ci")
    runs = _ci_ablation_runs()
    table, _lines = intervals.comparisons_with(runs, "G", n=p.bootstrap)
    collapsed = {s: report.collapsed_seeds([r for r in runs if r.params["setting"] == s]) for s in SETTINGS}
    assert text == prose.ablation_conclusion(table, collapsed=collapsed)
    assert f"ties with **{int((table['verdict'] == 'tie').sum())}** of the {len(table)}" in text
    assert f"lower error than **{int((table['verdict'] == 'G better').sum())}**" in text
    assert _glued(nb, "ablation_rate") == f"**{p.ablation_lr:g}** (fixed by the preset)"


@pytest.mark.slow
def test_ci_build_matches_its_reference_numbers(ci_book):
    # book/reference/ci.json was written by `python -m dlga.book reference --preset ci` from a ci
    # build; a change of numerics or of a verdict shows here (tolerance: the file's).
    from dlga.book import reference
    matches, diffs, head = reference.verify("ci")
    assert head["preset"] == "ci" and head["learning_rate"] == 1e-3
    assert {s["seeds"] for s in head["settings"].values()} == {3}  # equal seeds
    assert matches, diffs
    page = (ci_book["index"].parent / "book" / "status.html").read_text()
    assert "matches" in page and "CPU instruction set" in page


@pytest.mark.slow
def test_status_page_lists_every_chapter(ci_book):
    page = (ci_book["index"].parent / "book" / "status.html").read_text()
    for chapter in book.CHAPTERS:
        assert f"{chapter}</a>" in page or f"{chapter}.html" in page, chapter
    assert "tensorflow" in page and "preset=ci" in page


def test_chapters_run_timed_ones_last_and_alone_and_reuse_cached_copies(monkeypatch, tmp_path):
    order = []

    def fake_execute(name, parameters, out_dir, fingerprint, force=False, log=print):
        order.append(name)
        return out_dir / f"{name}.ipynb", True

    monkeypatch.setattr(book, "execute_notebook", fake_execute)
    monkeypatch.setattr(book, "is_executed", lambda name, *a: name == "02_data")
    chapters = ["01_introduction", "02_data", "09_efficiency", "10_reproducibility"]
    out = book.execute_chapters(chapters, lambda name: {"preset": "ci"}, tmp_path, "fp", jobs=1, progress=False)
    assert list(out) == chapters and out["02_data"] == tmp_path / "02_data.ipynb"
    assert order == ["01_introduction", "10_reproducibility", "09_efficiency"]  # 02 was cached
    assert book.TIMED_CHAPTERS == ("09_efficiency",)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        book.execute_chapters(chapters, lambda name: {}, tmp_path, "fp", jobs=0, progress=False)


def test_the_build_says_where_its_runs_train_and_how_long_on_a_cpu(monkeypatch, tmp_path):
    from dlga import bench

    p = presets.get_preset("paper")
    monkeypatch.setattr(bench, "machine", lambda gpus=True: {"gpus": ["/physical_device:GPU:0"]})
    assert book.device_line(p, 10) == "device: 1 GPU (/physical_device:GPU:0); the runs train there"
    monkeypatch.setattr(bench, "machine", lambda gpus=True: {"gpus": []})
    missing = book.device_line(p, 10, bench_json=tmp_path / "none.json")
    assert missing.startswith("device: CPU only (TensorFlow sees no GPU); up to 10 runs x ") and "make bench" in missing
    saved = tmp_path / "dlga.json"
    saved.write_text(json.dumps({"rows": [{"preset": "paper", "train_s_per_step_batch32": 2.0},
                                          {"preset": "tiny", "train_s_per_step_batch32": 0.05}]}))
    t = p.train_config()
    hours = 10 * t.max_steps * 2.0 * t.batch_size / 32 / 3600
    assert book.device_line(p, 10, bench_json=saved).endswith(f"about {hours:,.1f} h at the 2 s per 32-frame step make bench measured here")
    assert book.device_line(p, 10, "dask://scheduler:8786") == "device: the workers of dask://scheduler:8786 (their GPUs, if any, are theirs)"


def test_book_runs_announce_what_they_will_train_and_start_nothing_when_complete(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from dlga.book import experiments as ex

    def specs(*names):
        return [SimpleNamespace(run_id=n) for n in names]

    done, started, trained, said = set(), [], [], []
    monkeypatch.setattr(ex, "rate_selection_specs", lambda p, store: specs("s1", "s2"))
    monkeypatch.setattr(ex, "book_specs", lambda p, store, lr: specs("s1", "s2", f"g1@{lr:g}", f"g2@{lr:g}"))
    monkeypatch.setattr(ex, "_study_rate", lambda p, study, root: 0.001)
    monkeypatch.setattr(ex, "is_complete", lambda d: d.name in done)
    monkeypatch.setattr(ex, "make_executor", lambda e: started.append(e) or SimpleNamespace(shutdown=lambda wait: None))

    def execute_all(specs, root, pool, bar=None):
        trained.extend(s.run_id for s in specs if s.run_id not in done)
        done.update(s.run_id for s in specs)

    monkeypatch.setattr(ex, "execute_all", execute_all)
    run = lambda: ex.train_book_runs("ci", None, tmp_path, "local", progress=False, announce=said.append,
                                     extra=lambda lr: specs(f"x@{lr:g}"))
    assert run() == 0.001  # nothing done: the study's 2 and, at a rate not yet known, a grid of 3 more
    assert said == [5] and trained == ["s1", "s2", "g1@0.001", "g2@0.001", "x@0.001"] and started == ["local"]
    done.discard("g2@0.001")
    assert run() == 0.001 and said == [5, 1] and trained[-1] == "g2@0.001"
    assert run() == 0.001 and said == [5, 1] and started == ["local", "local"]  # complete: no line, no pool
