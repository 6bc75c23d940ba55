"""Provenance of results, results tables, and image grids for the repair figures.

Every results row says how it was made: profile, seed, git commit and a hash of the data it was computed on.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .config import PROJECT_ROOT

RESULT_COLUMNS = ["table", "id", "ood", "method", "metric", "value", "ci_low", "ci_high", "n_id", "n_ood",
                  "profile", "seed", "commit", "data_hash", "note"]


def git_commit(short: bool = True, root: Path = PROJECT_ROOT) -> str:
    """The commit the workbook runs at, with ``+dirty`` when tracked files outside ``results/`` and ``detectors/``
    have uncommitted changes. Those two are what the workbook writes, so a re-run over committed results (or a
    re-ship over shipped detectors) is still clean code."""
    try:
        args = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
        rev = subprocess.run(args, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)detectors"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def results_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows -> a frame with the standard columns in the standard order (missing optional ones left empty)."""
    frame = pd.DataFrame(list(rows))
    for col in RESULT_COLUMNS:
        if col not in frame:
            frame[col] = None
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[RESULT_COLUMNS + extra]


def auroc_cell(value: float, ci_low: float | None = None, ci_high: float | None = None) -> str:
    """AUROC ×100 as the workbook's tables print it: ``82.12 [79.79, 84.16]`` (the CI when there is one)."""
    ci = "" if ci_low is None or pd.isna(ci_low) else f" [{ci_low:.2f}, {ci_high:.2f}]"
    return f"{value:.2f}{ci}"


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a CSV via a temporary file and a rename, so a crash never leaves half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def image_grid(images: np.ndarray, nrow: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``(N, H, W, 3)`` into one uint8 image with ``nrow`` images per row."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"image_grid wants uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    ncol = max(1, nrow)
    nrows = -(-n // ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, 3), pad_value, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def repair_figure(rows: Sequence[tuple[str, np.ndarray]], columns: Sequence[tuple[str, np.ndarray]] | None = None,
                  title: str | None = None, path: str | os.PathLike | None = None):
    """A figure in the paper's layout: one labelled row of images per stage (original / eroded / repaired).

    ``rows``: ``[(label, uint8 (N, H, W, 3)), ...]``, all with the same N. ``columns`` optionally splits the N
    images into named groups (e.g. one per dataset) given as ``[(name, count), ...]`` — drawn as titles.
    Saves a PNG when ``path`` is given (atomically) and returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    n = len(rows[0][1])
    if any(len(r[1]) != n for r in rows):
        raise ValueError("every row of a repair figure needs the same number of images")
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4, n * 0.6), 0.7 * len(rows) + (0.4 if title else 0)),
                             squeeze=False)
    for ax, (label, imgs) in zip(axes[:, 0], rows):
        ax.imshow(image_grid(imgs, nrow=n))
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    if columns:
        h_img = rows[0][1].shape[2] + 2
        pos = 0
        for name, count in columns:
            axes[0, 0].text((pos + count / 2) * h_img, -4, name, ha="center", va="bottom", fontsize=8)
            pos += count
    return _finish(fig, title, path)


def _finish(fig, title: str | None, path):
    """Title, tight layout, and an atomic PNG when a path is given."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def dataset_overview(names: Sequence[str], resolution: int, n_show: int = 8, path: str | os.PathLike | None = None):
    """Counts per split of each present dataset and one row of sample images each (test split, else the first).

    Returns ``(counts_frame, figure)``; absent datasets are left out here (``dataset_status`` says why).
    """
    import matplotlib.pyplot as plt

    from srood_lib.data import DATASETS, DatasetMissingError, load_dataset

    counts, rows = [], []
    for name in names:
        spec = DATASETS[name]
        shown = None
        for split in spec.splits:
            try:
                s = load_dataset(name, split, resolution, progress=False)
            except DatasetMissingError:
                continue
            counts.append({"dataset": name, "split": split, "count": len(s), "sha256": s.manifest["sha256"][:12]})
            if shown is None or split == "test":
                shown = s
        if shown is not None:
            pick = np.sort(np.random.default_rng(0).choice(len(shown), min(n_show, len(shown)), replace=False))
            rows.append((f"{name}\n({shown.split})", shown.images[pick]))  # a spread, not the first class
    fig = None
    if rows:
        fig, axes = plt.subplots(len(rows), 1, figsize=(n_show * 0.8, 0.9 * len(rows)), squeeze=False)
        for ax, (label, imgs) in zip(axes[:, 0], rows):
            ax.imshow(image_grid(imgs, nrow=n_show))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        fig.tight_layout()
        if path is not None:
            save_figure(fig, path)
    return pd.DataFrame(counts), fig


def erosion_figure(images: np.ndarray, erosion_names: Sequence[str], seed: int, path=None):
    """The "after erosion" rows of Figs 3–6: ``images`` (uint8) under each named erosion, one row each."""
    import torch

    from srood_lib.data import to_tensor, to_uint8
    from srood_lib.erosion import parse_erosion

    x = to_tensor(images)
    rows = [("original", np.asarray(images))]
    for name in erosion_names:
        gen = torch.Generator().manual_seed(seed)
        rows.append((name, to_uint8(parse_erosion(name)(x, generator=gen))))
    return repair_figure(rows, path=path)


def loss_curves(csv_path: str | os.PathLike, columns: Sequence[str], x: str = "kimg", title: str | None = None,
                path: str | os.PathLike | None = None, smooth: int = 20):
    """Plot training losses from a losses.csv (raw, faint; running mean, solid). Returns the figure."""
    import matplotlib.pyplot as plt

    frame = pd.read_csv(csv_path)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.6), squeeze=False)
    for ax, col in zip(axes[0], columns):
        ax.plot(frame[x], frame[col], alpha=0.3, lw=0.8)
        ax.plot(frame[x], frame[col].rolling(smooth, min_periods=1).mean(), lw=1.5)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel(x)
    return _finish(fig, title, path)


