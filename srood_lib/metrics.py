"""OOD detection metrics.

Convention (used by every function here and everywhere in srood): a score is *higher for more
out-of-distribution* inputs, and OOD is the *positive* class. Every function takes ``(scores_id, scores_ood)``,
two 1-D arrays (numpy, torch or lists) of finite scores on the in-distribution and OOD test sets, and returns
fractions in [0, 1]; reports multiply by 100, as the paper does.

- ``auroc``: P(S_ood > S_id) + 0.5 P(S_ood = S_id), the area under the ROC curve (OOD positive).
- ``aupr_out``: average precision with OOD positive, ranking by the score.
- ``aupr_in``: average precision with ID positive, ranking by the negated score.
- ``fpr_at_tpr``: the fraction of ID inputs flagged OOD at the threshold that catches ``tpr`` of the OOD inputs.

Average precision is sklearn's step-wise definition, sum over thresholds of (R_k - R_{k-1}) * P_k, with tied
scores forming one threshold. A test-time decision (Algorithm 2) uses ``threshold_at_id_acceptance`` and
``predict_ood``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Keys of ``ood_metrics`` that hold a metric value, in reporting order.
METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr_at_95tpr")


def as_scores(scores: Any, what: str = "scores") -> np.ndarray:
    """Validate one side's scores and return them as a float64 numpy vector.

    Accepts numpy arrays, torch tensors (any device) and sequences. Raises ValueError for empty, non-1-D or
    non-finite input, naming ``what`` (e.g. "scores_id").
    """
    if hasattr(scores, "detach"):  # torch tensor, without importing torch here
        scores = scores.detach().cpu().numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of per-sample scores, got shape {array.shape}; "
                         "flatten per-sample scores with .reshape(-1) if that is what they are")
    if array.size == 0:
        raise ValueError(f"{what} is empty; each side needs at least one score")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{what} holds {int(bad.sum())} non-finite value(s) (NaN or inf), first at index "
                         f"{int(np.flatnonzero(bad)[0])}; fix or drop those samples before computing metrics")
    return array


def _two_sides(scores_id, scores_ood) -> tuple[np.ndarray, np.ndarray]:
    return as_scores(scores_id, "scores_id"), as_scores(scores_ood, "scores_ood")


def _check_fraction(value: float, what: str) -> float:
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{what} must be a fraction in (0, 1], got {value!r} (write 0.95, not 95)")
    return float(value)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks (scipy's ``rankdata``, whose import
    alone cost every notebook a second)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(starts_group)                  # 0-based start of each tie group, in sorted order
    last = np.r_[first[1:], values.size]                  # one past its end
    ranks = np.empty(values.size)
    ranks[order] = ((first + 1 + last) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def auroc(scores_id, scores_ood) -> float:
    """Area under the ROC curve, OOD positive: P(S_ood > S_id) + 0.5 P(S_ood = S_id).

    Computed from ranks (the Mann-Whitney U statistic with average ranks for ties), so it equals sklearn's
    ``roc_auc_score`` with OOD labelled 1.
    """
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    ranks = _average_ranks(np.concatenate([s_id, s_ood]))  # a tie counts one half
    n_id, n_ood = s_id.size, s_ood.size
    u_ood = ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u_ood / (n_id * n_ood))


def _average_precision(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Average precision of ranking by score, descending, with ``positives`` the positive class."""
    scores = np.concatenate([positives, negatives])
    is_positive = np.concatenate([np.ones(positives.size), np.zeros(negatives.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    # One threshold per distinct score: the last index of each run of equal scores.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_pos = np.cumsum(is_positive)[last_of_run]
    flagged = last_of_run + 1.0
    precision = true_pos / flagged
    recall = true_pos / positives.size
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def aupr_out(scores_id, scores_ood) -> float:
    """Area under the precision-recall curve with OOD as the positive class (average precision)."""
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    return _average_precision(s_ood, s_id)


def aupr_in(scores_id, scores_ood) -> float:
    """Area under the precision-recall curve with ID as the positive class, ranking by the negated score."""
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    return _average_precision(-s_id, -s_ood)


def _kth_smallest_fraction(sorted_scores: np.ndarray, rate: float) -> float:
    """Smallest value v in ``sorted_scores`` (ascending) with at least ``rate`` of the scores <= v."""
    # Round before ceil so that 0.95 * 20 counts as 19 and not as 19.000000000000004.
    k = max(1, math.ceil(round(rate * sorted_scores.size, 9)))
    return float(sorted_scores[k - 1])


def fpr_at_tpr(scores_id, scores_ood, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` TPR: the fraction of ID inputs flagged OOD when the threshold catches ``tpr`` of OOD.

    Precisely: an input is flagged OOD when its score is >= t, and t is the largest threshold that flags at
    least ``tpr`` of the OOD scores, i.e. the ceil(tpr * n_ood)-th largest OOD score. The result is the fraction
    of ID scores >= t. Ties are handled conservatively: ID scores equal to t count as false positives, and
    OOD scores equal to t as detected (the TPR reached can exceed ``tpr`` when OOD scores tie at t). This is
    the FPR at the first point of sklearn's ``roc_curve`` whose TPR reaches ``tpr``.
    """
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    tpr = _check_fraction(tpr, "tpr")
    # The ceil(tpr*n)-th largest OOD score is the (n - ceil(tpr*n) + 1)-th smallest.
    k = max(1, math.ceil(round(tpr * s_ood.size, 9)))
    threshold = np.sort(s_ood)[s_ood.size - k]
    return float(np.mean(s_id >= threshold))


# ---------- bootstrap ----------

def _resample_counts(rng: np.random.Generator, n: int, n_rows: int) -> np.ndarray:
    """How often each of n samples is drawn in each of ``n_rows`` resamples of size n with replacement."""
    draws = rng.integers(0, n, size=(n_rows, n))
    flat = (draws + n * np.arange(n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n).reshape(n_rows, n)


class _WeightedAuroc:
    """AUROC for many reweightings of the same two samples (a weight = how often a sample was resampled).

    Sorting and tie bookkeeping is done once: each OOD score is located among the distinct ID scores, so a
    resample's Mann-Whitney U is a weighted sum over OOD samples of (ID weight strictly below + half the ID
    weight tied), read from a cumulative sum of per-distinct-value ID weights.
    """

    def __init__(self, s_id: np.ndarray, s_ood: np.ndarray):
        self.values, self.group_of_id = np.unique(s_id, return_inverse=True)
        self.n_groups = self.values.size
        self.pos = np.searchsorted(self.values, s_ood, side="left")  # number of distinct ID values below
        safe = np.minimum(self.pos, self.n_groups - 1)
        self.tied = (self.pos < self.n_groups) & (self.values[safe] == s_ood)
        self.n_id, self.n_ood = s_id.size, s_ood.size

    def __call__(self, w_id: np.ndarray, w_ood: np.ndarray) -> np.ndarray:
        """AUROC per row of the weight matrices ``w_id`` (rows, n_id) and ``w_ood`` (rows, n_ood)."""
        rows = w_id.shape[0]
        # Sum ID weights per distinct value, all rows at once: bincount over (row, group) flattened.
        flat = (self.group_of_id[None, :] + self.n_groups * np.arange(rows)[:, None]).ravel()
        per_group = np.bincount(flat, weights=w_id.ravel(), minlength=rows * self.n_groups)
        per_group = per_group.reshape(rows, self.n_groups)
        below = np.concatenate([np.zeros((rows, 1)), np.cumsum(per_group, axis=1)], axis=1)
        wins = below[:, self.pos]  # ID weight strictly below each OOD score
        ties = np.where(self.tied, per_group[:, np.minimum(self.pos, self.n_groups - 1)], 0.0)
        u = np.sum(w_ood * (wins + 0.5 * ties), axis=1)
        return u / (w_id.sum(axis=1) * w_ood.sum(axis=1))


def bootstrap_auroc_samples(scores_id, scores_ood, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the AUROC: ID and OOD scores are each resampled with replacement.

    The two sides are resampled independently (they are independent test sets). Deterministic for a seed.
    """
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    weighted = _WeightedAuroc(s_id, s_ood)
    # Chunks keep the (rows, n) count matrices to a few million entries.
    chunk = max(1, 2_000_000 // max(s_id.size, s_ood.size))
    out = []
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        w_id = _resample_counts(rng, s_id.size, rows)
        w_ood = _resample_counts(rng, s_ood.size, rows)
        out.append(weighted(w_id, w_ood))
    return np.concatenate(out)


def bootstrap_auroc_ci(scores_id, scores_ood, n_boot: int = 1000, alpha: float = 0.05,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval ``(lo, hi)`` for the AUROC."""
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r} (0.05 gives a 95% interval)")
    samples = bootstrap_auroc_samples(scores_id, scores_ood, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def ood_metrics(scores_id, scores_ood, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """All metrics for one (ID, OOD) pair, as fractions in [0, 1].

    Keys: auroc, aupr_in, aupr_out, fpr_at_95tpr, auroc_ci_lo, auroc_ci_hi (a percentile bootstrap CI at
    level 1 - alpha from ``n_boot`` resamples; NaN when ``n_boot`` is 0), n_id, n_ood.
    """
    s_id, s_ood = _two_sides(scores_id, scores_ood)
    result = {
        "auroc": auroc(s_id, s_ood),
        "aupr_in": aupr_in(s_id, s_ood),
        "aupr_out": aupr_out(s_id, s_ood),
        "fpr_at_95tpr": fpr_at_tpr(s_id, s_ood, tpr=0.95),
    }
    if n_boot:
        result["auroc_ci_lo"], result["auroc_ci_hi"] = bootstrap_auroc_ci(s_id, s_ood, n_boot=n_boot,
                                                                          alpha=alpha, seed=seed)
    else:
        result["auroc_ci_lo"] = result["auroc_ci_hi"] = float("nan")
    result["n_id"], result["n_ood"] = int(s_id.size), int(s_ood.size)
    return result


# ---------- test-time decision (Algorithm 2) ----------

def threshold_at_id_acceptance(scores_id_val, rate: float = 0.95) -> float:
    """The threshold epsilon of Algorithm 2: the smallest ID validation score with at least ``rate`` of the
    ID validation scores at or below it (the ceil(rate * n)-th smallest). With ``predict_ood`` (score >
    epsilon is OOD) at least ``rate`` of the validation ID inputs are accepted as in-distribution.
    """
    scores = as_scores(scores_id_val, "scores_id_val")
    rate = _check_fraction(rate, "rate")
    return _kth_smallest_fraction(np.sort(scores), rate)


def predict_ood(scores, threshold: float) -> np.ndarray:
    """Algorithm 2's decision: True (OOD) where score > threshold, False (in-distribution) otherwise."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return as_scores(scores, "scores") > threshold
