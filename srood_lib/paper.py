"""The numbers the SR-OOD paper reports (Tables I-V), labelled as the paper's, never as ours.

They live in one data file shipped with the package, ``srood_lib/paper_results.csv``, one row per printed
cell, transcribed from the paper text and checked cell by cell against it. Columns:

- ``table``: "I" ... "V";  ``id``: the in-distribution set;  ``ood``: the OOD set (lower-case dataset keys:
  cifar10, celeba, pokemon, svhn, lsun, isun, texture, cifar100, vflip);
- ``method``: e.g. "SR-OOD_SR", "Likelihood Regret", "DoSE_SVM";  ``metric``: always "auroc" (the only metric
  the paper reports), ``value`` is AUROC x 100 as printed; NaN where the paper prints "-";
- ``setting``: the ablation setting for Tables IV ("distance=L2", "distance=L2+LPIPS", "distance=LPIPS") and
  V ("offset=8", "offset=4", "offset=0"); empty for Tables I-III;
- ``note``: where the number comes from (quoted by the paper from a reference, re-run by the authors, ...);
- ``source``: "paper" on every row, added when loading, so merged frames stay labelled.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from srood_lib.metrics import METRIC_NAMES

CSV_NAME = "paper_results.csv"
TABLES = ("I", "II", "III", "IV", "V")
COLUMNS = ("table", "id", "ood", "method", "metric", "setting", "value", "note", "source")


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    with resources.files("srood_lib").joinpath(CSV_NAME).open("r", encoding="utf-8") as f:
        # Read everything as text first so an empty setting stays "" rather than NaN.
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    frame["value"] = pd.to_numeric(frame["value"].replace("", np.nan))
    frame["source"] = "paper"
    return frame[list(COLUMNS)]


def paper_results() -> pd.DataFrame:
    """Every number of Tables I-V as a long frame (one row per cell; see the module docstring for columns)."""
    return _load().copy()


def _table_key(table: str | int) -> str:
    """Accept "IV", "iv", "Table IV" or 4."""
    if isinstance(table, (int, np.integer)) and not isinstance(table, bool) and 1 <= table <= len(TABLES):
        return TABLES[int(table) - 1]
    if isinstance(table, str):
        key = table.strip().upper().removeprefix("TABLE").strip()
        if key in TABLES:
            return key
    raise KeyError(f"unknown paper table {table!r}; the paper has tables {', '.join(TABLES)} (or 1-5)")


def _check_option(value, options, what: str, table: str) -> None:
    if value not in options:
        raise KeyError(f"{what} {value!r} is not in the paper's Table {table}; options: {', '.join(options)}")


def _ordered_unique(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def paper_value(table: str | int, ood: str, method: str, metric: str = "auroc",
                setting: str | None = None) -> float | None:
    """The paper's number for one cell (AUROC x 100 as printed), or None where the paper has none.

    None means the paper prints "-" there, or reports no such metric (it only reports AUROC). A table, OOD
    set, method or setting that the table does not have raises KeyError listing the options, so typos fail
    loudly. Tables IV and V need ``setting`` (e.g. "distance=LPIPS", "offset=8"); Tables I-III take none.
    """
    key = _table_key(table)
    rows = _load()[_load()["table"] == key]
    _check_option(ood, _ordered_unique(rows["ood"]), "OOD set", key)
    _check_option(method, _ordered_unique(rows["method"]), "method", key)
    if metric not in METRIC_NAMES:
        raise KeyError(f"unknown metric {metric!r}; known metrics: {', '.join(METRIC_NAMES)}")
    settings = [s for s in _ordered_unique(rows["setting"]) if s]
    if settings:
        if setting is None:
            raise KeyError(f"Table {key} has one number per setting; pass setting= one of {', '.join(settings)}")
        _check_option(setting, settings, "setting", key)
    elif setting is not None:
        raise KeyError(f"Table {key} has no settings; leave setting=None (settings exist only in Tables IV, V)")
    cell = rows[(rows["ood"] == ood) & (rows["method"] == method) & (rows["metric"] == metric)
                & (rows["setting"] == (setting or ""))]
    if cell.empty or pd.isna(cell["value"].iloc[0]):
        return None
    return float(cell["value"].iloc[0])


def paper_table(table: str | int) -> pd.DataFrame:
    """One table laid out as printed: methods (Tables I-III) or OOD sets (IV, V) down, columns across.

    Values are AUROC x 100; NaN where the paper prints "-". The frame's ``attrs["source"]`` is "paper".
    """
    key = _table_key(table)
    rows = _load()[_load()["table"] == key]
    if key in ("IV", "V"):  # printed with OOD sets as rows and settings as columns
        index, columns = "ood", "setting"
    else:
        index, columns = "method", "ood"
    wide = rows.pivot(index=index, columns=columns, values="value")
    wide = wide.loc[_ordered_unique(rows[index]), _ordered_unique(rows[columns])]
    wide.columns.name = None
    wide.attrs["source"] = "paper"
    wide.attrs["table"] = key
    return wide