def tick_labels(values) -> list[str]:
    """Category names for an axis: a ``key=`` prefix that every name shares is dropped (the axis label says it)."""
    names = [str(v) for v in values]
    keys = {n.split("=", 1)[0] for n in names}
    if len(keys) == 1 and all("=" in n for n in names):
        return [n.split("=", 1)[1] for n in names]
    return names


def auroc_curve(frame: pd.DataFrame, x: str, xlabel: str, marked=None, mark_label: str = "profile setting",
                title: str | None = None, path: str | os.PathLike | None = None, logx: bool = False):
    """AUROC ×100 against ``x``, one line per OOD set, with the bootstrap CI as error bars when the frame has it.

    ``frame``: rows with columns ``ood``, ``x`` and ``value`` (or ``auroc``); ``marked`` draws a vertical line at
    that x (e.g. the paper's or the profile's setting). Categorical x (strings) are placed in their given order.
    """
    import matplotlib.pyplot as plt

    value = "value" if "value" in frame else "auroc"
    order = list(dict.fromkeys(frame[x]))
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in order)
    pos = (lambda v: v) if numeric else (lambda v: order.index(v))
    labels = tick_labels(order) if not numeric else []
    fig, ax = plt.subplots(figsize=(max(4.6, 1.1 * len(labels)), 3.0))
    for name, part in frame.groupby("ood", sort=False):
        xs = [pos(v) for v in part[x]]
        err = None
        if {"ci_low", "ci_high"} <= set(part) and part["ci_low"].notna().all():
            err = [part[value] - part["ci_low"], part["ci_high"] - part[value]]
        ax.errorbar(xs, part[value], yerr=err, marker="o", ms=3, capsize=2, label=name)
    if marked is not None:
        ax.axvline(pos(marked), color="grey", ls="--", lw=1, label=mark_label)
    if not numeric:
        ax.set_xticks(range(len(order)), labels)
    if logx:
        ax.set_xscale("log", base=2)
    ax.axhline(50, color="k", lw=0.5, alpha=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUROC ×100")
    ax.legend(fontsize=7)
    return _finish(fig, title, path)


def score_histograms(scores: dict[str, dict[str, np.ndarray]], id_key: str = "id", threshold: dict | None = None,
                     title: str | None = None, path=None, bins: int = 40):
    """One panel per (row, OOD set): ID vs. OOD score histograms on shared bins, eps as a dashed line.

    ``scores``: ``{row name: {"id": ..., ood_name: ...}}`` (e.g. one row per SR-OOD variant)."""
    import matplotlib.pyplot as plt

    names = list(scores)
    oods = [k for k in scores[names[0]] if k != id_key]
    fig, axes = plt.subplots(len(names), max(len(oods), 1), figsize=(3.2 * max(len(oods), 1), 2.4 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        s_id = np.asarray(scores[name][id_key])
        for c, ood in enumerate(oods):
            ax, s_ood = axes[r, c], np.asarray(scores[name][ood])
            edges = np.histogram_bin_edges(np.concatenate([s_id, s_ood]), bins=bins)
            ax.hist(s_id, bins=edges, alpha=0.6, density=True, label="ID test")
            ax.hist(s_ood, bins=edges, alpha=0.6, density=True, label=ood)
            if threshold and threshold.get(name) is not None:
                ax.axvline(threshold[name], color="k", ls="--", lw=1, label="ε")
            long_name = len(name) > 24  # a long row name goes once, beside its row, not over every panel
            ax.set_title(f"vs {ood}" if long_name else f"{name} vs {ood}", fontsize=9)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(textwrap.fill(name, 28) + "\ndensity" if long_name else "density", fontsize=8)
            ax.legend(fontsize=6)
    return _finish(fig, title, path)


def auroc_heatmap(frame: pd.DataFrame, title: str | None = None, path=None):
    """Methods (rows, in order of appearance) x OOD sets (columns) of AUROC x100, annotated; 50 is white, so
    below-chance cells (the likelihood failure) stand out in red. ``frame``: columns method, ood, value."""
    import matplotlib.pyplot as plt

    table = frame.pivot_table(index="method", columns="ood", values="value", aggfunc="first", sort=False)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 0.8 + 0.32 * table.shape[0]))
    ax.imshow(table.to_numpy(dtype=float), cmap="RdBu", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if abs(v - 50) > 35 else "k")
    return _finish(fig, title, path)
