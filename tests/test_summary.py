"""The report's cell labels: ours, needs online data, quoted from the paper (with the reason)."""
import numpy as np
import pandas as pd

from srood_lib import summary


def write_results(folder):
    rows = pd.DataFrame([
        {"table": "I", "id": "cifar10", "ood": "texture", "method": "SR-OOD_SR", "metric": "auroc", "value": 81.5,
         "ci_low": 80.0, "ci_high": 83.0, "profile": "quick", "seed": 0, "commit": "abc", "data_hash": "h1",
         "setting": "", "note": "T*=bicubic_x2"},
        {"table": "I", "id": "cifar10", "ood": "texture", "method": "SR-OOD_SR", "metric": "auroc", "value": 70.0,
         "ci_low": 69.0, "ci_high": 71.0, "profile": "quick", "seed": 0, "commit": "abc", "data_hash": "h2",
         "setting": "", "note": "T*=bicubic_x2; OOD JPEG q75 4:2:0"},
        {"table": "I", "id": "cifar10", "ood": "svhn", "method": "SR-OOD_SR", "metric": "auroc", "value": np.nan,
         "profile": "quick", "seed": 0, "commit": "abc", "setting": "", "note": "needs download"},
    ])
    (folder / "cifar10").mkdir()
    rows.to_csv(folder / "cifar10" / "table.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(folder / "not_results.csv", index=False)  # no table column: ignored
    (folder / "fig3_sr.png").write_bytes(b"png")


def test_cells_are_labelled_ours_needs_data_or_quoted(tmp_path):
    write_results(tmp_path)
    results = summary.load_results(tmp_path)
    assert len(results) == 2  # the JPEG control row is not a table cell
    cells = summary.labelled_cells(results, "I").set_index(["method", "ood"])
    assert cells.loc[("SR-OOD_SR", "texture"), "status"] == summary.OURS
    assert cells.loc[("SR-OOD_SR", "texture"), "cell"] == "81.50 [80.00, 83.00]"
    assert cells.loc[("SR-OOD_SR", "texture"), "paper"] == "92.69"
    assert cells.loc[("SR-OOD_SR", "svhn"), "status"] == summary.NEEDS_DATA
    tiny = cells.loc[("Glow (diff to Tiny-Glow)", "svhn")]
    assert tiny["status"] == summary.QUOTED and "dataset withdrawn" in tiny["cell"]
    lr = cells.loc[("Likelihood Regret", "texture")]
    assert lr["status"] == summary.QUOTED and "not re-run" in lr["cell"]


def test_how_rows_were_made_lists_each_of_our_rows_once_with_its_note(tmp_path):
    write_results(tmp_path)
    cells = summary.labelled_cells(summary.load_results(tmp_path), "I")
    made = summary.how_rows_were_made(cells)
    assert made.to_dict("records") == [{"method": "SR-OOD_SR", "setting": "", "how it was made": "T*=bicubic_x2"}]


def test_tables_the_workbook_has_not_run_are_quoted_with_that_reason(tmp_path):
    write_results(tmp_path)
    cells = summary.labelled_cells(summary.load_results(tmp_path), "II")
    assert len(cells) > 0 and set(cells["status"]) == {summary.QUOTED}
    assert cells["cell"].str.contains("not reproduced by the workbook yet").all()


def test_side_by_side_provenance_and_links(tmp_path):
    write_results(tmp_path)
    results = summary.load_results(tmp_path)
    table = summary.side_by_side(summary.labelled_cells(results, "I"))
    assert table.loc[("SR-OOD_SR", ""), "texture"] == "81.50 [80.00, 83.00] | paper: 92.69"
    assert table.loc[("SR-OOD_SR", ""), "svhn"] == "needs online data | paper: 94.59"
    prov = summary.provenance(results).set_index("file")
    assert prov.loc["cifar10/table.csv", "commit"] == "abc" and prov.loc["cifar10/table.csv", "data_hash"] == "h1"
    assert summary.figure_links(tmp_path) == "- [fig3_sr.png](fig3_sr.png)"


def test_verdict_compares_our_srood_cells_with_the_papers_and_names_the_worst(tmp_path):
    write_results(tmp_path)
    cells = summary.labelled_cells(summary.load_results(tmp_path), "I")
    health = pd.DataFrame([{"method": "SR-OOD_SR", "chosen": True, "repair_distance_id": 0.05, "specificity": 0.7},
                           {"method": "SR-OOD_SR", "chosen": False, "repair_distance_id": 0.2, "specificity": 0.1}])
    line = summary.verdict(cells, health)
    assert "1 cells of ours" in line and "mean -11.2 points" in line and "0 within 2 points" in line
    assert "worst SR-OOD_SR on texture (-11.2)" in line and "specificity 0.70" in line and "0.10" not in line
    assert summary.verdict(summary.labelled_cells(summary.load_results(tmp_path), "II")) == "no cells of ours yet"
    health["n_id"] = 250
    assert "repairs at the chosen settings (on 250 ID test images): SR-OOD_SR" in summary.verdict(cells, health)


def test_paper_vs_ours_figure_is_written_only_when_there_is_something_to_draw(tmp_path):
    write_results(tmp_path)
    results = summary.load_results(tmp_path)
    assert summary.paper_vs_ours_figure(summary.labelled_cells(results, "I"), "I", tmp_path / "f.png") is not None
    assert (tmp_path / "f.png").exists()
    assert summary.paper_vs_ours_figure(summary.labelled_cells(results, "II"), "II", tmp_path / "g.png") is None


def test_srood_vs_baselines_names_the_winner_per_column():
    import pandas as pd

    rows = pd.DataFrame([
        {"table": "II", "method": "SR-OOD_SR", "setting": "", "ood": "a", "metric": "auroc", "value": 99.0},
        {"table": "II", "method": "SR-OOD_SR", "setting": "", "ood": "b", "metric": "auroc", "value": 80.0},
        {"table": "II", "method": "SR-OOD_Rec", "setting": "", "ood": "b", "metric": "auroc", "value": 99.9},
        {"table": "II", "method": "WAIC", "setting": "", "ood": "a", "metric": "auroc", "value": 60.0},
        {"table": "II", "method": "DoSE_SVM", "setting": "", "ood": "b", "metric": "auroc", "value": 95.0},
        {"table": "II", "method": "DoSE_SVM", "setting": "", "ood": "b", "metric": "fpr95", "value": 1.0},
        {"table": "II", "method": "KNN (VGG16 features)", "setting": "", "ood": "c", "metric": "auroc", "value": 90.0},
    ])
    comparison = summary.srood_vs_baselines(rows).set_index("ood")
    assert list(comparison.index) == ["a", "b"]  # c has no SR-OOD_SR row; other SR-OOD variants are not baselines
    assert comparison.loc["b", "best baseline"] == "DoSE_SVM" and comparison.loc["b", "margin"] == -15.0
    assert comparison.loc["a", "verdict"] == "ahead" and comparison.loc["b", "verdict"] == "behind"
    line = summary.baseline_verdict(rows)
    assert line.startswith("SR-OOD_SR ahead of every re-run baseline on 1 of 2 columns, tied (at 2 decimals) on 0")
    assert "b (DoSE_SVM 95.00 vs 80.00)" in line
    tie = pd.concat([rows, pd.DataFrame([{"table": "II", "method": "KNN (VGG16 features)", "setting": "", "ood": "a",
                                           "metric": "auroc", "value": 99.0}])])
    assert summary.srood_vs_baselines(tie).set_index("ood").loc["a", "verdict"] == "tied"
    assert "yet" in summary.baseline_verdict(rows[rows["method"].str.startswith("SR-OOD")])
