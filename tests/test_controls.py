"""The Controls chapter's pieces: receptive fields, cue stills, control cohorts and verdicts."""

import numpy as np
import pandas as pd
import pytest

from data_prep.align import template
from data_prep.synthetic import CohortConfig, cue_stills
from dlga.book import controls, data, experiments, presets, prose
from dlga.model.patches import CONV4_FIELD, field_union_mask, patch_centres, patch_fields


def test_patch_field_is_54_plus_8_per_extra_cell_before_clipping():
    centre = np.array([[112.0, 112.0]])
    for cells in (1, 2, 6):
        (x0, y0, x1, y1), = patch_fields(centre, 224, cells)
        assert x1 - x0 + 1 == CONV4_FIELD + 8 * (cells - 1)
        assert y1 - y0 + 1 == CONV4_FIELD + 8 * (cells - 1)
    (x0, y0, x1, y1), = patch_fields(np.array([[2.0, 2.0]]), 224, 6)
    assert (x0, y0) == (0, 0)  # clipped to the image


def test_union_of_patch_fields_covers_the_whole_face_at_64_but_not_at_224():
    small = field_union_mask(patch_centres(template(64), 64), 64, 2)
    assert small.all()
    large = field_union_mask(patch_centres(template(224), 224), 224, 6)
    assert 0.5 < large.mean() < 1.0
    assert large[112, 112] and not large[0, 0]  # the face's centre is seen, the corner is not


@pytest.fixture(scope="module")
def stills():
    cfg = CohortConfig.preset("ci")
    return {cue: cue_stills(cfg, cue, 224) for cue in ("local", "global")}


def test_cue_stills_change_the_face_where_the_cue_acts(stills):
    for cue, st in stills.items():
        assert st["images"].shape == (2, 224, 224, 3) and st["images"].dtype == np.uint8
        assert st["bdi"] == (0, CohortConfig.preset("ci").bdi_cap)
        assert np.abs(st["images"][1].astype(int) - st["images"][0].astype(int)).sum() > 0
    local = stills["local"]["landmarks"]
    # Alignment pins the eye corners, so the local cue shows elsewhere (a pitched head changes
    # the corners' 2-D layout, so they are not pinned exactly there).
    assert np.abs(local[1, [36, 39, 42, 45]] - local[0, [36, 39, 42, 45]]).max() < 0.5
    assert local[1, 48, 1] - local[0, 48, 1] > 1.0  # the mouth corner goes down
    pitch = stills["global"]["landmarks"]
    # Head pitch moves the lower face after eye-corner alignment (Decisions: Controls).
    assert abs(pitch[1, 8, 1] - pitch[0, 8, 1]) > 1.0


def test_cue_stills_reject_an_unknown_cue():
    with pytest.raises(ValueError, match="cue must be one of"):
        cue_stills(CohortConfig.preset("ci"), "voice", 64)


def test_cue_visibility_at_the_ci_preset_says_no_separation_is_claimable():
    table, images = controls.cue_visibility("ci")
    assert list(table["cue"]) == ["local", "global"]
    assert (table["input px"] == 64).all() and (table["patch cells"] == 2).all()
    assert (table["change inside union"] == 1.0).all()
    assert not table["branch separation claimable"].any()
    assert images["local"]["mask"].shape == (64, 64)


def test_control_cohorts_differ_from_the_book_cohort_only_in_their_cues():
    P = presets.get_preset("ci")
    base = presets.cohort_config(P)
    dirs = set()
    for name, cues in controls.CONTROLS.items():
        cp = controls.control_preset(P, name)
        cfg = presets.cohort_config(cp)
        assert cfg.cues == cues
        smaller = dict(P.control_overrides)  # the ci preset's control cohorts are also smaller
        assert {k: getattr(cfg, k) for k in smaller} == smaller
        assert cfg.replace(cues=base.cues, **{k: getattr(base, k) for k in smaller}) == base
        dirs.add(data.cohort_dir(cp))
    assert len(dirs) == 3 and data.cohort_dir(P) not in dirs
    with pytest.raises(ValueError, match="unknown control"):
        controls.control_preset(P, "half")
    with pytest.raises(ValueError, match="real data"):
        controls.control_preset("paper", "null")


