"""Kill-and-resume on the smoke profile's own recipes: a killed run ends with the same weights and scores."""
import numpy as np
import pytest
import torch

from srood_lib.config import load_config
from srood_lib.detector import SROOD, detector_config
from srood_lib.train_prior import load_checkpoint, load_prior, train_prior
from srood_lib.train_repair import train_repair


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def smoke():
    return load_config("smoke")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)


def _kill_after(n_steps):
    def callback(steps_done):
        if steps_done >= n_steps:
            raise Killed

    return callback


def test_prior_resumes_to_the_same_weights(smoke, images, tmp_path):
    recipe = {k: v for k, v in smoke["prior"].items() if k != "checkpoint"}
    full = load_checkpoint(train_prior(images, recipe, tmp_path / "full", seed=1, device="cpu", progress=False))
    with pytest.raises(Killed):
        train_prior(images, recipe, tmp_path / "killed", seed=1, device="cpu", progress=False,
                    callback=_kill_after(13))  # after the checkpoint at step 10, before the end (20)
    resumed = load_checkpoint(train_prior(images, recipe, tmp_path / "killed", seed=1, device="cpu",
                                          progress=False))
    assert full["step"] == resumed["step"] == 20
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(full[key][k], resumed[key][k]) for k in full[key]), key


def test_repair_resumes_to_the_same_weights_and_scores(smoke, images, tmp_path):
    recipe = {k: v for k, v in smoke["prior"].items() if k != "checkpoint"}
    G = load_prior(train_prior(images, recipe, tmp_path / "prior", seed=0, device="cpu", progress=False))
    dcfg = detector_config(smoke, "sr")
    args = dict(train_cfg=dcfg["train"], encoder_cfg=dcfg["encoder"], train_erosions=dcfg["train_erosions"], seed=0,
                device="cpu", progress=False)
    full = train_repair(images, G, out_dir=tmp_path / "full", **args)
    train_repair(images, G, out_dir=tmp_path / "killed", stop_after_steps=6, **args)  # checkpoint at 5 of 10
    resumed = train_repair(images, G, out_dir=tmp_path / "killed", **args)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())

    def scores(net):
        det = SROOD(dcfg, G)
        det.net, det.erosion_name = net, "bicubic_x4"
        return det.score(images[:16])

    assert np.array_equal(scores(full), scores(resumed))
