import subprocess

import numpy as np
import pandas as pd
import pytest

from srood_lib import report


def test_image_grid_places_each_image_and_pads():
    imgs = np.stack([np.full((4, 5, 3), v, np.uint8) for v in (10, 20, 30)])
    grid = report.image_grid(imgs, nrow=2, pad=1, pad_value=255)
    assert grid.shape == (2 * (4 + 1) + 1, 2 * (5 + 1) + 1, 3)
    assert grid[1, 1, 0] == 10 and grid[1, 7, 0] == 20 and grid[6, 1, 0] == 30
    assert grid[0, 0, 0] == 255 and grid[6, 7, 0] == 255  # padding and the empty last cell


def test_image_grid_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        report.image_grid(np.zeros((1, 4, 4, 3), np.float32), nrow=1)


def test_results_frame_has_standard_columns_first():
    frame = report.results_frame([{"table": "I", "value": 90.0, "extra": 1}])
    assert list(frame.columns[: len(report.RESULT_COLUMNS)]) == report.RESULT_COLUMNS
    assert frame.loc[0, "extra"] == 1 and pd.isna(frame.loc[0, "seed"])


def test_write_csv_atomic_leaves_no_temporary_file(tmp_path):
    path = report.write_csv_atomic(pd.DataFrame({"a": [1, 2]}), tmp_path / "sub" / "t.csv")
    assert pd.read_csv(path)["a"].tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_git_commit_names_a_revision_or_unknown():
    commit = report.git_commit()
    assert commit == "unknown" or len(commit.split("+")[0]) >= 7


def test_git_commit_is_dirty_for_changed_code_but_not_for_rewritten_results(tmp_path):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "t.csv").write_text("x\n1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = report.git_commit(root=tmp_path)
    assert "+" not in clean and len(clean) >= 7
    (tmp_path / "results" / "t.csv").write_text("x\n2\n")
    assert report.git_commit(root=tmp_path) == clean
    (tmp_path / "code.py").write_text("a = 2\n")
    assert report.git_commit(root=tmp_path) == clean + "+dirty"


def test_repair_figure_saves_png(tmp_path):
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    report.repair_figure([("original", imgs), ("repaired", imgs + 50)], columns=[("a", 2), ("b", 1)],
                         title="t", path=tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="same number"):
        report.repair_figure([("a", imgs), ("b", imgs[:2])])


def test_score_histograms_draw_one_panel_per_variant_and_ood_set(tmp_path):
    rng = np.random.default_rng(0)
    scores = {v: {"id": rng.random(20), "texture": rng.random(20) + 1, "celeba": rng.random(20)} for v in ("a", "b")}
    fig = report.score_histograms(scores, threshold={"a": 0.9, "b": None}, path=tmp_path / "h.png")
    assert len(fig.axes) == 4 and (tmp_path / "h.png").stat().st_size > 0
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)   # eps drawn where it is known
    assert not fig.axes[2].lines


def test_auroc_heatmap_has_one_cell_per_method_and_ood_set(tmp_path):
    frame = pd.DataFrame({"method": ["SR-OOD_SR", "SR-OOD_SR", "WAIC"], "ood": ["a", "b", "a"],
                          "value": [99.0, 80.0, 20.0]})
    fig = report.auroc_heatmap(frame, title="t", path=tmp_path / "h.png")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 2) and np.ma.is_masked(image[1, 1]) and image[1, 0] == 20.0  # WAIC has no b
    assert [t.get_text() for t in fig.axes[0].texts] == ["99.0", "80.0", "20.0"]
    assert (tmp_path / "h.png").stat().st_size > 0


def test_tick_labels_drop_a_key_every_category_shares():
    assert report.tick_labels(["distance=L2", "distance=LPIPS (VGG)"]) == ["L2", "LPIPS (VGG)"]
    assert report.tick_labels(["distance=L2", "offset=4"]) == ["distance=L2", "offset=4"]   # two keys: kept
    assert report.tick_labels(["none", "k=2"]) == ["none", "k=2"]                            # not all keyed


def test_auroc_curve_labels_categorical_ticks_without_the_shared_key(tmp_path):
    frame = pd.DataFrame({"ood": ["a", "a"], "setting": ["distance=L2", "distance=LPIPS"], "value": [60.0, 70.0]})
    fig = report.auroc_curve(frame, "setting", "test distance", path=tmp_path / "c.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["L2", "LPIPS"]
    assert (tmp_path / "c.png").stat().st_size > 0
