"""The chapters' figures: the plot style, faces with their patch centres, rank plots, and the
small tables they draw from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from dlga.training.metrics import BAND_NAMES, severity_band


# --- figures --------------------------------------------------------------------------------------
def face_frame_index(frames: np.ndarray) -> int:
    """The index of a frame with a face in view: the one whose central half varies most.

    ``frames`` is ``(N, S, S, 3)`` uint8 aligned faces. A frame where preprocessing reused an
    earlier box can show background, which is flatter than a face.
    """
    s = frames.shape[1]
    centre = frames[:, s // 4:3 * s // 4, s // 4:3 * s // 4]
    return int(np.argmax(centre.reshape(len(frames), -1).std(axis=1)))


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


