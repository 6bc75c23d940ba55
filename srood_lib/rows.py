"""The standard results row: one row per (table, ID set, OOD set, method, setting, metric), with provenance.

Every table of the workbook (SR-OOD, baselines, ablations) is made of these rows, so the report can read them
all the same way; both the method code (``pipeline``, ``ablations``) and the baselines write them through here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from srood_lib.data import ImageSet, data_hash
from srood_lib.metrics import ood_metrics
from srood_lib.report import git_commit


def table_of(cfg: dict) -> str:
    """The paper's table of the config's ID experiment ("I" for CIFAR-10, "II" CelebA, "III" Pokemon)."""
    return cfg["experiment"]["table"]


def evaluate(cfg: dict, table: str, method: str, scores_id: np.ndarray, scores_ood: dict[str, np.ndarray],
             id_set: ImageSet, ood: dict[str, ImageSet], note: str = "", setting: str = "") -> pd.DataFrame:
    """Rows of all metrics (×100) per OOD set, with provenance, in the standard results format.

    ``setting`` names an ablation's setting in the paper's spelling (e.g. ``distance=L2``, ``offset=4``)."""
    rows = []
    commit = git_commit()
    for name, s_ood in scores_ood.items():
        m = ood_metrics(scores_id, s_ood, n_boot=cfg["eval"]["n_boot"], seed=cfg["seed"])
        base = {"table": table, "id": cfg["data"]["id"], "ood": name, "method": method, "n_id": m["n_id"],
                "n_ood": m["n_ood"], "profile": cfg["profile"], "seed": cfg["seed"], "commit": commit,
                "data_hash": data_hash(id_set, ood[name]), "setting": setting, "note": note}
        for metric in ("auroc", "aupr_in", "aupr_out", "fpr_at_95tpr"):
            row = {**base, "metric": metric, "value": round(100 * m[metric], 2)}
            if metric == "auroc":
                row.update(ci_low=round(100 * m["auroc_ci_lo"], 2), ci_high=round(100 * m["auroc_ci_hi"], 2))
            rows.append(row)
    return pd.DataFrame(rows)


def missing_rows(cfg: dict, table: str, methods: list[str], missing: dict[str, str],
                 settings: tuple[str, ...] = ("",)) -> pd.DataFrame:
    """AUROC rows with no value for OOD sets that are not present, marked "needs download"."""
    rows = [{"table": table, "id": cfg["data"]["id"], "ood": name, "method": method, "metric": "auroc",
             "value": np.nan, "profile": cfg["profile"], "seed": cfg["seed"], "commit": git_commit(),
             "setting": setting, "note": "needs download"}
            for name in missing for method in methods for setting in settings]
    return pd.DataFrame(rows)


