import time

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from srood_lib import metrics as m


def sklearn_reference(s_id, s_ood):
    labels = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]  # OOD positive
    scores = np.r_[s_id, s_ood]
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auroc": roc_auc_score(labels, scores),
        "aupr_out": average_precision_score(labels, scores),
        "aupr_in": average_precision_score(1 - labels, -scores),
        # FPR at the first ROC point whose TPR reaches 95 %
        "fpr_at_95tpr": fpr[np.searchsorted(tpr, 0.95, side="left")],
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_agrees_with_sklearn_on_random_data(seed, ties):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(1, 60, size=2)
    if ties:  # heavy ties: a handful of distinct values shared by both sides
        s_id = rng.integers(0, 4, n_id).astype(float)
        s_ood = rng.integers(1, 5, n_ood).astype(float)
    else:
        s_id = rng.normal(0, 1, n_id)
        s_ood = rng.normal(0.7, 1, n_ood)
    ours = m.ood_metrics(s_id, s_ood, n_boot=0)
    for key, expected in sklearn_reference(s_id, s_ood).items():
        assert ours[key] == pytest.approx(expected, abs=1e-12), key


def test_perfect_reversed_and_tied_cases():
    id_, ood = [0.0, 0.1, 0.2], [0.5, 0.6, 0.9]
    assert m.auroc(id_, ood) == 1.0
    assert m.aupr_out(id_, ood) == 1.0 and m.aupr_in(id_, ood) == 1.0
    assert m.fpr_at_tpr(id_, ood) == 0.0
    assert m.auroc(ood, id_) == 0.0  # roles swapped: every OOD score below every ID score
    assert m.fpr_at_tpr(ood, id_) == 1.0
    assert m.auroc([1.0] * 4, [1.0] * 7) == 0.5
    # All tied: one threshold flags everything, precision = the positive share.
    assert m.aupr_out([1.0] * 4, [1.0] * 7) == pytest.approx(7 / 11)
    assert m.fpr_at_tpr([1.0] * 4, [1.0] * 7) == 1.0  # ties count against the detector


def test_three_versus_three_by_hand():
    s_id = [0.1, 0.4, 0.35]
    s_ood = [0.8, 0.4, 0.2]
    # Pairs won by OOD: 0.8 beats all 3; 0.4 beats 0.1 and 0.35 and ties 0.4 (1/2); 0.2 beats 0.1 -> 6.5 / 9
    assert m.auroc(s_id, s_ood) == pytest.approx(6.5 / 9)
    # 95 % of 3 OOD needs all 3 -> threshold 0.2; ID 0.4 and 0.35 are >= 0.2
    assert m.fpr_at_tpr(s_id, s_ood) == pytest.approx(2 / 3)
    # 60 % needs 2 -> threshold 0.4; the ID score tied at 0.4 counts as a false positive
    assert m.fpr_at_tpr(s_id, s_ood, tpr=0.6) == pytest.approx(1 / 3)
    # Ranked 0.8(O) 0.4(O,I) 0.35(I) 0.2(O) 0.1(I): AP = 1/3*1 + 1/3*2/3 + 1/3*3/5
    assert m.aupr_out(s_id, s_ood) == pytest.approx(1 / 3 + 2 / 9 + 1 / 5)


def test_accepts_torch_and_lists():
    s_id, s_ood = torch.tensor([0.1, 0.2, 0.3]), [0.25, 0.9]
    assert m.auroc(s_id, s_ood) == pytest.approx(5 / 6)