def test_control_specs_follow_the_preset_lists(tmp_path):
    P = presets.get_preset("ci")
    stores = {c: tmp_path / c for c in controls.CONTROLS}
    specs = controls.control_specs(P, stores, 1e-3)
    assert [s.label for s in specs["null"]] == list(P.null_settings)
    for cohort in ("local only", "global only"):
        assert [s.label for s in specs[cohort]] == list(P.branch_settings)
        assert {s.store_dir for s in specs[cohort]} == {str(tmp_path / cohort)}
    assert all(s.train.learning_rate == 1e-3 and s.seed in P.control_seeds for g in specs.values() for s in g)
    keys = [(s.store_dir, s.label, s.seed) for g in specs.values() for s in g]
    assert len(set(keys)) == len(keys) == len(P.null_settings) + 2 * len(P.branch_settings)


def test_power_seeds_add_seeds_to_their_settings_only(tmp_path):
    P = presets.get_preset("ci").with_overrides(power_settings=("G", "GA"), power_seeds=tuple(range(5)))
    specs = experiments.ablation_specs(P, tmp_path, 1e-3)
    per = pd.Series([s.label for s in specs]).value_counts()
    assert per["G"] == 5 and per["GA"] == 5 and per["LA-CMP+"] == 3 and len(specs) == 8 * 3 + 2 * 5
    assert [s.seed for s in specs if s.label == "G"] == [0, 1, 2, 3, 4]
    # A reader's seeds apply to every setting.
    mine = experiments.ablation_specs(P.with_overrides(seeds=(7, 8)), tmp_path, 1e-3)
    assert len(mine) == 10 * 2 and {s.seed for s in mine} == {7, 8}


def _null_table(highs):
    return pd.DataFrame({"setting": ["G", "GA"], "diff RMSE": [h - 0.5 for h in highs], "low": [h - 1 for h in highs],
                         "high": highs, "verdict": ["tie" if h >= 0 else "setting better" for h in highs]})


def test_leaks_are_the_settings_better_than_the_mean_on_the_null_cohort():
    assert controls.leaks(_null_table([0.4, 0.3])) == []
    assert controls.leaks(_null_table([0.4, -0.1])) == ["GA"]


def test_controls_conclusion_names_a_leak_and_the_visibility():
    vis = pd.DataFrame({"cue": ["local", "global"], "input px": [64, 64], "change inside union": [1.0, 0.3],
                        "branch separation claimable": [False, True]})
    text = prose.controls_conclusion(vis, _null_table([0.4, -0.1]), ["GA"], {})
    assert "Leak" in text and "GA" in text and "only the global cue" in text and "100%" in text
    text = prose.controls_conclusion(vis.assign(**{"branch separation claimable": False}), _null_table([0.4, 0.3]), [], {})
    assert "no pipeline leak" in text and "2 of 2 tied" in text and "visible to both branches" in text
    assert "not leaks inside the images" in text  # what the null control cannot see


def test_control_cohort_sizes_are_named_in_the_chapter_note():
    assert controls.cohort_note("demo") == "The control cohorts are the book's cohort but for their cues."
    note = controls.cohort_note("ci")
    assert "n_train 24 (book cohort: 60)" in note and "n_test 8 (book cohort: 20)" in note
    with pytest.raises(ValueError, match=r"control_overrides \['bogus'\] are not cohort fields"):
        presets.BookPreset(name="x", cohort="ci", control_overrides=(("bogus", 1),))
    with pytest.raises(ValueError, match="control_overrides"):
        presets.BookPreset(name="x", cohort="ci", control_overrides=(("cues", ()),))


# --- the permuted-label and positive controls (derived stores) -----------------------------------
def test_permuted_store_shuffles_training_labels_only_and_shares_frames(tmp_path):
    from data_prep.store import read_manifest, read_video, store_fingerprint, video_path
    from data_prep.toystore import make_store

    src = make_store(tmp_path / "store", {"Training": 12, "Development": 4, "Testing": 4}, tasks=("Freeform", "Northwind"))
    dst = controls.permuted_store(src)
    a, b = read_manifest(src).set_index("video_id"), read_manifest(dst).set_index("video_id")
    train = a["partition"] == "Training"
    assert sorted(b.loc[train, "bdi"]) == sorted(a.loc[train, "bdi"])  # the same labels, shuffled
    assert (b.loc[train, "bdi"] != a.loc[train, "bdi"]).any()
    assert (b.loc[~train, "bdi"] == a.loc[~train, "bdi"]).all()  # Development and Testing untouched
    assert (b.loc[train].groupby("session_id")["bdi"].nunique() == 1).all()  # a session keeps one label
    vid = a.index[0]
    assert (read_video(video_path(dst, vid))["frames"] == read_video(video_path(src, vid))["frames"]).all()
    assert store_fingerprint(dst) != store_fingerprint(src)
    assert controls.permuted_store(src) == dst  # reused, not made again


