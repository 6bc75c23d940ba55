import numpy as np
import pytest

from srood_lib.paper import paper_results, paper_table, paper_value

DATASET_KEYS = {"svhn", "lsun", "isun", "texture", "cifar10", "cifar100", "vflip", "celeba", "pokemon"}


def test_columns_and_labelling():
    df = paper_results()
    assert list(df.columns) == ["table", "id", "ood", "method", "metric", "setting", "value", "note", "source"]
    assert (df["source"] == "paper").all()
    assert (df["metric"] == "auroc").all()
    assert set(df["id"]) | set(df["ood"]) <= DATASET_KEYS
    assert df["note"].str.len().gt(0).all()  # every number says where it comes from


@pytest.mark.parametrize("table, n_methods, n_columns, id_set", [
    ("I", 9, 4, "cifar10"), ("II", 8, 4, "celeba"), ("III", 5, 3, "pokemon"),
])
def test_main_tables_have_every_printed_cell(table, n_methods, n_columns, id_set):
    rows = paper_results().query("table == @table")
    assert len(rows) == n_methods * n_columns
    assert rows["method"].nunique() == n_methods and rows["ood"].nunique() == n_columns
    assert set(rows["id"]) == {id_set}
    assert (rows["setting"] == "").all()


@pytest.mark.parametrize("table, method, settings", [
    ("IV", "SR-OOD_SR", {"distance=L2", "distance=L2+LPIPS", "distance=LPIPS"}),
    ("V", "SR-OOD_Inpaint", {"offset=8", "offset=4", "offset=0"}),
])
def test_ablation_tables(table, method, settings):
    rows = paper_results().query("table == @table")
    assert len(rows) == 4 * 3
    assert set(rows["setting"]) == settings
    assert set(rows["method"]) == {method}
    assert set(rows["ood"]) == {"svhn", "lsun", "isun", "texture"}


def test_no_duplicate_cells_and_dashes_only_in_table_one_glow_rows():
    df = paper_results()
    assert not df.duplicated(["table", "id", "ood", "method", "metric", "setting"]).any()
    missing = df[df["value"].isna()]
    assert len(missing) == 8  # four Glow rows x (iSUN, Texture)
    assert set(missing["table"]) == {"I"} and set(missing["ood"]) == {"isun", "texture"}
    assert missing["method"].str.startswith("Glow").all()
    assert df["value"].dropna().between(0, 100).all()


def test_spot_values():
    assert paper_value("I", "svhn", "SR-OOD_SR") == 94.59
    assert paper_value("II", "vflip", "DoSE_SVM") == 99.80
    assert paper_value("V", "svhn", "SR-OOD_Inpaint", setting="offset=0") == 86.37
    assert paper_value("IV", "isun", "SR-OOD_SR", setting="distance=L2+LPIPS") == 87.35
    assert paper_value("III", "svhn", "SR-OOD_Rec") == 100.0
    assert paper_value("I", "svhn", "Glow (diff to None)") == 8.80
    assert paper_value(2, "svhn", "Likelihood Ratio") == 2.80  # table given as a number (the paper: LLR)


def test_provenance_notes():
    df = paper_results().set_index(["table", "ood", "method"])
    assert "quoted by the paper from [3]" in df.loc[("I", "svhn", "Glow (diff to PNG)"), "note"]
    assert "re-run" in df.loc[("I", "isun", "Likelihood Regret"), "note"]
    assert "re-run" in df.loc[("I", "texture", "Likelihood"), "note"]
    assert "quoted by the paper from [28]" in df.loc[("I", "svhn", "Likelihood"), "note"]


def test_tables_agree_where_the_paper_repeats_itself():
    # Table IV's LPIPS column is Table I's SR-OOD_SR row; Table V's offset=0 column is Table I's SR-OOD_Inpaint.
    for ood in ("svhn", "lsun", "isun", "texture"):
        assert paper_value("IV", ood, "SR-OOD_SR", setting="distance=LPIPS") == paper_value("I", ood, "SR-OOD_SR")
        assert (paper_value("V", ood, "SR-OOD_Inpaint", setting="offset=0")
                == paper_value("I", ood, "SR-OOD_Inpaint"))


def test_missing_cells_and_unreported_metrics_are_none():
    assert paper_value("I", "isun", "Glow (diff to None)") is None
    assert paper_value("I", "svhn", "SR-OOD_SR", metric="fpr_at_95tpr") is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(table="VI", ood="svhn", method="SR-OOD_SR"), "tables I, II"),
    (dict(table="I", ood="cifar100", method="SR-OOD_SR"), "OOD set 'cifar100'"),
    (dict(table="I", ood="svhn", method="SR-OOD-SR"), "method 'SR-OOD-SR'"),
    (dict(table="I", ood="svhn", method="SR-OOD_SR", metric="aucroc"), "unknown metric"),
    (dict(table="IV", ood="svhn", method="SR-OOD_SR"), "pass setting="),
    (dict(table="V", ood="svhn", method="SR-OOD_Inpaint", setting="offset=2"), "offset=8"),
    (dict(table="I", ood="svhn", method="SR-OOD_SR", setting="offset=0"), "no settings"),
])
def test_typos_raise_with_options(kwargs, match):
    with pytest.raises(KeyError, match=match):
        paper_value(**kwargs)


def test_paper_table_layout():
    t1 = paper_table("I")
    assert t1.shape == (9, 4)
    assert list(t1.columns) == ["svhn", "lsun", "isun", "texture"]
    assert t1.index[0] == "Glow (diff to None)" and t1.index[-1] == "SR-OOD_SR"
    assert np.isnan(t1.loc["Glow (diff to PNG)", "texture"])
    assert t1.attrs["source"] == "paper"
    t5 = paper_table("Table V")
    assert t5.shape == (4, 3) and list(t5.columns) == ["offset=8", "offset=4", "offset=0"]
    assert t5.loc["lsun", "offset=4"] == 74.41
    assert paper_table(3).shape == (5, 3) and paper_table("ii").shape == (8, 4) and paper_table("IV").shape == (4, 3)


def test_frames_are_copies():
    df = paper_results()
    df.loc[:, "value"] = 0.0
    assert paper_value("I", "svhn", "SR-OOD_SR") == 94.59
