"""Ablations: Table IV/V settings, the prior-budget priors, the retrained runs' configs, the seed summary."""
import numpy as np
import pandas as pd
import pytest
import torch

from srood_lib import ablations, pipeline
from srood_lib.config import load_config
from srood_lib.data import ImageSet
from srood_lib.detector import SROOD
from srood_lib.models.stylegan2 import Generator
from srood_lib.runtime import safe_torch_load

from test_detector import config, smooth_images
from test_train_repair import CH


def image_set(images, name):
    manifest = {"name": name, "split": "test", "resolution": 32, "sha256": name}
    return ImageSet(images, np.zeros(len(images), np.int64), manifest, name, "test")


@pytest.fixture(scope="module")
def cfg():
    c = load_config("smoke")
    c["eval"]["n_boot"] = 20
    return c


@pytest.fixture(scope="module")
def sets():
    noise = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    return image_set(smooth_images(16, 1), "cifar10"), {"noise": image_set(noise, "noise")}


@pytest.fixture(scope="module")
def inpaint_det(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    det = SROOD(config(variant="inpaint", train_erosions=["blackout_random_4-8"],
                       candidate_erosions=["blackout_8x8_off0_0"]), G)
    return det.fit(smooth_images(48, 0), tmp_path_factory.mktemp("inp"), progress=False)


def test_distance_settings_use_the_papers_spelling_and_name_other_backbones(cfg):
    assert ablations.table4_settings(cfg) == ("distance=L2", "distance=L2+LPIPS", "distance=LPIPS",
                                              "distance=LPIPS (VGG)")


def test_offset_erosion_shifts_the_tstar_mask_right():
    assert ablations.offset_erosion("blackout_12x12_off0_0", 8) == "blackout_12x12_off0_8"
    with pytest.raises(ValueError, match="black-out T\\*"):
        ablations.offset_erosion("bicubic_x4", 4)


def test_offset_table_has_one_block_per_offset_and_offset0_is_tstar(cfg, sets, inpaint_det):
    id_set, ood = sets
    table = ablations.offset_table(cfg, inpaint_det, id_set, ood)
    auroc = table[table["metric"] == "auroc"].set_index("setting")["value"]
    assert list(auroc.index) == ["offset=0", "offset=4", "offset=8"]
    assert ablations.table5_settings(cfg) == tuple(auroc.index)  # missing rows use the table's own spelling
    s_id, s_ood = inpaint_det.score(id_set.images), inpaint_det.score(ood["noise"].images)
    from srood_lib.metrics import auroc as auroc_fn
    assert auroc["offset=0"] == pytest.approx(round(100 * auroc_fn(s_id, s_ood), 2))
    assert set(table["table"]) == {"V"}


def test_distance_table_l2_column_is_the_plain_l2_score(cfg, sets, inpaint_det):
    id_set, ood = sets
    table = ablations.distance_table(cfg, inpaint_det, id_set, ood)
    auroc = table[table["metric"] == "auroc"].set_index("setting")["value"]
    assert len(auroc) == 4
    from srood_lib.metrics import auroc as auroc_fn
    s_id = inpaint_det.score(id_set.images, metric="l2")
    s_ood = inpaint_det.score(ood["noise"].images, metric="l2")
    assert auroc["distance=L2"] == pytest.approx(round(100 * auroc_fn(s_id, s_ood), 2))


def test_table4_repairs_each_image_once_for_all_its_distances(cfg, sets, inpaint_det, monkeypatch):
    from srood_lib.models.psp import RepairNetwork

    id_set, ood = sets
    inpaint_det.net = inpaint_det.net  # an empty score memo
    decodes = []
    real = RepairNetwork.decode
    monkeypatch.setattr(RepairNetwork, "decode", lambda self, w, *a, **k: decodes.append(len(w)) or real(self, w, *a, **k))
    ablations.distance_table(cfg, inpaint_det, id_set, ood)
    assert sum(decodes) == len(id_set.images) + len(ood["noise"].images)  # one repair per image, not four


def test_erosion_strength_reads_factor_and_mask_side(cfg, sets, inpaint_det):
    id_set, ood = sets
    frame = ablations.erosion_strength(cfg, {"inpaint": inpaint_det}, id_set, ood)
    assert list(frame["strength"]) == [8] and list(frame["strength_unit"]) == ["mask side (px)"]


def test_retrain_configs_apply_overrides_and_the_reduced_budget(cfg):
    runs = ablations.retrain_configs(cfg)
    kimg = cfg["ablations"]["retrain"]["kimg"]
    assert all(r["repair"]["train"]["kimg"] == kimg for r in runs.values())
    assert runs["l2_only"]["repair"]["train"]["lambda_lpips"] == 0.0
    assert runs["train_decoder"]["repair"]["train"]["train_decoder"] is True
    assert runs["seed_1"]["seed"] == 1 and runs["paper_setting"]["seed"] == cfg["seed"]
    assert cfg["repair"]["train"]["lambda_lpips"] == 0.8  # the profile itself is untouched
    # every run trains into its own folder
    prior_key = pipeline.prior_id(cfg)
    paths = {pipeline.detector_path(r, "sr", prior_key) for r in runs.values()}
    assert len(paths) == len(runs)


def test_seed_summary_is_mean_and_std_over_the_named_runs():
    table = pd.DataFrame({"metric": ["auroc"] * 4, "ood": ["a"] * 4, "setting": ["s0", "s1", "s2", "other"],
                          "value": [80.0, 82.0, 84.0, 10.0]})
    row = ablations.seed_summary(table, ["s0", "s1", "s2"]).iloc[0]
    assert row["mean"] == 82.0 and row["std"] == 2.0 and row["mean ± std"] == "82.00 ± 2.00"


def test_budget_priors_take_snapshots_of_a_shorter_rerun(cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path))
    c = {**cfg, "prior": {**cfg["prior"], "checkpoint": None}, "prior_budget": {"fractions": [0.5, 1.0],
                                                                                 "variant": "sr"}}
    train = image_set(smooth_images(64, 0), "cifar10")
    priors = pipeline.budget_priors(c, train, progress=False)
    assert sorted(priors) == [0.5, 1.0]
    assert priors[1.0].path == pipeline.prior_run_dir(c) / "prior.pt"
    half = safe_torch_load(priors[0.5].path)  # a snapshot is a workbook artefact: it loads safely
    assert half["nimg"] >= 0.5 * c["prior"]["kimg"] * 1000 > half["nimg"] - c["prior"]["batch_size"]
    assert priors[0.5].prior_id != priors[1.0].prior_id
    with pytest.raises(ValueError, match="fractions"):
        pipeline.budget_priors({**c, "prior_budget": {"fractions": [0, 1.0], "variant": "sr"}}, train)
