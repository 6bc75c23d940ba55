"""pipeline: what notebook 03 scores, prefetched in one pass per image set."""
import numpy as np
import pandas as pd
import torch

from srood_lib.data import ImageSet, data_hash, subsample
from srood_lib.detector import mixing_sweep
from srood_lib.health import health_table
from srood_lib.levers import LEVERS, lever_scores
from srood_lib.metrics import auroc as auroc_of
from srood_lib.models.psp import RepairNetwork
from srood_lib.perceptual import distance, split_net
from srood_lib.pipeline import (JPEG_NOTE, JPEG_SUBSET_NOTE, analyses_score_plan, health_score_plan, health_sets,
                                jpeg_control_sets, jpeg_control_table, lever_rows, merge_score_jobs,
                                oracle_erosions, own_setting_plan, prefetch_analyses_scores, prefetch_table_scores, score_variants)

from test_detector import fitted, smooth_images  # noqa: F401  (fitted: a module-scoped fixture)

CFG = {"seed": 0, "profile": "test", "data": {"id": "smooth"}, "experiment": {"table": "T"},
       "detector": {"mix_sweep": [None, 2, 4]},
       "eval": {"jpeg_control": True, "n_health": 8, "n_jpeg_control": 6, "n_boot": 10}}


def image_set(images: np.ndarray, name: str) -> ImageSet:
    manifest = {"name": name, "split": "test", "resolution": 32, "sha256": name}
    return ImageSet(images, np.full(len(images), -1), manifest, name, "test")


def test_the_plans_ask_for_each_analysis_of_03(fitted):  # noqa: F811
    t_star, k_star, net = fitted.erosion_name, fitted.mix_from_layer, fitted.lpips_net
    assert own_setting_plan(fitted) == {(t_star, k_star): [("lpips", net)]}  # the rows
    health = health_score_plan(CFG, fitted)
    for k in CFG["detector"]["mix_sweep"]:
        assert health[(t_star, k)] == [("lpips", "alex")]                      # repair health
    analyses = analyses_score_plan(CFG, fitted, analysed=True)
    for t in fitted.config["candidate_erosions"]:
        assert ("lpips", net) in analyses[(t, k_star)]                        # oracle, median-over-erosions lever
    for k in CFG["detector"]["mix_sweep"]:
        assert ("lpips", net) in analyses[(t_star, k)]                        # mixing sweep
    assert ("l2", None) in analyses[(t_star, k_star)]                         # the z(L2) + z(LPIPS) lever
    assert ("l2", None) not in analyses_score_plan(CFG, fitted, analysed=False)[(t_star, k_star)]


def test_after_the_prefetches_03s_cells_repair_nothing_and_their_numbers_are_unchanged(fitted, monkeypatch):  # noqa: F811
    id_set = image_set(smooth_images(20, 10), "smooth")
    ood = {"far": image_set(np.random.default_rng(3).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), "far")}
    dets = {"sr": fitted}

    def analyses():
        rows, _ = score_variants(CFG, dets, id_set, ood, jpeg_control=True)
        h_id, h_ood = health_sets(CFG, id_set, ood)
        health = health_table(dets, h_id.images, {k: v.images for k, v in h_ood.items()}, CFG["detector"]["mix_sweep"],
                              0.0, "test", {})
        oracle = oracle_erosions(CFG, dets, id_set, ood)
        sweep = mixing_sweep(fitted, id_set.images, {k: v.images for k, v in ood.items()}, CFG["detector"]["mix_sweep"])
        lev = lever_scores(fitted, {"id": id_set.images, "far": ood["far"].images}, id_set.images[:8])
        return rows.drop(columns="commit"), health, oracle, sweep, lev

    fitted.net = fitted.net
    expected = analyses()
    fitted.net = fitted.net
    prefetch_table_scores(CFG, dets, id_set, ood)
    prefetch_analyses_scores(CFG, dets, id_set, ood, analysed="sr")
    encodes = []
    real_encode = RepairNetwork.encode
    monkeypatch.setattr(RepairNetwork, "encode", lambda self, *a, **k: encodes.append(len(a[0])) or
                        real_encode(self, *a, **k))
    got = analyses()
    # only the repairs that are not scores are left: health's specificity sample (one per k; the whole 8-image
    # health subset) and the levers' validation images, which are not a test set
    assert sum(encodes) == len(CFG["detector"]["mix_sweep"]) * CFG["eval"]["n_health"] + 2 * 8
    pd.testing.assert_frame_equal(got[0], expected[0])
    assert got[1].equals(expected[1]) and got[2].equals(expected[2]) and got[3].equals(expected[3])
    for lever in expected[4]:
        for name in expected[4][lever]:
            assert np.array_equal(got[4][lever][name], expected[4][lever][name])


