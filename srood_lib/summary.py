"""The one-page report (notebook 99): every table of the workbook, ours beside the paper's, each cell labelled.

It reads only what the other notebooks wrote to ``results/<profile>/`` and its ID folders
(``results/<profile>/<id_set>/``: CSV tables in the standard row format, PNG figures), so it can be re-rendered
without running anything. A cell is one of:

- ``ours``: computed by this workbook (the row's profile, seed, commit and data hash say how);
- ``needs online data``: the OOD set is not present here (``./run_all.sh`` fetches it on a machine with internet);
- ``quoted from the paper``: no run of ours, the paper's number with the reason (e.g. a withdrawn dataset, or a
  table the workbook has not reproduced yet).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from srood_lib.paper import paper_results
from srood_lib.report import auroc_cell

OURS, NEEDS_DATA, QUOTED = "ours", "needs online data", "quoted from the paper"
KEY = ["table", "method", "setting", "ood"]


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """All result rows (the standard format: a ``table`` column) of every CSV in ``results_dir`` and its ID
    folders; ``file`` is the path relative to ``results_dir``.

    Rows of the JPEG compression control (noted "JPEG") are left out: they are a control, not a table cell.
    """
    frames = []
    root = Path(results_dir)
    for path in sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv")):
        frame = pd.read_csv(path, dtype={"setting": str, "table": str})
        if not {"table", "method", "ood", "metric", "value"} <= set(frame.columns):
            continue
        frame["file"] = path.relative_to(root).as_posix()
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*KEY, "metric", "value", "note", "file"])
    rows = pd.concat(frames, ignore_index=True)
    rows["setting"] = rows.get("setting", pd.Series("", index=rows.index)).fillna("")
    rows["note"] = rows["note"].fillna("")
    return rows[~rows["note"].str.contains("JPEG")]


def quote_reason(method: str, table_has_ours: bool) -> str:
    """Why a cell shows the paper's number and not ours."""
    if "Tiny-" in method:
        return "dataset withdrawn (80 Million Tiny Images)"
    if not table_has_ours:
        return "table not reproduced by the workbook yet"
    return "not re-run by the workbook"


