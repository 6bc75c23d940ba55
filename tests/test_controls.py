"""The mean-pixel control: a one-number detector fitted on ID training images."""
import numpy as np

from srood_lib import controls
from srood_lib.config import load_config
from srood_lib.data import ImageSet


def _set(images, name):
    manifest = {"name": name, "split": "test", "resolution": 8, "sha256": str(images.sum())}
    return ImageSet(images, np.zeros(len(images), dtype=np.int64), manifest, name, "test")


def test_scores_are_the_distance_to_the_id_median_brightness():
    train = np.full((5, 4, 4, 3), 200, dtype=np.uint8)
    imgs = np.stack([np.full((4, 4, 3), v, dtype=np.uint8) for v in (200, 150, 250)])
    np.testing.assert_allclose(controls.mean_pixel_scores(train, imgs), [0.0, 50.0, 50.0])


def test_control_rows_separate_dark_ood_from_white_backgrounds():
    rng = np.random.default_rng(0)
    white = lambda n: rng.integers(200, 256, (n, 8, 8, 3), dtype=np.uint8)  # noqa: E731
    dark = rng.integers(0, 100, (20, 8, 8, 3), dtype=np.uint8)
    cfg = load_config("smoke", {"eval.n_boot": 10}, experiment="pokemon")
    rows = controls.control_rows(cfg, _set(white(30), "train"), _set(white(20), "pokemon"), {"svhn": _set(dark, "svhn")})
    auroc = rows[rows["metric"] == "auroc"].iloc[0]
    assert auroc["method"] == controls.MEAN_PIXEL and auroc["table"] == "III" and auroc["value"] == 100.0
