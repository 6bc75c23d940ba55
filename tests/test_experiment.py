"""Experiment: one ID set of a profile as the notebooks see it (config, folders, sets, detectors, rows)."""
import numpy as np
import pytest

from srood_lib.data import ImageSet
from srood_lib.experiment import Experiment


def _set(n, name, value):
    images = np.full((n, 8, 8, 3), value, dtype=np.uint8)
    manifest = {"name": name, "split": "test", "resolution": 8, "sha256": f"{name}{value}"}
    return ImageSet(images, np.zeros(n, dtype=np.int64), manifest, name, "test")


class _Detector:
    """What the table rows need of a detector: scores, its settings, the health verdict, eps."""

    passes_health, threshold = True, 0.5

    def score(self, images):
        return images.reshape(len(images), -1).mean(axis=1) / 255.0

    def settings(self):
        return "T*=identity"


@pytest.fixture
def celeba(tmp_path, monkeypatch):
    monkeypatch.setenv("SROOD_RESULTS_DIR", str(tmp_path / "results"))
    exp = Experiment.load("smoke", "celeba", {"eval.n_boot": 10, "eval.jpeg_control": False})
    exp.__dict__["_id_sets"] = (_set(6, "celeba", 10), _set(6, "celeba", 10))
    exp.__dict__["_ood_sets"] = ({"cifar10": _set(6, "cifar10", 200)}, {"svhn": "needs download: no svhn"})
    exp._detectors = {v: _Detector() for v in exp.cfg["repair"]["variants"]}
    return exp


def test_an_experiment_knows_its_table_folder_and_figures(celeba, tmp_path):
    assert (celeba.name, celeba.table) == ("celeba", "II")
    assert celeba.title == "Table II: CelebA as ID"
    assert celeba.out == tmp_path / "results" / "smoke" / "celeba" and celeba.out.is_dir()
    assert celeba.figure_path("sr").name == "fig4_sr.png"
    assert "cifar10" in celeba.describe_ood() and "svhn" in celeba.describe_ood()


def test_rows_carry_the_experiments_table_and_mark_absent_sets(celeba):
    rows, scores = celeba.srood_rows()
    assert set(rows["table"]) == {"II"} and set(rows["id"]) == {"celeba"}
    auroc = rows[rows["metric"] == "auroc"].set_index(["method", "ood"])["value"]
    assert auroc[("SR-OOD_SR", "cifar10")] == 100.0
    assert np.isnan(auroc[("SR-OOD_SR", "svhn")])
    assert set(scores) == set(celeba.cfg["repair"]["variants"]) and set(scores["sr"]) == {"id", "cifar10"}


def test_write_csv_lands_in_the_experiment_folder(celeba):
    rows, _ = celeba.srood_rows()
    path = celeba.write_csv(rows, "table.csv")
    assert path.parent == celeba.out and path.exists()


def test_a_notebook_the_id_set_does_not_list_is_refused(celeba):
    celeba.expect_notebook("03_table")
    with pytest.raises(ValueError, match="05_table4_distance is not a notebook of celeba"):
        celeba.expect_notebook("05_table4_distance")


def test_trained_levers_stand_beside_the_faithful_row_on_the_same_images(celeba):
    class _Lever(_Detector):
        passes_health = False

        def score(self, images):
            return -super().score(images)   # ranks OOD below ID here: AUROC 0

    celeba._lever_detectors = {name: _Lever() for name in celeba.cfg["trained_levers"]["runs"]}
    methods = celeba.lever_methods()
    faithful, *lever = methods
    assert faithful == "SR-OOD_SR" and len(lever) == len(celeba.cfg["trained_levers"]["runs"])
    assert all(m.endswith("(beyond the paper)") for m in lever)
    rows, scores = celeba.trained_lever_rows(methods)
    auroc = rows[rows["metric"] == "auroc"].set_index(["method", "ood"])["value"]
    assert auroc[(faithful, "cifar10")] == 100.0 and auroc[(lever[0], "cifar10")] == 0.0
    assert set(rows["table"]) == {"II"} and set(scores) == set(methods)
    notes = rows.set_index("method")["note"]
    assert "FAILS the repair-health gate" in notes[lever[0]].iloc[0] and "FAILS" not in notes[faithful].iloc[0]
