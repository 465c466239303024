"""Verification metrics: EER, minDCF, DET curve and per-condition tables.

Everything works on a whole trial list at once: :func:`compute_eer` and
:func:`compute_min_dcf` need one sort and cumulative sums, O(N log N), and use
the operating points of SpeechBrain's ``speechbrain.utils.metric_stats.EER`` /
``minDCF``, so the numbers agree with those O(N^2) versions. :func:`det_curve`
gives the miss / false-alarm rates at every distinct score and
:func:`metrics_table` the metrics per condition (e.g. CN-Celeb genre).

Scores come from :mod:`sb_angcl.evaluation.scoring`; the pictures (DET curve, score
histogram) are in :mod:`sb_angcl.evaluation.plots`; the calibration measures (Cllr, min
Cllr, actual DCF) are in :mod:`sb_angcl.evaluation.calibration`, and :func:`metrics_table`
adds them per condition when it is given LLRs.

Authors
 * sb-angcl contributors 2025
"""

import numpy as np
import pandas as pd
import torch

from sb_angcl.evaluation.calibration import act_dcf, cllr, min_cllr

_METRIC_COLUMNS = ("condition", "value", "n_trials", "n_target", "EER", "minDCF")

#: Columns :func:`metrics_table` adds when it is given LLRs.
_CALIBRATION_COLUMNS = ("Cllr", "minCllr", "actDCF")


def _scores_labels(scores, labels):
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be bool or 0/1 (1 = target trial)")
        labels = labels.astype(bool)
    n_nan = int(np.isnan(scores).sum())
    if n_nan:
        raise ValueError(f"{n_nan} scores are NaN; fix the scoring before computing metrics")
    n_tar = int(labels.sum())
    if n_tar == 0:
        raise ValueError("no target trials (label 1): EER/minDCF are undefined")
    if n_tar == labels.shape[0]:
        raise ValueError("no non-target trials (label 0): EER/minDCF are undefined")
    return scores, labels


def det_curve(scores, labels):
    """Miss and false-alarm rates at every distinct score (one sort, cumulative sums).

    A trial is accepted when its score is strictly greater than the threshold;
    equal scores are grouped, so ties never split between accept and reject.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    thresholds : numpy.ndarray
        The distinct scores, ascending.
    p_miss : numpy.ndarray
        Fraction of targets with score <= threshold (non-decreasing).
    p_fa : numpy.ndarray
        Fraction of non-targets with score > threshold (non-increasing).

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
    """Equal error rate and its threshold, in O(N log N).

    The operating points are those of ``speechbrain.utils.metric_stats.EER``:
    accept when score > threshold, for each distinct score as threshold, and
    ``EER = (P_fa + P_miss) / 2`` at the point where ``|P_fa - P_miss|`` is
    smallest, so the value equals SpeechBrain's (which is O(N^2)). When two
    points are equally far from equality (possible when there are as many
    targets as non-targets, and then they give different EERs), the choice
    follows SpeechBrain's float32 arithmetic, which is what it returns; the
    threshold may then be the midpoint between two distinct scores, as there.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    eer : float
        Equal error rate as a fraction (multiply by 100 for %).
    threshold : float
        Accept trials with score strictly above it.

    Example
    -------
    >>> compute_eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    (0.0, 0.3)
    >>> eer, th = compute_eer([0.9, 0.2, 0.3, 0.1, 0.0], [1, 1, 0, 0, 0])
    >>> round(eer, 4), th
    (0.4167, 0.2)
    """
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(*_scores_labels(scores, labels))
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
    """Normalised minimum detection cost, in O(N log N).

    ``C_det = c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target)``,
    minimised over the thresholds of :func:`det_curve` (those SpeechBrain's
    ``minDCF`` uses) plus "accept every trial", and divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the better
    trivial system), so that 1.0 means no better than always rejecting or always
    accepting. SpeechBrain's ``minDCF`` returns the unnormalised value.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    p_target : float
        Prior of a target trial.
    c_miss, c_fa : float
        Costs of a miss and of a false alarm.

    Returns
    -------
    min_dcf : float
        Normalised minimum DCF.
    threshold : float
        Accept trials with score strictly above it (``-inf``: accept all).

    Example
    -------
    >>> compute_min_dcf([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    (0.0, 0.3)
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    thresholds, n_tar_le, n_non_gt, n_tar, n_non = _counts(*_scores_labels(scores, labels))
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


def metrics_table(scores, labels, conditions=None, p_target=0.01, c_miss=1.0, c_fa=1.0,
                  llrs=None):
    """EER and minDCF (and, given LLRs, Cllr, min Cllr, actual DCF) for all trials and per condition.

    Arguments
    ---------
    scores : array-like
        One score per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    conditions : Mapping[str, array-like], optional
        Condition name to one label per trial (e.g. ``{"genre": genres}``).
    p_target, c_miss, c_fa : float
        DCF parameters (see :func:`compute_min_dcf`), for minDCF and actDCF.
    llrs : array-like, optional
        One calibrated LLR per trial: adds ``Cllr`` and ``actDCF`` (the Bayes
        decision at ``p_target``, normalised as minDCF) of the LLRs, and
        ``minCllr``, the Cllr of the *scores* after their best monotone
        transform (as minDCF is of the scores: ``Cllr - minCllr`` and
        ``actDCF - minDCF`` are what the calibration loses); see
        :mod:`sb_angcl.evaluation.calibration`.

    Returns
    -------
    pandas.DataFrame
        Columns ``condition, value, n_trials, n_target, EER, minDCF`` (then
        ``Cllr, minCllr, actDCF`` with ``llrs``); the first row is
        ``("all", "all", ...)``. EER is a fraction (x100 for %). Subsets
        without target or without non-target trials get NaN metrics.

    Example
    -------
    >>> df = metrics_table([0.9, 0.8, 0.3, 0.1, 0.7, 0.2], [1, 1, 0, 0, 0, 1],
    ...                    {"genre": ["a", "a", "a", "a", "b", "b"]})
    >>> df[["condition", "value", "n_trials", "n_target", "EER"]]
      condition value  n_trials  n_target  EER
    0       all   all         6         3  0.333333
    1     genre     a         4         2  0.000000
    2     genre     b         2         1  1.000000
    >>> df = metrics_table([0.9, 0.3], [1, 0], llrs=[6.0, -6.0])
    >>> df[["Cllr", "minCllr", "actDCF"]].round(4).values.tolist()
    [[0.0036, 0.0, 0.0]]
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
            values += [compute_eer(s, lab)[0], compute_min_dcf(s, lab, p_target, c_miss, c_fa)[0]]
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
