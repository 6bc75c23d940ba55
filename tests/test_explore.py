"""The explorer (notebook 10): erosion names from the panel, a repaired view with its verdict, per-setting
reference scores, the figure, uploads, and the widget panel driven headless."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from srood_lib import explore
from srood_lib.data import ImageSet

from test_detector import config, smooth_images


def _set(images, name):
    return ImageSet(images, np.full(len(images), -1), {"name": name, "split": "test", "resolution": 32,
                                                       "sha256": name}, name, "test")


class _Exp:
    """What the explorer needs of an Experiment: config, test and OOD sets, detectors."""

    def __init__(self, det):
        self.cfg = {"seed": 0, "repair": {"variants": {"sr": {}}}}
        self.name = "toy"
        self.test = _set(smooth_images(12, 4), "toy")
        self.ood = {"noise": _set(np.random.default_rng(2).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
                                  "noise")}
        self._det = det

    def detector(self, variant):
        return self._det


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    from srood_lib.detector import SROOD
    from srood_lib.models.stylegan2 import Generator
    from test_train_repair import CH

    torch.manual_seed(0)
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    det = SROOD(config(candidate_erosions=["bicubic_x4"], mix_from_layer=[None], lpips_net=["alex"]), G)
    det.fit(smooth_images(48, 0), tmp_path_factory.mktemp("det"), progress=False)
    return explorer_of(det)


def explorer_of(det):
    return explore.Explorer(_Exp(det), n_reference=8)


def test_panel_settings_become_erosion_names_the_parser_accepts():
    assert explore.erosion_name("identity") == "identity"
    assert explore.erosion_name("bicubic", factor=8) == "bicubic_x8"
    assert explore.erosion_name("blackout", size=12, dy=-2, dx=4) == "blackout_12x12_off-2_4"
    with pytest.raises(ValueError, match="unknown erosion kind"):
        explore.erosion_name("blur")


def test_the_view_at_the_detectors_setting_is_its_score_and_verdict(explorer):
    det, img = explorer.exp.detector("sr"), explorer.test_image(3)
    view = explorer.view("sr", img)
    assert view.calibrated and (view.erosion, view.mix_from_layer) == (det.erosion_name, det.mix_from_layer)
    assert np.isclose(view.score, det.score(img[None])[0]) and view.eps == det.threshold
    assert view.original.shape == view.eroded.shape == view.repaired.shape == (32, 32, 3)
    assert ("OOD" in view.verdict()) == view.flagged and "calibrated" not in view.verdict()


def test_another_setting_is_scored_as_asked_and_says_eps_does_not_hold(explorer):
    det, img = explorer.exp.detector("sr"), explorer.test_image(0)
    view = explorer.view("sr", img, erosion="blackout_8x8_off4_0", mix_from_layer=2)
    assert not view.calibrated and "calibrated at the detector's own setting" in view.verdict()
    assert np.isclose(view.score, det.score(img[None], erosion="blackout_8x8_off4_0", mix_from_layer=2)[0])
    assert (view.eroded[16:24, 12:20] == 0).all()                 # the mask, 4 px below the centre, is black


def test_reference_scores_are_per_setting_and_cached(explorer):
    refs = explorer.reference_scores("sr", "bicubic_x4", None)
    assert set(refs) == {"ID test", "noise"} and all(len(v) == 8 for v in refs.values())
    assert explorer.reference_scores("sr", "bicubic_x4", None) is refs
    assert explorer.reference_scores("sr", "bicubic_x2", None) is not refs


def test_the_figure_shows_three_images_and_the_histograms(explorer):
    import matplotlib.pyplot as plt

    fig = explorer.figure("sr", explorer.view("sr", explorer.test_image(1)))
    assert len(fig.axes) == 4 and fig.axes[3].get_legend() is not None
    plt.close(fig)


def test_an_upload_is_prepared_like_every_dataset():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 4), np.uint8)).save(buf, format="PNG")   # transparent, not square
    img = explore.image_from_bytes(buf.getvalue(), 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and (img == 255).all()   # composited on white


def test_the_panel_builds_and_redraws_headless(explorer, capsys):
    panel = explore.widgets({"toy": explorer})
    assert "Figure" in capsys.readouterr().out                    # the first view is drawn
    kind = panel.children[1]
    kind.value = "blackout"                                      # observers redraw with the new erosion
    assert "Figure" in capsys.readouterr().out
    panel.children[2].children[1].value = 32                      # a 32-px mask offset 0: the whole image
    panel.children[2].children[2].value = 8                       # moved out of the image: said, not raised
    assert "not possible" in capsys.readouterr().out
