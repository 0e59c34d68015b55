"""What several chapters of the book share: the paper's reported numbers, notices, tables, figures.

Chapters stay thin: a parameters cell, a few calls into :mod:`dlga.experiments` and this
module, and prose. Reported numbers are the paper's (He, Chan, Wang), copied from its Tables 3-8 and
section 4.3.3; measured numbers come from the runs under ``runs/``.
"""

from __future__ import annotations

import html
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from IPython.display import HTML

from dlga import data as data_lib
from dlga.config import SETTING_LABELS, SETTINGS
from dlga.metrics import BAND_NAMES, bootstrap_ci, paired_bootstrap, severity_band
from dlga.predict import ATTENTION_COLUMNS, predict_frames, restore_run_model

# --- the paper's numbers ("reported") --------------------------------------------------------
# Tables 3 (AVEC2013) and 4 (AVEC2014): test RMSE, MAE per setting.
PAPER_ABLATION = {
    "avec2013": {
        "LA-CMP-": (8.84, 7.26), "LA-CMP+": (8.80, 7.22), "A": (8.60, 6.90), "B": (8.44, 6.63),
        "GA": (9.14, 7.51), "C": (9.07, 7.44), "D": (8.80, 7.23), "E": (8.74, 7.10),
        "F": (8.61, 6.90), "G": (8.39, 6.59),
    },
    "avec2014": {
        "LA-CMP-": (8.81, 7.25), "LA-CMP+": (8.79, 7.22), "A": (8.60, 6.90), "B": (8.42, 6.62),
        "GA": (9.11, 7.50), "C": (9.00, 7.41), "D": (8.70, 7.02), "E": (8.66, 6.93),
        "F": (8.56, 6.81), "G": (8.30, 6.51),
    },
}
# Tables 5 (AVEC2013, G1) and 6 (AVEC2014, G2): test RMSE, MAE per learning rate.
PAPER_LR = {
    "avec2013": {1e-6: (8.39, 6.59), 1e-5: (8.59, 6.90), 1e-4: (8.78, 7.21), 1e-3: (9.10, 7.50),
                 1e-2: (9.28, 7.60), 1e-1: (9.36, 7.65)},
    "avec2014": {1e-6: (8.30, 6.51), 1e-5: (8.54, 6.89), 1e-4: (8.80, 7.22), 1e-3: (9.08, 7.49),
                 1e-2: (9.26, 7.48), 1e-1: (9.35, 7.65)},
}
# Tables 7 (AVEC2013) and 8 (AVEC2014): the literature as the paper reports it (MAE None: N/A).
PAPER_LITERATURE = {
    "avec2013": [
        ("Baseline [11] / LPQ, SVR", 13.61, 10.88), ("Cummins et al. [34] / STIP and PHOG, SVR", 10.45, None),
        ("Meng et al. [35] / EOH and LBP, PLSR", 11.19, 9.14), ("Wen et al. [2] / LPQ-TOP, SVR", 10.27, 8.22),
        ("Zhu et al. [19] / Optical Flow, 2D-CNN", 9.82, 7.58), ("Mohamad et al. [13] / C3D, RNN", 9.28, 7.37),
        ("He et al. [18] / MRLBP-TOP, DPFV, SVR", 9.20, 7.55), ("Md et al. [23] / LSTM", 8.93, 7.04),
        ("Zhou et al. [6] / 2D-CNN", 8.19, 6.30), ("Melo et al. [21] / C3D", 8.26, 6.40),
        ("Melo et al. [36] / ResNet-50", 8.25, 6.30), ("Proposed approach (DLGA-CNN, G1)", 8.39, 6.59),
    ],
    "avec2014": [
        ("Baseline [12] / LGBP-TOP, SVR", 10.86, 8.86), ("Sidorov et al. [37] / LGBP-TOP, SVR", 10.83, 8.32),
        ("Jan et al. [38] / EOH, LBP and LPQ, PLSR", 10.50, 8.44), ("Kaya et al. [39] / CCA, ELM", 10.27, 8.20),
        ("Zhu et al. [19] / Optical Flow, 2D-CNN", 9.55, 7.47), ("Mohamad et al. [13] / C3D, RNN", 9.20, 7.22),
        ("He et al. [18] / MRLBP-TOP, DPFV, SVR", 9.01, 7.21), ("Dhall et al. [4] / LBP-TOP, SVR", 8.91, 7.08),
        ("Md et al. [23] / LSTM", 8.78, 6.86), ("Zhou et al. [6] / 2D-CNN", 8.39, 6.21),
        ("Melo et al. [21] / C3D", 8.31, 6.59), ("Melo et al. [36] / ResNet-50", 8.23, 6.13),
        ("Proposed approach (DLGA-CNN, G2)", 8.30, 6.51),
    ],
}
PAPER_SECONDS_PER_IMAGE = 2.12  # section 4.3.3, Intel Core i7-6700 3.40 GHz, 32 GB, TensorFlow
PAPER_TRAINING_HOURS = 5
PAPER_MACHINE = "Intel Core i7-6700 CPU @ 3.40 GHz, 32 GB, TensorFlow"