def test_leak_store_brightens_each_frame_by_the_label(tmp_path):
    from data_prep.store import read_manifest, read_video, video_path
    from data_prep.toystore import make_store

    src = make_store(tmp_path / "store", {"Training": 6, "Development": 3, "Testing": 3})
    dst = controls.leak_store(src, 63.0)
    m = read_manifest(src)
    for vid, bdi in zip(m["video_id"], m["bdi"]):
        before = read_video(video_path(src, vid))["frames"].astype(int)
        after = read_video(video_path(dst, vid))["frames"].astype(int)
        unclipped = before + int(round(bdi)) <= 255
        assert (after[unclipped] - before[unclipped] == int(round(bdi))).all(), vid
    assert (read_manifest(dst)["bdi"] == m["bdi"]).all()
    with pytest.raises(ValueError, match="positive number of grey levels"):
        controls.leak_store(src, 0)


def test_leak_table_and_the_smallest_flagged_level():
    tables = {f"leak {lvl}": _null_table([high, 0.0]).iloc[:1] for lvl, high in ((4, 0.5), (16, -0.2), (64, -2.0))}
    rows = controls.leak_table(tables)
    assert rows["flagged as a leak"].tolist() == [False, True, True]
    assert rows["gain over the training mean (BDI)"].tolist() == pytest.approx([0.0, 0.7, 2.5])
    assert rows["fragile"].tolist() == [True, True, False]  # ends 0.5 and 0.2 BDI from 0; 64's is 2 away
    assert controls.smallest_flagged(rows) == {"level": 16.0, "gain": pytest.approx(0.7), "fragile": True}
    robust = controls.smallest_flagged(rows, robust=True)
    assert robust == {"level": 64.0, "gain": pytest.approx(2.5), "fragile": False}
    assert controls.smallest_flagged(rows[rows["leak (grey levels at BDI 63)"] == 4.0]) is None
    text = prose.leak_conclusion(pd.DataFrame(), rows, controls.smallest_flagged(rows), robust)
    assert "the smallest flagged is **16**" in text and "leaks larger than **0.70 BDI** would have been seen" in text
    assert "That flag is fragile" in text and "smallest level flagged robustly is **64** (gain 2.50 BDI)" in text
    plain = prose.leak_conclusion(pd.DataFrame(), rows.iloc[2:], controls.smallest_flagged(rows.iloc[2:]))
    assert "the smallest flagged is **64**" in plain and "fragile" not in plain
    assert "positive control fails" in prose.leak_conclusion(pd.DataFrame(), rows.iloc[:1], None)


def test_demo_controls_have_three_seeds_and_every_kind():
    demo = presets.get_preset("demo")
    assert len(demo.control_seeds) >= 3 and demo.leak_levels == (4.0, 16.0, 64.0)
    assert set(demo.permuted_settings) == set(demo.null_settings) == {"G", "GA", "LA-CMP+"}
    assert {len(demo.seeds), len(demo.lr_seeds)} == {10} and not demo.power_settings


def test_control_readings_compute_each_family_once_for_the_chapter_and_the_reference(monkeypatch):
    tables = {"null": _null_table([0.4, 0.3]).assign(fragile=[False, True]),
              controls.PERMUTED: _null_table([0.4, -0.1]).assign(fragile=False),
              "leak 4": _null_table([0.5, 0.2]).iloc[:1], "leak 16": _null_table([-0.2, -0.3]).iloc[:1]}
    calls = []

    def with_mean(runs, n):  # a control's run list stands for the control here
        calls.append(runs[0])
        return tables[runs[0]], []

    monkeypatch.setattr(controls.intervals, "comparisons_with_mean", with_mean)
    readings = controls.read_controls({name: [name] for name in tables} | {"local only": ["x"]}, n=10)
    assert sorted(calls) == sorted(tables)  # each family once; the branch cohorts are not controls of this kind
    assert readings.smallest == {"level": 16.0, "gain": pytest.approx(0.7), "fragile": True}
    assert readings.verdicts() == {"null": {"verdict": "no leak", "fragile": True},
                                   controls.PERMUTED: {"verdict": "leak", "fragile": False},
                                   "positive": {"smallest flagged level": 16.0, "gain at it (BDI)": 0.7, "fragile": True,
                                                "smallest robustly flagged level": None}}
    assert controls.read_controls({}, n=10).verdicts() == {}
