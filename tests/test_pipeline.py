"""pipeline: what notebook 03 scores, prefetched in one pass per image set."""
from types import SimpleNamespace

import numpy as np

from srood_lib.detector import mixing_sweep
from srood_lib.health import health_table
from srood_lib.levers import lever_scores
from srood_lib.models.psp import RepairNetwork
from srood_lib.pipeline import (analyses_score_plan, oracle_erosions, prefetch_analyses_scores, prefetch_table_scores,
                                table_score_plan)

from test_detector import fitted, smooth_images  # noqa: F401  (fitted: a module-scoped fixture)

CFG = {"detector": {"mix_sweep": [None, 2, 4]}, "eval": {"jpeg_control": True}}


def test_the_plans_ask_for_each_analysis_of_03(fitted):  # noqa: F811
    t_star, k_star, net = fitted.erosion_name, fitted.mix_from_layer, fitted.lpips_net
    table = table_score_plan(CFG, fitted)
    assert ("lpips", net) in table[(t_star, k_star)]                          # the rows
    for k in CFG["detector"]["mix_sweep"]:
        assert ("lpips", "alex") in table[(t_star, k)]                        # repair health
    analyses = analyses_score_plan(CFG, fitted, analysed=True)
    for t in fitted.config["candidate_erosions"]:
        assert ("lpips", net) in analyses[(t, k_star)]                        # oracle, median-over-erosions lever
    for k in CFG["detector"]["mix_sweep"]:
        assert ("lpips", net) in analyses[(t_star, k)]                        # mixing sweep
    assert ("l2", None) in analyses[(t_star, k_star)]                         # the z(L2) + z(LPIPS) lever
    assert ("l2", None) not in analyses_score_plan(CFG, fitted, analysed=False)[(t_star, k_star)]


def test_after_the_prefetches_03s_cells_repair_nothing_and_their_numbers_are_unchanged(fitted, monkeypatch):  # noqa: F811
    from srood_lib.compression import jpeg_roundtrip

    wrap = lambda imgs: SimpleNamespace(images=imgs)  # noqa: E731  (the ImageSet field these functions read)
    id_set, ood = wrap(smooth_images(20, 10)), {"far": wrap(np.random.default_rng(3).integers(0, 256, (12, 32, 32, 3),
                                                                                            dtype=np.uint8))}
    dets = {"sr": fitted}

    def analyses():
        rows = [fitted.score(s.images) for s in (id_set, *ood.values())]
        rows += [fitted.score(jpeg_roundtrip(s.images)) for s in ood.values()]
        health = health_table(dets, id_set.images, {k: v.images for k, v in ood.items()}, CFG["detector"]["mix_sweep"],
                              0.0, "test", {})
        oracle = oracle_erosions(CFG, dets, id_set, ood)
        sweep = mixing_sweep(fitted, id_set.images, {k: v.images for k, v in ood.items()}, CFG["detector"]["mix_sweep"])
        lev = lever_scores(fitted, {"id": id_set.images, "far": ood["far"].images}, id_set.images[:8])
        return rows, health, oracle, sweep, lev

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
    # only the repairs that are not scores are left: health's specificity sample (one per k) and the levers'
    # validation images, which are not a test set
    assert sum(encodes) == len(CFG["detector"]["mix_sweep"]) * min(64, len(id_set.images)) + 2 * 8
    for a, b in zip(got[0], expected[0]):
        assert np.array_equal(a, b)
    assert got[1].equals(expected[1]) and got[2].equals(expected[2]) and got[3].equals(expected[3])
    for lever in expected[4]:
        for name in expected[4][lever]:
            assert np.array_equal(got[4][lever][name], expected[4][lever][name])