def labelled_cells(results: pd.DataFrame, table: str, metric: str = "auroc") -> pd.DataFrame:
    """One row per (method, setting, OOD set) of ``table``: ours, the paper's value and the cell's status."""
    ours = results[(results["table"] == table) & (results["metric"] == metric)]
    paper = paper_results()
    paper = paper[(paper["table"] == table) & (paper["metric"] == metric)]
    keys = pd.concat([ours[KEY], paper[KEY]]).drop_duplicates()
    cells = keys.merge(ours[[*KEY, "value", "ci_low", "ci_high", "note"]], on=KEY, how="left")
    cells = cells.merge(paper[[*KEY, "value", "note"]].rename(columns={"value": "paper", "note": "paper_note"}),
                        on=KEY, how="left")
    status, shown = [], []
    for row in cells.itertuples():
        if isinstance(row.note, str) and not np.isnan(row.value):
            status.append(OURS)
            shown.append(auroc_cell(row.value, row.ci_low, row.ci_high))
        elif isinstance(row.note, str) and "needs download" in row.note:
            status.append(NEEDS_DATA)
            shown.append(NEEDS_DATA)
        else:
            status.append(QUOTED)
            value = "–" if pd.isna(row.paper) else f"{row.paper:.2f}"
            shown.append(f"quoted: {value} ({quote_reason(row.method, len(ours) > 0)})")
    cells["status"], cells["cell"] = status, shown
    cells["paper"] = cells["paper"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    return cells.rename(columns={"value": "ours"})


def how_rows_were_made(cells: pd.DataFrame) -> pd.DataFrame:
    """One line per (method, setting) of our cells: the note its rows carry (budget, model, deviations).

    Notes that differ only per OOD set (e.g. a per-set timing) are joined, so nothing is dropped silently."""
    ours = cells[cells["status"] == OURS]
    return (ours.groupby(["method", "setting"], sort=False)["note"]
            .agg(lambda s: " / ".join(dict.fromkeys(s.dropna()))).rename("how it was made").reset_index())


def side_by_side(cells: pd.DataFrame) -> pd.DataFrame:
    """Display form: rows (method, setting), columns OOD set, each cell "ours | paper: x" (quoted cells as is)."""
    text = [c if s == QUOTED else f"{c} | paper: {p}" for c, s, p in zip(cells["cell"], cells["status"], cells["paper"])]
    frame = cells.assign(text=text)
    return frame.pivot_table(index=["method", "setting"], columns="ood", values="text", aggfunc="first",
                             sort=False).fillna("")


def provenance(results: pd.DataFrame) -> pd.DataFrame:
    """Which profile, seed(s), commit(s) and data hashes the numbers of each results file come from."""
    cols = [c for c in ("profile", "seed", "commit", "data_hash") if c in results]
    ours = results[results["value"].notna()]
    return ours.groupby("file")[cols].agg(lambda s: ", ".join(sorted({str(v) for v in s.dropna()}))).reset_index()


def figure_links(results_dir: str | Path) -> str:
    """Markdown links to every PNG figure of the results folder and its ID folders (relative, so they work in the
    rendered HTML)."""
    root = Path(results_dir)
    names = [p.relative_to(root).as_posix() for p in sorted(root.glob("*.png")) + sorted(root.glob("*/*.png"))]
    return "\n".join(f"- [{name}]({name})" for name in names) or "(no figures yet)"


def ablation_views(results_dir: str | Path) -> dict[str, pd.DataFrame]:
    """AUROC ×100 views of the ablation CSVs present in ``results_dir`` (titled, in reading order)."""
    d = Path(results_dir)
    views = {}

    def read(name):
        return pd.read_csv(d / name) if (d / name).exists() else None

    if (f := read("ablation_mixing.csv")) is not None:
        views["Style mixing from layer k (SR-OOD_SR)"] = f.pivot(index="mix_from_layer", columns="ood",
                                                                 values="auroc").round(2)
    if (f := read("ablation_erosion_strength.csv")) is not None:
        views["Erosion strength at test (chosen T* marked)"] = f.pivot_table(
            index=["method", "erosion", "chosen_T*"], columns="ood", values="auroc").round(2)
    if (f := read("ablation_retrained.csv")) is not None:
        f = f[f["metric"] == "auroc"]
        views[f"Retrained runs: loss, train_decoder, seeds ({f['note'].iloc[0].split('; ')[-1]})"] = f.pivot_table(
            index=["setting", "T*"], columns="ood", values="value").round(2)
    if (f := read("ablation_tstar_oracle.csv")) is not None:
        views["T*: validation choice vs oracle, per seed"] = f.pivot_table(
            index=["seed_run", "erosion", "chosen_T*"], columns="ood", values="auroc").round(2)
    if (f := read("prior_budget.csv")) is not None:
        f = f[f["metric"] == "auroc"]
        views["Prior training budget (SR-OOD_SR)"] = f.pivot_table(
            index=["prior_kimg", "id_score_mean"], columns="ood", values="value").round(2)
    return views


def verdict(cells: pd.DataFrame, health: pd.DataFrame | None = None) -> str:
    """One line per table: how many of our cells there are, how our SR-OOD rows compare with the paper's (mean
    difference and the cells within 2 points or above), and, from ``repair_health.csv``, the repair numbers that
    explain it (ID repair distance and specificity at each chosen setting)."""
    ours = cells[cells["status"] == OURS].copy()
    if ours.empty:
        return "no cells of ours yet"
    ours["ours_value"] = pd.to_numeric(ours["ours"], errors="coerce")
    ours["paper_value"] = pd.to_numeric(ours["paper"], errors="coerce")
    both = ours[ours["method"].str.startswith("SR-OOD_") & ours["paper_value"].notna() & ours["ours_value"].notna()]
    parts = [f"{len(ours)} cells of ours"]
    if len(both):
        diff = both["ours_value"] - both["paper_value"]
        parts.append(f"SR-OOD vs paper on {len(both)} shared cells: mean {diff.mean():+.1f} points, "
                     f"{int((diff >= -2).sum())} within 2 points or above, worst {both.loc[diff.idxmin(), 'method']} "
                     f"on {both.loc[diff.idxmin(), 'ood']} ({diff.min():+.1f})")
    if health is not None and len(health):
        chosen = health[health["chosen"]]
        # The health rows may come from a seeded subset of ID test (eval.n_health): say how many images.
        n_id = chosen["n_id"].dropna() if "n_id" in chosen else pd.Series(dtype=float)
        on = f" (on {int(n_id.max())} ID test images)" if len(n_id) else ""
        parts.append(f"repairs at the chosen settings{on}: " + ", ".join(
            f"{r.method} ID LPIPS {r.repair_distance_id:.3f}, specificity {r.specificity:.2f}"
            for r in chosen.itertuples()))
    return "; ".join(parts)


def srood_vs_baselines(results: pd.DataFrame, method: str = "SR-OOD_SR") -> pd.DataFrame:
    """Per OOD set of our rows (default setting only): ``method``'s AUROC, the best of our other, non-SR-OOD rows
    and which it is, the margin and a verdict (ahead / tied at 2 decimals / behind): the plain answer to "does the
    repair beat the baselines here?"."""
    rows = results[(results["metric"] == "auroc") & results["value"].notna()
                   & (results["setting"].fillna("") == "" if "setting" in results else True)]
    srood = rows[rows["method"] == method].drop_duplicates("ood").set_index("ood")["value"]
    others = rows[~rows["method"].str.startswith("SR-OOD_")]
    out = []
    for ood, value in srood.items():
        cand = others[others["ood"] == ood]
        if cand.empty:
            continue
        best = cand.loc[cand["value"].idxmax()]
        margin = round(float(value) - float(best["value"]), 2)
        out.append({"ood": ood, method: round(float(value), 2), "best baseline": best["method"],
                    "its AUROC": round(float(best["value"]), 2), "margin": margin,
                    "verdict": "ahead" if margin > 0 else ("tied" if margin == 0 else "behind")})
    return pd.DataFrame(out)


def baseline_verdict(results: pd.DataFrame, method: str = "SR-OOD_SR") -> str:
    """One line from ``srood_vs_baselines``: on how many OOD columns ``method`` is ahead of every re-run
    baseline, and where it is not (the winner and both AUROCs)."""
    comparison = srood_vs_baselines(results, method)
    if comparison.empty:
        return f"no re-run baseline shares an OOD column with {method} yet"
    behind = comparison[comparison["verdict"] == "behind"]
    n_tied = int((comparison["verdict"] == "tied").sum())
    line = (f"{method} ahead of every re-run baseline on {int((comparison['verdict'] == 'ahead').sum())} of "
            f"{len(comparison)} columns, tied (at 2 decimals) on {n_tied}")
    if len(behind):
        line += "; behind on " + ", ".join(f"{r['ood']} ({r['best baseline']} {r['its AUROC']:.2f} vs {r[method]:.2f})"
                                           for _, r in behind.iterrows())
    return line


def paper_vs_ours_figure(cells: pd.DataFrame, title: str, path=None):
    """Grouped bars per OOD set of our SR-OOD AUROC (with its CI) beside the paper's, one panel per variant, for
    the cells that have both; ``None`` when there are none."""
    import matplotlib.pyplot as plt

    from srood_lib.report import _finish

    ours = cells[cells["status"] == OURS].copy()
    ours["o"] = pd.to_numeric(ours["ours"], errors="coerce")
    ours["p"] = pd.to_numeric(ours["paper"], errors="coerce")
    ours = ours[ours["o"].notna() & ours["p"].notna() & (ours["setting"] == "")
                & ours["method"].str.startswith("SR-OOD_")].drop_duplicates(["method", "ood"])
    if ours.empty:
        return None
    methods = list(dict.fromkeys(ours["method"]))
    oods = list(dict.fromkeys(ours["ood"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(max(3.0, 0.9 * len(oods)) * len(methods) * 0.9, 3.2),
                             squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        m = ours[ours["method"] == method].set_index("ood").reindex(oods)
        x = np.arange(len(oods))
        err = np.vstack([m["o"] - m["ci_low"], m["ci_high"] - m["o"]]) if "ci_low" in m else None
        ax.bar(x - 0.2, m["o"], 0.4, yerr=err, label="ours (95 % CI)", color="tab:blue")
        ax.bar(x + 0.2, m["p"], 0.4, label="paper", color="tab:gray")
        ax.set_xticks(x, oods, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.axhline(50, color="k", lw=0.5, ls=":")
        ax.set_title(method, fontsize=9)
    axes[0, 0].set_ylabel("AUROC ×100")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return _finish(fig, title, path)