def test_weighted_auroc_equals_sklearn_on_explicit_resamples():
    rng = np.random.default_rng(1)
    s_id = rng.integers(0, 6, 40).astype(float)  # ties within and across sides
    s_ood = rng.integers(2, 8, 30).astype(float)
    idx_id = rng.integers(0, 40, size=(5, 40))
    idx_ood = rng.integers(0, 30, size=(5, 30))
    w_id = np.stack([np.bincount(r, minlength=40) for r in idx_id])
    w_ood = np.stack([np.bincount(r, minlength=30) for r in idx_ood])
    ours = m._WeightedAuroc(s_id, s_ood)(w_id, w_ood)
    for b in range(5):
        a, o = s_id[idx_id[b]], s_ood[idx_ood[b]]
        expected = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[a, o])
        assert ours[b] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_contains_estimate_shrinks_and_is_repeatable():
    rng = np.random.default_rng(2)
    small_id, small_ood = rng.normal(0, 1, 100), rng.normal(1, 1, 100)
    big_id, big_ood = rng.normal(0, 1, 3000), rng.normal(1, 1, 3000)
    lo_s, hi_s = m.bootstrap_auroc_ci(small_id, small_ood, n_boot=400, seed=0)
    lo_b, hi_b = m.bootstrap_auroc_ci(big_id, big_ood, n_boot=400, seed=0)
    assert lo_s < m.auroc(small_id, small_ood) < hi_s
    assert lo_b < m.auroc(big_id, big_ood) < hi_b
    assert (hi_b - lo_b) < 0.5 * (hi_s - lo_s)  # ~1/sqrt(30) of the width in theory
    assert m.bootstrap_auroc_ci(small_id, small_ood, n_boot=400, seed=0) == (lo_s, hi_s)
    assert m.bootstrap_auroc_ci(small_id, small_ood, n_boot=400, seed=1) != (lo_s, hi_s)
    # A 50 % interval sits inside the 95 % one
    lo50, hi50 = m.bootstrap_auroc_ci(small_id, small_ood, n_boot=400, alpha=0.5, seed=0)
    assert lo_s < lo50 < hi50 < hi_s


def test_bootstrap_is_fast_enough_for_10k_by_10k():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(0, 1, 10_000).round(2), rng.normal(0.5, 1, 10_000).round(2)
    start = time.perf_counter()
    samples = m.bootstrap_auroc_samples(s_id, s_ood, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 15  # about 1 s on one laptop core
    assert samples.shape == (1000,)
    assert abs(samples.mean() - m.auroc(s_id, s_ood)) < 0.002


def test_ood_metrics_keys_and_ranges():
    rng = np.random.default_rng(4)
    result = m.ood_metrics(rng.normal(0, 1, 50), rng.normal(1, 1, 60), n_boot=100, seed=0)
    assert set(m.METRIC_NAMES) <= set(result)
    assert {"auroc_ci_lo", "auroc_ci_hi", "n_id", "n_ood"} <= set(result)
    assert (result["n_id"], result["n_ood"]) == (50, 60)
    for key in (*m.METRIC_NAMES, "auroc_ci_lo", "auroc_ci_hi"):
        assert 0.0 <= result[key] <= 1.0, key
    assert np.isnan(m.ood_metrics([0.0], [1.0], n_boot=0)["auroc_ci_lo"])


def test_threshold_accepts_the_requested_share_of_id():
    scores = np.arange(1, 21, dtype=float)  # 1..20
    eps = m.threshold_at_id_acceptance(scores, rate=0.95)
    assert eps == 19.0  # 19 of 20 scores are <= 19
    flagged = m.predict_ood(scores, eps)
    assert flagged.dtype == bool and flagged.sum() == 1 and flagged[-1]
    assert m.threshold_at_id_acceptance(scores, rate=1.0) == 20.0
    rng = np.random.default_rng(5)
    val = rng.normal(size=997)
    eps = m.threshold_at_id_acceptance(val)
    assert np.mean(val <= eps) >= 0.95 and np.mean(val < eps) < 0.95
    # Algorithm 2 uses a strict >: a score equal to the threshold is in-distribution
    assert m.predict_ood([eps, eps + 1e-9], eps).tolist() == [False, True]


@pytest.mark.parametrize("s_id, s_ood, match", [
    ([], [1.0], "scores_id is empty"),
    ([1.0], [], "scores_ood is empty"),
    ([[1.0, 2.0]], [1.0], "1-D"),
    ([1.0, np.nan], [1.0], "non-finite"),
    ([1.0], [np.inf], "scores_ood holds 1 non-finite"),
])
def test_bad_inputs_raise(s_id, s_ood, match):
    for fn in (m.auroc, m.aupr_in, m.aupr_out, m.fpr_at_tpr, m.ood_metrics):
        with pytest.raises(ValueError, match=match):
            fn(s_id, s_ood)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="not 95"):
        m.fpr_at_tpr([0.0], [1.0], tpr=95)
    with pytest.raises(ValueError, match="n_boot"):
        m.bootstrap_auroc_ci([0.0], [1.0], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        m.bootstrap_auroc_ci([0.0], [1.0], alpha=5)
    with pytest.raises(ValueError, match="rate"):
        m.threshold_at_id_acceptance([0.0, 1.0], rate=0)
    with pytest.raises(ValueError, match="scores_id_val is empty"):
        m.threshold_at_id_acceptance([])
    with pytest.raises(ValueError, match="threshold must be finite"):
        m.predict_ood([0.0], float("nan"))