def test_health_and_the_jpeg_control_use_seeded_subsets_and_say_so(fitted):  # noqa: F811
    id_set = image_set(smooth_images(20, 10), "smooth")
    ood = {"far": image_set(smooth_images(12, 3), "far")}  # smooth: JPEG keeps them close
    h_id, h_ood = health_sets(CFG, id_set, ood)
    assert (len(h_id), len(h_ood["far"])) == (8, 8)
    assert health_sets(CFG, id_set, ood)[0].images.tobytes() == h_id.images.tobytes()   # the same images each time
    whole = health_sets({**CFG, "eval": {**CFG["eval"], "n_health": None}}, id_set, ood)
    assert whole[0] is id_set and whole[1]["far"] is ood["far"]
    health = health_table({"sr": fitted}, h_id.images, {k: v.images for k, v in h_ood.items()}, [None], 0.0, "t", {})
    assert (health["n_id"] == 8).all() and (health["n_far"] == 8).all()

    jpeg = jpeg_control_sets(CFG, ood)["far"]
    plain = subsample(ood["far"], CFG["eval"]["n_jpeg_control"], CFG["seed"])
    assert len(jpeg) == len(plain) == 6
    diff = np.abs(jpeg.images.astype(int) - plain.images.astype(int))
    assert diff.max() > 0 and diff.mean() < 5                                   # the same images, JPEG-encoded
    assert data_hash(jpeg) != data_hash(plain)                                  # the rows' data hash says "JPEG"
    rows, _ = score_variants(CFG, {"sr": fitted}, id_set, ood, jpeg_control=True)
    auroc = rows[rows["metric"] == "auroc"]
    encoded, subset = (auroc[auroc["note"].str.endswith(n)] for n in (JPEG_NOTE, JPEG_SUBSET_NOTE))
    full = auroc[~auroc["note"].str.contains("JPEG")]
    assert (encoded["n_ood"] == 6).all() and (subset["n_ood"] == 6).all() and (full["n_ood"] == 12).all()
    assert (auroc["n_id"] == 20).all()
    assert len({*encoded["data_hash"], *subset["data_hash"], *full["data_hash"]}) == 3
    s_id, s_sub = fitted.score(id_set.images), fitted.score(plain.images)
    assert subset["value"].iloc[0] == round(100 * auroc_of(s_id, s_sub), 2)   # the subset's own scores, sliced
    table = jpeg_control_table(rows)
    assert list(table.columns) == ["all, as distributed", "subset, as distributed", "subset, JPEG q75 4:2:0",
                                   "n (all)", "n (subset)"]
    assert table.loc[("SR-OOD_SR", "far"), "n (subset)"] == 6


def test_a_subset_of_a_subset_has_its_own_data_hash():
    full = image_set(smooth_images(30, 1), "smooth")
    a, b = subsample(full, 20, 0), subsample(full, 25, 0)
    assert data_hash(subsample(a, 6, 0)) != data_hash(subsample(b, 6, 0))
    assert subsample(a, 6, 0).manifest["subsample"] == {"n": 6, "seed": 0, "of": {"n": 20, "seed": 0}}
    assert "of" not in a.manifest["subsample"]                                   # one level: as before


def test_merged_score_jobs_pass_over_one_image_array_once(fitted):  # noqa: F811
    a, b = smooth_images(4, 1), smooth_images(4, 2)
    own, health = own_setting_plan(fitted), health_score_plan(CFG, fitted)
    merged = merge_score_jobs([(a, [(fitted, own)]), (b, [(fitted, own)]), (a, [(fitted, health)])])
    assert [m[0] is x for m, x in zip(merged, (a, b))] == [True, True] and len(merged) == 2
    (det, plan), = merged[0][1]
    assert det is fitted
    t_star, k_star = fitted.erosion_name, fitted.mix_from_layer
    assert plan[(t_star, k_star)] == list(dict.fromkeys([*own[(t_star, k_star)], *health[(t_star, k_star)]]))
    assert set(plan) == set(own) | set(health)
    assert merged[1][1][0][1] == own


def test_lever_rows_label_each_lever_and_say_what_validation_chose(fitted):  # noqa: F811
    cfg = {**CFG, "data": {"id": "smooth", "ood": ["far"], "n_val": 8}, "scoring_levers": {"lpips_scales": [1, 2]},
           "detector": {**CFG["detector"], "validation_ood": []}}
    train, id_set = image_set(smooth_images(24, 11), "smooth"), image_set(smooth_images(10, 12), "smooth_test")
    ood = {"far": image_set(np.random.default_rng(4).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), "far")}
    rows, scores = lever_rows(cfg, fitted, train, id_set, ood)
    assert set(rows["method"]) == {f"SR-OOD_SR + {label} (beyond the paper)" for label in LEVERS.values()}
    rescaled = rows[rows["method"].str.contains("upsampled") & (rows["metric"] == "auroc")]
    note = rescaled["note"].iloc[0]
    assert note.startswith(fitted.settings() + "; lever: lpips=")
    chosen = note.split("lever: lpips=")[1].split(",")[0]
    assert chosen in {"alex", "vgg", "alex@x2", "vgg@x2"}
    # the lever's scores are LPIPS of the upsampled input and repair, computed here without the memo
    base, scale = split_net(chosen)
    _, repaired, x = fitted.repair(ood["far"].images)
    up = [torch.nn.functional.interpolate(t.float(), scale_factor=scale, mode="bilinear", align_corners=False)
          if scale > 1 else t.float() for t in (x, repaired)]
    np.testing.assert_allclose(scores["rescaled_lpips"]["far"], distance(*up, "lpips", base).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert rescaled["value"].iloc[0] == round(100 * auroc_of(scores["rescaled_lpips"]["id"],
                                                             scores["rescaled_lpips"]["far"]), 2)
