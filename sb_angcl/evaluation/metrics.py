"""Verification metrics: EER, minDCF, Cllr, minCllr, actDCF, per condition.

EER and minDCF take SpeechBrain's operating points (``metric_stats.EER`` /
``minDCF``, equal values: ``tests/test_metrics.py``) from one sort of the
scores, O(N log N): SpeechBrain's own are O(N^2) in time or memory, too slow
for CN-Celeb's 3.5 million trials.

Authors
 * sb-angcl contributors 2025
"""

import math

import numpy as np
import pandas as pd
import torch

from sb_angcl.evaluation.calibrated import bayes_threshold

_METRIC_COLUMNS = ("condition", "value", "n_trials", "n_target", "EER", "minDCF")

#: Columns :func:`metrics_table` adds when it is given LLRs.
_CALIBRATION_COLUMNS = ("Cllr", "minCllr", "actDCF")


def _scores_labels(values, labels, what="scores"):
    """float64 values and bool labels, with both classes present (clear errors otherwise)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if values.shape[0] != labels.shape[0]:
        raise ValueError(f"{values.shape[0]} {what} but {labels.shape[0]} labels")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be bool or 0/1 (1 = target trial)")
        labels = labels.astype(bool)
    n_nan = int(np.isnan(values).sum())
    if n_nan:
        raise ValueError(f"{n_nan} {what} are NaN; fix the scoring before computing metrics")
    if not labels.any():
        raise ValueError(f"no target trials (label 1) among the {what}: the metrics are undefined")
    if labels.all():
        raise ValueError(f"no non-target trials (label 0) among the {what}: the metrics are undefined")
    return values, labels


def det_curve(scores, labels):
    """Miss and false-alarm rates at every distinct score (accept when score > threshold).

    ``labels`` here and below: bool or 0/1, 1 = target trial.

    Returns
    -------
    thresholds, p_miss, p_fa : numpy.ndarray
        The distinct scores (ascending), the fraction of targets at or below
        each and of non-targets above each.

    Example
    -------
    >>> th, p_miss, p_fa = det_curve([0.1, 0.4, 0.4, 0.8], [0, 1, 0, 1])
    >>> th.tolist(), p_miss.tolist(), p_fa.tolist()
    ([0.1, 0.4, 0.8], [0.0, 0.5, 1.0], [0.5, 0.0, 0.0])
    """
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(*_scores_labels(scores, labels))
    return thresholds, n_tar_le / n_tar, n_non_gt / n_non


def _counts(scores, labels):
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    tar = labels[order]
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1)
    n_tar = int(tar.sum())
    n_non = len(s) - n_tar
    n_tar_le = np.cumsum(tar, dtype=np.int64)[ends]
    n_non_le = ends + 1 - n_tar_le
    return s[ends], n_tar_le, n_non - n_non_le, n_tar, n_non


def compute_eer(scores, labels):
    """Equal error rate and its threshold, as ``speechbrain.utils.metric_stats.EER``.

    ``(P_fa + P_miss) / 2`` where ``|P_fa - P_miss|`` is smallest; ties between
    points are broken as SpeechBrain's float32 arithmetic breaks them (the
    threshold may then be a midpoint between two scores, as there).

    Returns
    -------
    eer, threshold : float
        EER as a fraction; accept trials scoring strictly above the threshold.

    Example
    -------
    >>> eer, th = compute_eer([0.9, 0.2, 0.3, 0.1, 0.0], [1, 1, 0, 0, 0])
    >>> round(eer, 4), th
    (0.4167, 0.2)
    """
    return _eer(_counts(*_scores_labels(scores, labels)))


def _eer(counts):
    """EER and threshold from :func:`_counts` (see :func:`compute_eer`)."""
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = counts
    # Rates as SpeechBrain computes them (float32), their exact float64 gap,
    # and the float32 gap it compares against the best gap so far.
    far = n_non_gt.astype(np.float32) / np.float32(n_non)
    frr = n_tar_le.astype(np.float32) / np.float32(n_tar)
    gap64 = np.abs(far.astype(np.float64) - frr.astype(np.float64))
    gap32 = np.abs(far - frr).astype(np.float64)
    # Only points within float32 noise of the smallest gap can be chosen;
    # replay SpeechBrain's sequential "strictly smaller" scan over them, each
    # distinct score followed by the midpoint to the next (same rates).
    near = np.flatnonzero(gap64 <= gap64.min() * (1 + 1e-6))
    best, best_mid = int(near[0]), False
    last = len(thresholds) - 1
    for j in near:
        for mid in (False, True):
            if mid and j == last:
                break
            if (j, mid) != (near[0], False) and gap32[j] < gap64[best]:
                best, best_mid = int(j), mid
    eer = (float(far[best]) + float(frr[best])) / 2
    th = thresholds[best]
    if best_mid:
        th = (th + thresholds[best + 1]) / 2
    return float(eer), float(th)


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost.

    ``c_miss P_miss p_target + c_fa P_fa (1 - p_target)``, minimised over the
    thresholds of :func:`det_curve` (SpeechBrain's ``minDCF``'s) and "accept
    all", divided by ``min(c_miss p_target, c_fa (1 - p_target))``, the cost of
    the better trivial system (SpeechBrain returns it unnormalised).

    ``p_target`` is the prior of a target trial, ``c_miss``, ``c_fa`` the costs.

    Returns
    -------
    min_dcf, threshold : float
        Accept trials scoring strictly above the threshold (``-inf``: all).

    Example
    -------
    >>> compute_min_dcf([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    (0.0, 0.3)
    """
    return _min_dcf(_counts(*_scores_labels(scores, labels)), p_target, c_miss, c_fa)