# Table 2 of the paper: output size of each block at input 224 (side, channels).
PAPER_TABLE2 = [
    ("Conv1_1", 224, 64), ("Pool1", 112, 64), ("Conv2_1", 112, 128), ("Pool2", 56, 128),
    ("Conv3_1", 56, 256), ("Pool3", 28, 256), ("Conv4_1", 28, 512), ("Conv4_2", 28, 512),
    ("CMP", 28, 128),
]
# The layers of dlga.model.build_model that Table 2's rows name.
TABLE2_LAYERS = {
    "Conv1_1": "conv1", "Pool1": "pool1", "Conv2_1": "conv2", "Pool2": "pool2", "Conv3_1": "conv3",
    "Pool3": "pool3", "Conv4_1": "conv4_1", "Conv4_2": "conv4_2", "CMP": "cmp",
}


def paper_key(dataset: str) -> str:
    """The paper's table to set beside ours: AVEC2013 for ``avec2013``, else AVEC2014
    (the synthetic cohort has the AVEC2014 layout and label distribution)."""
    return "avec2013" if dataset == "avec2013" else "avec2014"


def table_suffix(dataset: str) -> str:
    return "1" if dataset == "avec2013" else "2"


# --- notices -----------------------------------------------------------------------------------
def _admonition(kind: str, title: str, body: str) -> str:
    return (f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")


def data_notice(dataset: str, preset: str):
    """The banner at the top of every page with results: what data the numbers come from."""
    if dataset == "synthetic":
        body = (f"Every number measured on this page comes from the <b>synthetic cohort</b> "
                f"(preset <code>{html.escape(preset)}</code>): synthetic faces with synthetic BDI-II "
                "labels. These numbers test the pipeline; they do not reproduce the paper's results "
                "on AVEC and must not be compared with them as if they did. The paper's numbers are "
                "labelled <i>reported</i>, ours <i>measured</i>.")
        return HTML(_admonition("warning", "Synthetic data", body))
    body = (f"Measured on <b>{html.escape(str(dataset))}</b> (preset <code>{html.escape(preset)}</code>). "
            "The paper's numbers are labelled <i>reported</i>, ours <i>measured</i>.")
    return HTML(_admonition("note", "Data", body))


# --- tables -------------------------------------------------------------------------------------
def styled(frame: pd.DataFrame, caption: str | None = None, precision: int = 2, hide_index: bool = True):
    """A pandas Styler with a caption and fixed precision (how the book shows tables)."""
    sty = frame.style.format(precision=precision, na_rep="–")
    if hide_index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_attributes('class="dataframe"')


def mean_sd(values: Iterable[float]) -> str:
    v = np.asarray(list(values), dtype=float)
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def runs_table(runs) -> pd.DataFrame:
    """One row per run: setting, lr, seed, steps, Development and Testing metrics, wall time."""
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({
            "run_id": r.run_id, "setting": r.params.get("setting"), "lr": r.params["train"]["learning_rate"],
            "seed": r.params["train"]["seed"], "steps": m["steps"], "best_step": m["best_step"],
            "stop": m["stop_reason"], "dev_rmse": m["dev"]["rmse"], "dev_mae": m["dev"]["mae"],
            "test_rmse": m["test"]["rmse"], "test_mae": m["test"]["mae"],
            "mean_dev_rmse": m["mean_predictor"]["dev"]["rmse"], "mean_test_rmse": m["mean_predictor"]["test"]["rmse"],
            "pred_sd_test": float(r.predictions.loc[r.predictions["partition"] == "Testing", "prediction"].std()),
            "wall_s": m["wall_time_s"],
        })
    return pd.DataFrame(rows)


def video_interval(runs, metric: str = "rmse", n: int = 2000, seed: int = 0) -> str:
    """Bootstrap 95 % interval over Testing videos of the seed-averaged predictions, "[lo, hi]"."""
    if not runs:
        return ""
    p = pooled_predictions(runs)
    ci = bootstrap_ci(p["bdi"].to_numpy(float), p["prediction"].to_numpy(float), metric, n=n, seed=seed)
    return f"[{ci['low']:.2f}, {ci['high']:.2f}]"


def cross_dataset_table(within, across, dataset: str, other: str, n_boot: int = 2000) -> pd.DataFrame:
    """G tested on its own dataset's Testing partition beside G tested on another dataset's.

    ``within`` and ``across`` are runs of the same specs (setting, schedule, seeds) that differ
    only in the test store, so the rows differ only in the test data.
    """
    rows = []
    for runs, tested_on in ((within, dataset), (across, other)):
        t = runs_table(runs)
        rows.append({"trained on": dataset, "tested on": tested_on, "seeds": len(t),
                     "RMSE measured": mean_sd(t["test_rmse"]), "RMSE 95% CI (seed-mean, videos)": video_interval(runs, n=n_boot),
                     "MAE measured": mean_sd(t["test_mae"]),
                     "mean predictor RMSE": mean_sd(r.metrics["mean_predictor"]["test"]["rmse"] for r in runs)})
    return pd.DataFrame(rows)


def ablation_table(runs, dataset: str, n_boot: int = 2000) -> pd.DataFrame:
    """Tables 3/4: the paper's RMSE/MAE beside ours (mean ± sd over seeds, and the bootstrap
    95 % interval over Testing videos of the seed-averaged predictions), ten settings."""
    t = runs_table(runs)
    paper = PAPER_ABLATION[paper_key(dataset)]
    suffix = table_suffix(dataset)
    rows = []
    for s in SETTINGS:
        sub = t[t["setting"] == s]
        label = SETTING_LABELS[s]
        if ":" in label:
            letter, rest = label.split(":", 1)
            label = f"{letter}{suffix}:{rest}"
        rows.append({
            "setting": label, "RMSE reported": paper[s][0], "MAE reported": paper[s][1],
            "RMSE measured": mean_sd(sub["test_rmse"]),
            "RMSE 95% CI (seed-mean, videos)": video_interval([r for r in runs if r.params["setting"] == s], n=n_boot),
            "MAE measured": mean_sd(sub["test_mae"]),
            "Dev RMSE measured": mean_sd(sub["dev_rmse"]), "seeds": len(sub),
            "_rmse": sub["test_rmse"].mean() if len(sub) else np.nan,
        })
    return pd.DataFrame(rows)


def lr_table(runs, dataset: str, chosen: float, n_boot: int = 2000) -> pd.DataFrame:
    """Tables 5/6: setting G per learning rate, the paper's Testing RMSE/MAE beside ours
    (mean ± sd over seeds, the bootstrap interval of the seed-averaged predictions) and the
    Development RMSE; ``chosen`` marks the rate selected on Development."""
    t = runs_table(runs)
    paper = PAPER_LR[paper_key(dataset)]
    rows = []
    for lr, sub in t.groupby("lr"):
        reported = paper.get(lr, (np.nan, np.nan))
        rows.append({"learning rate": f"{lr:g}", "RMSE reported": reported[0], "MAE reported": reported[1],
                     "RMSE measured": mean_sd(sub["test_rmse"]),
                     "RMSE 95% CI (seed-mean, videos)": video_interval(
                         [r for r in runs if r.params["train"]["learning_rate"] == lr], n=n_boot),
                     "MAE measured": mean_sd(sub["test_mae"]), "Dev RMSE measured": mean_sd(sub["dev_rmse"]),
                     "selected on Development": "yes" if lr == chosen else ""})
    return pd.DataFrame(rows)


def backbone_table(model) -> pd.DataFrame:
    """Table 2 beside the built model: for each row of :data:`PAPER_TABLE2`, the reported
    output size and the output size of the layer of ``model`` (a :func:`dlga.model.build_model`
    model) that the row names, as ``side x side x channels``; ``absent`` where the model has no
    such layer (CMP in a CMP- setting)."""
    names = {layer.name for layer in model.layers}
    rows = []
    for row, side, channels in PAPER_TABLE2:
        layer = TABLE2_LAYERS[row]
        if layer in names:
            _, h, w, c = model.get_layer(layer).output.shape
            built = f"{h}x{w}x{c}"
        else:
            built = "absent"
        rows.append({"layer": row, "Table 2 (reported)": f"{side}x{side}x{channels}", "built (measured)": built})
    return pd.DataFrame(rows)


def face_frame_index(frames: np.ndarray) -> int:
    """The index of a frame with a face in view: the one whose central half varies most.

    ``frames`` is ``(N, S, S, 3)`` uint8 aligned faces. A frame where preprocessing reused an
    earlier box can show background, which is flatter than a face.
    """
    s = frames.shape[1]
    centre = frames[:, s // 4:3 * s // 4, s // 4:3 * s // 4]
    return int(np.argmax(centre.reshape(len(frames), -1).std(axis=1)))


def pooled_predictions(runs, partition: str = "Testing") -> pd.DataFrame:
    """Per-video predictions of a partition, averaged over the runs (seeds): video_id, bdi, prediction."""
    frames = []
    for r in runs:
        p = r.predictions[r.predictions["partition"] == partition][["video_id", "session_id", "bdi", "prediction"]]
        frames.append(p.set_index("video_id"))
    base = frames[0][["session_id", "bdi"]].copy()
    base["prediction"] = np.mean([f.loc[base.index, "prediction"].to_numpy() for f in frames], axis=0)
    return base.reset_index()


def paired_comparison(runs_a, runs_b, n: int = 2000, seed: int = 0, metric: str = "rmse") -> dict:
    """Paired bootstrap of metric(a) - metric(b) on Testing videos, predictions averaged over seeds."""
    a, b = pooled_predictions(runs_a), pooled_predictions(runs_b).set_index("video_id")
    b = b.loc[a["video_id"]]
    return paired_bootstrap(a["bdi"].to_numpy(float), a["prediction"].to_numpy(float),
                            b["prediction"].to_numpy(float), metric=metric, n=n, seed=seed)


def verdict_label(res: dict, name_a: str, name_b: str) -> str:
    """``"tie"`` when the paired interval contains 0, else ``"<name> better"`` for the side
    with the lower error (a negative difference favours ``name_a``)."""
    if res["low"] <= 0 <= res["high"]:
        return "tie"
    return f"{name_a if res['diff'] < 0 else name_b} better"


def verdict(res: dict, name_a: str, name_b: str, unit: str = "BDI points") -> str:
    """A difference in words: a tie when the paired interval contains 0."""
    d, lo, hi = res["diff"], res["low"], res["high"]
    ci = f"{d:+.2f} {unit} (95 % paired bootstrap interval [{lo:+.2f}, {hi:+.2f}])"
    label = verdict_label(res, name_a, name_b)
    if label == "tie":
        return f"{name_a} vs {name_b}: {ci}: a **tie**, the interval contains 0."
    return f"{name_a} vs {name_b}: {ci}: **{label.removesuffix(' better')}** has the lower error."


def comparisons_with(runs, reference: str = "G", n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """The paired comparison of ``reference`` with every other setting among ``runs``.

    Returns a table (one row per other setting: the difference of Testing RMSE, reference minus
    it, the 95 % interval and the verdict of :func:`verdict_label`) and the same comparisons in
    words (:func:`verdict`), in the order of :data:`dlga.config.SETTINGS`.
    """
    by = {s: [r for r in runs if r.params["setting"] == s] for s in SETTINGS}
    rows, lines = [], []
    for s in SETTINGS:
        if s == reference or not by[s]:
            continue
        res = paired_comparison(by[reference], by[s], n=n, seed=seed)
        rows.append({f"{reference} minus": s, "diff RMSE": res["diff"], "low": res["low"], "high": res["high"],
                     "verdict": verdict_label(res, reference, s)})
        lines.append(verdict(res, reference, s))
    return pd.DataFrame(rows), lines


def paired_with_predictions(pooled: pd.DataFrame, predictions: pd.DataFrame, n: int = 2000, seed: int = 0,
                            metric: str = "rmse") -> dict:
    """Paired bootstrap of metric(pooled) - metric(other) on the Testing videos of ``pooled``.

    Args:
        pooled: per-video predictions (``video_id``, ``bdi``, ``prediction``), e.g. from
            :func:`pooled_predictions`.
        predictions: another model's per-video predictions with ``video_id``, ``partition``
            and ``prediction`` (a baseline's), matched to ``pooled`` by video id.
    """
    other = predictions[predictions["partition"] == "Testing"].set_index("video_id")
    return paired_bootstrap(pooled["bdi"].to_numpy(float), pooled["prediction"].to_numpy(float),
                            other.loc[pooled["video_id"], "prediction"].to_numpy(float), metric=metric, n=n, seed=seed)


# --- figures --------------------------------------------------------------------------------------
def setup_plots():
    """Seaborn's whitegrid theme at a modest resolution; returns ``matplotlib.pyplot``."""
    # The plotting libraries load here and in rank_plot, when a chapter first draws: the
    # package's other users (tests, the command line) never pay for them.
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = 90
    return plt


def draw_centres(ax, image: np.ndarray, centres: np.ndarray, numbered: bool = True, weights=None, cmap="magma"):
    """An aligned face with the 24 patch centres (numbered 1-24), optionally coloured by weight."""
    ax.imshow(image)
    if weights is None:
        ax.scatter(centres[:, 0], centres[:, 1], s=14, c="#00e5ff", edgecolors="k", linewidths=0.4)
    else:
        sc = ax.scatter(centres[:, 0], centres[:, 1], s=40 + 260 * np.asarray(weights), c=weights, cmap=cmap,
                        vmin=0, vmax=1, edgecolors="w", linewidths=0.6)
        ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="local weight α")
    if numbered:
        for i, (x, y) in enumerate(centres, 1):
            ax.annotate(str(i), (x, y), xytext=(2, -2), textcoords="offset points", fontsize=6, color="yellow")
    ax.set_axis_off()


def severity_band_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Sessions per partition and BDI-II severity band (paper Table 1)."""
    per = labels.drop_duplicates("session_id").copy()
    per["band"] = [BAND_NAMES[i] for i in severity_band(per["bdi"])]
    out = per.pivot_table(index="partition", columns="band", values="session_id", aggfunc="count", fill_value=0)
    out = out.reindex(columns=list(BAND_NAMES), fill_value=0)
    return out.reindex([p for p in ("Training", "Development", "Testing") if p in out.index])


def describe_versions(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")


def rank_plot(table: pd.DataFrame, ax, value: str = "test_rmse", by: str = "setting", reference: float | None = None):
    """Settings ranked by mean Testing RMSE, one dot per seed, the mean predictor as a line."""
    import seaborn as sns

    order = table.groupby(by)[value].mean().sort_values().index.tolist()
    sns.pointplot(data=table, y=by, x=value, order=order, ax=ax, linestyle="none", errorbar="sd", color="k",
                  markers="D", markersize=4)
    sns.stripplot(data=table, y=by, x=value, order=order, ax=ax, alpha=0.5, size=4)
    if reference is not None:
        ax.axvline(reference, ls="--", c="grey", lw=1)
        ax.text(reference, -0.6, " training-mean predictor", fontsize=8, color="grey", va="bottom")
    ax.set_xlabel("Testing RMSE per video (BDI points)")
    ax.set_ylabel("")
    return order


def listing(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else ""


# --- trained models -------------------------------------------------------------------------------
def load_run_model(run):
    """Rebuild a run's model and restore its kept (best Development) weights. Returns (model, config).

    ``run``: a :class:`dlga.rundir.Run`. Raises :class:`dlga.rundir.RunError` as
    :func:`dlga.predict.restore_run_model` does.
    """
    model, config, _ = restore_run_model(run.path)
    return model, config


def attention(model, part, input_size: int, batch_size: int = 64) -> pd.DataFrame:
    """Per frame of a partition, in evaluation order: ``video_id``, ``session_id``,
    ``partition``, ``bdi``, then :func:`dlga.predict.predict_frames`'s columns (``prediction``,
    the 24 local weights ``a1..a24``, ``global_attention``) and ``local_mean``, the mean of the
    local weights (when the model has them).

    Args:
        model: a model of :func:`load_run_model`.
        part: a :class:`dlga.data.Partition` (in memory or streaming).
        input_size: the model's input side.
        batch_size: frames per model call.
    """
    chunk = 16 * int(batch_size)  # streamed partitions are read this many frames at a time
    tables = []
    for start in range(0, part.n_frames, chunk):
        if part.in_memory:
            frames, landmarks = part.frames[start : start + chunk], part.landmarks[start : start + chunk]
        else:
            pairs = [part.frame(i) for i in range(start, min(start + chunk, part.n_frames))]
            frames, landmarks = np.stack([f for f, _ in pairs]), np.stack([lm for _, lm in pairs])
        tables.append(predict_frames(model, frames, landmarks, input_size, batch_size))
    table = pd.concat(tables, ignore_index=True)
    local = [c for c in ATTENTION_COLUMNS if c in table]
    if local:
        table["local_mean"] = table[local].mean(axis=1)
    return pd.concat([data_lib.frame_table(part), table], axis=1)
