"""Print the README's AUROC tables (markdown) from a results folder, so the README quotes what the committed
results say and nothing typed by hand.

Per ID set: the SR-OOD rows and the mean-pixel control (``table.csv``, ``table_controls.csv``), then every
re-run baseline with SR-OOD_SR last (``baselines.csv``). AUROC x 100; the paper's value in parentheses where it
prints one (``srood_lib/paper_results.csv``); SR-OOD_SR with its 95 % bootstrap CI in the first table.

    .venv/bin/python scripts/readme_tables.py results/quick
    .venv/bin/python scripts/readme_tables.py results/quick --levers   # 03_analyses' scoring levers instead

With ``--levers``: per ID set the faithful SR-OOD_SR row and each scoring lever beyond the paper
(``table_levers.csv``), all with their CIs, then each lever's note (its setting and what validation chose).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.paper import paper_results  # noqa: E402
from srood_lib.summary import load_results  # noqa: E402

TABLE_OF = {"cifar10": ("I", "CIFAR-10"), "celeba": ("II", "CelebA"), "pokemon": ("III", "Pokemon")}


def cell(row, paper: dict, ci: bool) -> str:
    text = f"{row['value']:.2f}"
    if ci and pd.notna(row.get("ci_low")):
        text += f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    key = (row["method"], row["ood"])
    if key in paper:
        text += f" ({paper[key]:.2f})"
    return text


def markdown(rows: pd.DataFrame, columns: list[str], paper: dict, title: str, ci_for: set[str],
             bold: str | None = None) -> str:
    out = [f"| {title} | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    n_usual = rows["n_ood"].mode().iloc[0] if len(rows) else None
    for method, per in rows.groupby("method", sort=False):
        by_ood = {r["ood"]: r for r in per.to_dict("records")}
        cells = [cell(by_ood[c], paper, method in ci_for) if c in by_ood else "" for c in columns]
        name = method
        if per["note"].str.contains("beyond the paper").any() and "beyond the paper" not in method:
            name += " (beyond the paper)"
        if (per["n_ood"] < n_usual).all():  # a row scored on fewer images (Likelihood Regret's subsets) says so
            name += f" ({int(per['n_ood'].max())} images per set)"
        if method == bold:
            name = f"**{method}**"
            cells = [f"**{c.split(' (')[0]}**" + (f" ({c.split(' (', 1)[1]}" if " (" in c else "") if c else ""
                     for c in cells]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def print_levers(rows: pd.DataFrame) -> None:
    for id_set, (table, title) in TABLE_OF.items():
        sr = rows[(rows["file"] == f"{id_set}/table.csv") & (rows["method"] == "SR-OOD_SR")]
        levers = rows[rows["file"] == f"{id_set}/table_levers.csv"]
        if sr.empty or levers.empty:
            continue
        both = pd.concat([sr, levers])
        columns = list(dict.fromkeys(sr["ood"]))
        print(f"<!-- {id_set}: n_id {int(both['n_id'].max())}, commits {sorted(set(both['commit'].astype(str)))} -->")
        print(markdown(both, columns, {}, f"{title} as ID (Table {table})", set(both["method"])))
        for method, note in both.drop_duplicates("method")[["method", "note"]].itertuples(index=False):
            print(f"<!-- {method}: {note} -->")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--levers", action="store_true", help="the scoring levers of 03_analyses instead")
    args = parser.parse_args()
    rows = load_results(args.results)
    rows = rows[(rows["metric"] == "auroc") & rows["value"].notna() & (rows["setting"] == "")]
    if args.levers:
        print_levers(rows)
        return
    paper_rows = paper_results()
    for id_set, (table, title) in TABLE_OF.items():
        mine = rows[rows["file"].isin([f"{id_set}/{f}" for f in ("table.csv", "table_controls.csv", "baselines.csv")])]
        if mine.empty:
            continue
        paper = {(r.method, r.ood): r.value for r in paper_rows[(paper_rows["table"] == table)
                                                               & paper_rows["value"].notna()].itertuples()}
        main_rows = mine[mine["file"].isin([f"{id_set}/table.csv", f"{id_set}/table_controls.csv"])]
        columns = list(dict.fromkeys(mine["ood"]))
        sizes = mine.groupby("ood", sort=False)["n_ood"].max().astype(int).to_dict()
        print(f"<!-- {id_set}: n_id {int(mine['n_id'].max())}, n_ood {sizes}, commits {sorted(set(mine['commit'].astype(str)))} -->")
        print(markdown(main_rows, columns, paper, f"Table {table}, {title} as ID", {"SR-OOD_SR"}))
        base = mine[mine["file"] == f"{id_set}/baselines.csv"]
        if len(base):
            sr = mine[(mine["file"] == f"{id_set}/table.csv") & (mine["method"] == "SR-OOD_SR")]
            print()
            print(markdown(pd.concat([base, sr]), columns, paper, f"Table {table}, {title} as ID", set(),
                           bold="SR-OOD_SR"))
        print()


if __name__ == "__main__":
    main()