def _min_dcf(counts, p_target, c_miss, c_fa):
    """Normalised minDCF and threshold from :func:`_counts` (see :func:`compute_min_dcf`)."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = counts
    c_det = c_miss * p_target * (n_tar_le / n_tar) + c_fa * (1 - p_target) * (n_non_gt / n_non)
    # Pick among near-equal minima as SpeechBrain's float32 arithmetic does
    # (first minimum of the float32 cost); the value itself is taken in float64.
    p_miss32 = n_tar_le.astype(np.float32) / np.float32(n_tar)
    p_fa32 = n_non_gt.astype(np.float32) / np.float32(n_non)
    c32 = np.float32(c_miss) * p_miss32 * np.float32(p_target)
    c32 += np.float32(c_fa) * p_fa32 * np.float32(1 - p_target)
    j = int(np.argmin(c32))
    best, threshold = float(c_det[j]), float(thresholds[j])
    accept_all = c_fa * (1 - p_target)
    if accept_all < best:
        best, threshold = accept_all, float("-inf")
    return best / min(c_miss * p_target, c_fa * (1 - p_target)), threshold


def operating_points(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """:func:`compute_eer` and :func:`compute_min_dcf` with their thresholds, from one sort.

    Example
    -------
    >>> operating_points([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    {'EER': 0.0, 'EER_threshold': 0.3, 'minDCF': 0.0, 'minDCF_threshold': 0.3}
    """
    counts = _counts(*_scores_labels(scores, labels))
    eer, eer_threshold = _eer(counts)
    min_dcf, dcf_threshold = _min_dcf(counts, p_target, c_miss, c_fa)
    return {"EER": eer, "EER_threshold": eer_threshold, "minDCF": min_dcf,
            "minDCF_threshold": dcf_threshold}


def metrics_table(scores, labels, conditions=None, p_target=0.01, c_miss=1.0, c_fa=1.0,
                  llrs=None, overall=None):
    """EER and minDCF (given LLRs, also Cllr, minCllr, actDCF), for all trials and per condition.

    ``conditions`` maps a name to one value per trial (e.g. ``{"genre": genres}``);
    ``llrs`` (one calibrated LLR per trial) add their ``Cllr`` and ``actDCF``
    and the scores' ``minCllr`` (``Cllr - minCllr`` and ``actDCF - minDCF`` are
    what the calibration loses); ``overall``: :func:`operating_points` of all
    trials, when already computed. The first row is ``("all", "all", ...)``;
    subsets lacking a class get NaN metrics.

    Example
    -------
    >>> df = metrics_table([0.9, 0.8, 0.3, 0.1, 0.7, 0.2], [1, 1, 0, 0, 0, 1],
    ...                    {"genre": ["a", "a", "a", "a", "b", "b"]})
    >>> df[["condition", "value", "n_trials", "n_target", "EER"]]
      condition value  n_trials  n_target  EER
    0       all   all         6         3  0.333333
    1     genre     a         4         2  0.000000
    2     genre     b         2         1  1.000000
    """
    scores, labels = _scores_labels(scores, labels)
    n = len(scores)
    columns = list(_METRIC_COLUMNS)
    if llrs is not None:
        llrs = np.asarray(llrs, dtype=np.float64).reshape(-1)
        if len(llrs) != n:
            raise ValueError(f"{len(llrs)} LLRs for {n} trials")
        columns += list(_CALIBRATION_COLUMNS)

    def row(name, value, mask):
        s = scores if mask is None else scores[mask]
        lab = labels if mask is None else labels[mask]
        n_t = int(lab.sum())
        both = 0 < n_t < len(lab)
        values = [name, value, len(lab), n_t]
        if both:
            points = overall if mask is None and overall else operating_points(
                s, lab, p_target, c_miss, c_fa)
            values += [points["EER"], points["minDCF"]]
        else:
            values += [float("nan")] * 2
        if llrs is not None:
            lr = llrs if mask is None else llrs[mask]
            if both:
                values += [cllr(lr, lab), min_cllr(s, lab),
                           act_dcf(lr, lab, p_target, c_miss, c_fa)]
            else:
                values += [float("nan")] * 3
        return dict(zip(columns, values))

    rows = [row("all", "all", None)]
    for name, values in (conditions or {}).items():
        values = np.asarray(values, dtype=object).reshape(-1)
        if len(values) != n:
            raise ValueError(f"condition {name!r} has {len(values)} labels for {n} trials")
        codes, uniques = pd.factorize(values, sort=True)
        for k, value in enumerate(uniques):
            rows.append(row(str(name), value, codes == k))
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------- calibration measures
def cllr(llrs, labels):
    """Cost of log-likelihood ratios in bits (Brümmer & du Preez, 2006).

    ``1/2 [mean_tar log2(1 + e^-llr) + mean_non log2(1 + e^llr)]``: 0 is
    perfect, 1 what LLR 0 on every trial costs.

    Example
    -------
    >>> cllr([0.0, 0.0], [1, 0])
    1.0
    >>> round(cllr([3.0, -3.0], [1, 0]), 4)
    0.0701
    """
    llrs, labels = _scores_labels(llrs, labels, "LLRs")
    c_tar = np.mean(np.logaddexp(0.0, -llrs[labels]))
    c_non = np.mean(np.logaddexp(0.0, llrs[~labels]))
    return float((c_tar + c_non) / (2.0 * math.log(2.0)))


def pav_llrs(scores, labels):
    """LLRs of the best non-decreasing transform of the scores (pool-adjacent-violators).

    Each block's target fraction, less the empirical prior's log-odds, gives
    its LLR (``±inf`` for blocks of one class); equal scores are one block.

    Example
    -------
    >>> pav_llrs([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]).tolist()
    [-inf, 0.0, 0.0, inf]
    """
    scores, labels = _scores_labels(scores, labels)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    n = np.diff(np.r_[starts, len(s)]).astype(np.float64)
    tar = np.add.reduceat(labels[order].astype(np.float64), starts)
    # Stack of pooled blocks: target count, trial count, distinct-score blocks covered.
    pool_tar, pool_n, pool_len = [], [], []
    for t, m in zip(tar.tolist(), n.tolist()):
        pool_tar.append(t)
        pool_n.append(m)
        pool_len.append(1)
        while len(pool_n) > 1 and pool_tar[-2] * pool_n[-1] >= pool_tar[-1] * pool_n[-2]:
            t2, m2, k2 = pool_tar.pop(), pool_n.pop(), pool_len.pop()
            pool_tar[-1] += t2
            pool_n[-1] += m2
            pool_len[-1] += k2
    posterior = np.repeat(np.array(pool_tar) / np.array(pool_n), pool_len)
    n_tar = labels.sum()
    with np.errstate(divide="ignore"):
        log_odds = np.log(posterior) - np.log1p(-posterior)
    block_llr = log_odds - (math.log(n_tar) - math.log(len(labels) - n_tar))
    out = np.empty(len(scores))
    out[order] = np.repeat(block_llr, n.astype(np.int64))
    return out


def min_cllr(scores, labels):
    """The Cllr after the best monotone transform of the scores, ``cllr(pav_llrs(...))``.

    Example
    -------
    >>> round(min_cllr([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]), 4)
    0.5
    """
    return cllr(pav_llrs(scores, labels), labels)


def act_dcf(llrs, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Detection cost of the Bayes decision ``llr > bayes_threshold(p_target, c_miss, c_fa)``.

    Normalised as :func:`compute_min_dcf`, so ``act_dcf >= min_dcf`` on the same LLRs.

    Example
    -------
    >>> act_dcf([5.0, 4.0, 0.0], [1, 1, 0])  # one of two targets missed
    0.5
    """
    llrs, labels = _scores_labels(llrs, labels, "LLRs")
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    p_miss = np.mean(llrs[labels] <= threshold)
    p_fa = np.mean(llrs[~labels] > threshold)
    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(cost / min(c_miss * p_target, c_fa * (1 - p_target)))


# ------------------------------------------------------------------ conditions
def trial_conditions(trials):
    """Condition columns of a trial table (``trials.csv``) plus derived ones, name to values.

    Adds ``cross_language`` (from ``enrol_language``/``test_language``),
    ``genre_pair`` and ``session`` (same/cross: from ``enrol_session``/
    ``test_session``, else the video of VoxCeleb paths, else CN-Celeb genres).

    Example
    -------
    >>> t = pd.DataFrame({"enrol": ["a"], "test": ["b"], "label": [1],
    ...                   "enrol_language": ["en"], "test_language": ["zh"]})
    >>> trial_conditions(t)["cross_language"].tolist()
    ['cross']
    """
    conditions = {}
    for column in trials.columns:
        if column in ("enrol", "test", "label"):
            continue
        values = trials[column].fillna("").astype(str)
        if (values != "").any():
            conditions[column] = values
    if "enrol_language" in conditions and "test_language" in conditions:
        same = conditions["enrol_language"] == conditions["test_language"]
        conditions["cross_language"] = np.where(same, "same", "cross")
    if "enrol_genre" in conditions and "test_genre" in conditions:
        conditions["genre_pair"] = conditions["enrol_genre"] + "->" + conditions["test_genre"]
    same_session = _same_session(trials, conditions)
    if same_session is not None:
        conditions["session"] = np.where(same_session, "same", "cross")
    return {k: np.asarray(v) for k, v in conditions.items()}


def _same_session(trials, conditions):
    """Same session per trial, or None (a CN-Celeb enrolment ``a+b`` matches either genre)."""
    if "enrol_session" in conditions and "test_session" in conditions:
        return (conditions["enrol_session"] == conditions["test_session"]).to_numpy()
    enrol = trials["enrol"].astype(str).str.split("/")
    test = trials["test"].astype(str).str.split("/")
    if len(trials) and (enrol.str.len() >= 3).all() and (test.str.len() >= 3).all():
        return (enrol.str[-2] == test.str[-2]).to_numpy()
    if "enrol_genre" in conditions and "test_genre" in conditions:
        pairs = zip(conditions["enrol_genre"], conditions["test_genre"])
        return np.array([t in e.split("+") for e, t in pairs])
    return None
