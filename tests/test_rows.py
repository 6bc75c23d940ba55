"""The standard results row: every metric of every OOD set, with the provenance that says how it was made."""
import numpy as np

from srood_lib import rows
from srood_lib.data import ImageSet, data_hash
from srood_lib.metrics import auroc

CFG = {"experiment": {"table": "II"}, "data": {"id": "celeba"}, "eval": {"n_boot": 20}, "profile": "smoke",
       "seed": 7}


def _set(name, n, seed):
    images = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    manifest = {"name": name, "split": "test", "resolution": 4, "sha256": f"{seed:064x}"}
    return ImageSet(images, -np.ones(n, dtype=np.int64), manifest, name, "test")


def test_rows_hold_every_metric_per_ood_set_with_provenance():
    rng = np.random.default_rng(0)
    s_id, s_far, s_near = rng.normal(0, 1, 50), rng.normal(3, 1, 40), rng.normal(0.2, 1, 30)
    id_set, ood = _set("celeba", 50, 1), {"far": _set("far", 40, 2), "near": _set("near", 30, 3)}
    table = rows.evaluate(CFG, rows.table_of(CFG), "SR-OOD_SR", s_id, {"far": s_far, "near": s_near}, id_set, ood,
                          note="a note", setting="offset=4")
    assert len(table) == 8 and set(table["metric"]) == {"auroc", "aupr_in", "aupr_out", "fpr_at_95tpr"}
    far = table[(table["ood"] == "far") & (table["metric"] == "auroc")].iloc[0]
    assert far["value"] == round(100 * auroc(s_id, s_far), 2) and far["ci_low"] <= far["value"] <= far["ci_high"]
    assert (far["table"], far["id"], far["method"], far["n_id"], far["n_ood"]) == ("II", "celeba", "SR-OOD_SR", 50, 40)
    assert (far["profile"], far["seed"], far["setting"], far["note"]) == ("smoke", 7, "offset=4", "a note")
    assert far["data_hash"] == data_hash(id_set, ood["far"]) != data_hash(id_set, ood["near"])
    assert table["commit"].notna().all()
    assert table[table["metric"] != "auroc"]["ci_low"].isna().all()  # a CI only for AUROC


def test_missing_sets_get_an_empty_auroc_row_per_method_and_setting():
    table = rows.missing_rows(CFG, "II", ["SR-OOD_SR", "Glow"], {"svhn": "url", "lsun": "url"},
                              settings=("k=4", "k=6"))
    assert len(table) == 2 * 2 * 2 and table["value"].isna().all()
    assert set(table["note"]) == {"needs download"} and set(table["metric"]) == {"auroc"}
    assert set(zip(table["ood"], table["method"], table["setting"])) == {
        (o, m, s) for o in ("svhn", "lsun") for m in ("SR-OOD_SR", "Glow") for s in ("k=4", "k=6")}
