"""Score calibration: verification scores turned into log-likelihood ratios, and how well it went.

A cosine (or AS-norm) score ranks trials but its value means nothing by itself:
the threshold that suits one model or one data set does not suit another. A
*calibrated* score is a log-likelihood ratio (LLR),
``log p(score | same speaker) / p(score | different speakers)``, and then the
decision that minimises the expected cost for a target prior ``p`` and costs
``c_miss``, ``c_fa`` is fixed in advance (Bayes decision): accept when
``llr > log((1 - p) c_fa / (p c_miss))``; no threshold is tuned on the test data.

This module holds

* :func:`fit_calibration`: an affine map ``llr = a * score + b`` (``linear``),
  or with the log durations of enrolment and test as extra inputs
  (``qmf``, quality-measure functions), fitted by prior-weighted logistic
  regression as in the BOSARIS toolkit: targets count as the effective prior
  ``P`` and non-targets as ``1 - P`` whatever their numbers, and ``logit(P)`` is
  subtracted from the fitted log-odds so that the output is an LLR;
* :class:`Calibration`: the fitted map (apply it, save it as a dict);
* the measures: :func:`cllr` (the cost of the LLRs over all operating
  points, in bits; 1 = a system that always says LLR 0), :func:`min_cllr`
  (the Cllr after the best monotone transform, found by pool-adjacent-violators:
  what calibration could reach; ``cllr - min_cllr`` is the calibration loss),
  :func:`act_dcf` (the detection cost of the Bayes decision, normalised as
  :func:`sb_angcl.evaluation.metrics.compute_min_dcf` normalises the minimum);
* :class:`CalibratedSpeakerRecognition`: SpeechBrain's ``SpeakerRecognition``
  whose ``verify_batch`` / ``verify_files`` return the calibrated LLR and decide
  at the Bayes threshold, with the parameters ``verify.py`` writes into an
  exported folder's ``hyperparams.yaml``.

The module imports nothing from ``sb_angcl``: an exported model folder carries a
copy of it as ``custom.py``, so that SpeechBrain's ``foreign_class`` loads the
calibrated interface where sb-angcl is not installed.

Authors
 * sb-angcl contributors
"""

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from speechbrain.inference.speaker import SpeakerRecognition

logger = logging.getLogger(__name__)

#: Calibration methods (the recipes' ``calibration`` key).
METHODS = ("linear", "qmf", "none")

#: Inputs of the affine map of each method, in the order of its weights.
FEATURES = {
    "linear": ("score",),
    "qmf": ("score", "log_enrol_seconds", "log_test_seconds"),
}


def logit(p):
    """``log(p / (1 - p))``, the log-odds of a probability.

    Arguments
    ---------
    p : float
        A probability in (0, 1).

    Returns
    -------
    float

    Example
    -------
    >>> round(logit(0.01), 4), logit(0.5)
    (-4.5951, 0.0)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"a prior must be in (0, 1), got {p}")
    return math.log(p) - math.log1p(-p)


def bayes_threshold(p_target, c_miss=1.0, c_fa=1.0):
    """The LLR above which accepting costs less than rejecting.

    Accepting a trial of LLR ``l`` risks ``c_fa (1 - p)`` times the posterior of
    a non-target and rejecting it ``c_miss p`` times that of a target; the two
    are equal at ``l = log(c_fa (1 - p) / (c_miss p))``.

    Arguments
    ---------
    p_target : float
        Prior of a target trial.
    c_miss, c_fa : float
        Costs of a miss and of a false alarm.

    Returns
    -------
    float

    Example
    -------
    >>> round(bayes_threshold(0.01), 4), bayes_threshold(0.5)
    (4.5951, 0.0)
    """
    return math.log(c_fa) - math.log(c_miss) - logit(p_target)


def _scores_labels(values, labels, what="scores"):
    """float64 values and bool labels, with both classes present."""
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
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).sum())} {what} are NaN")
    if not labels.any():
        raise ValueError(f"no target trials (label 1) among the {what}")
    if labels.all():
        raise ValueError(f"no non-target trials (label 0) among the {what}")
    return values, labels


# --------------------------------------------------------------------- measures
def cllr(llrs, labels):
    """Cost of log-likelihood ratios, in bits.

    ``Cllr = 1/2 [mean_tar log2(1 + e^-llr) + mean_non log2(1 + e^llr)]``: the
    logarithmic cost averaged over all priors (Brümmer & du Preez, 2006). 0 is
    perfect; 1 is what LLR 0 on every trial costs; above 1 the LLRs mislead.

    Arguments
    ---------
    llrs : array-like
        One LLR per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    float

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
    """LLRs of the best monotone (non-decreasing) transform of the scores.

    Pool-adjacent-violators on the trials sorted by score gives, per block of
    trials, the fraction of targets that is the isotonic (and the
    maximum-likelihood monotone) estimate of the posterior; equal scores are
    one block, so ties never split. Removing the empirical prior's log-odds
    turns each posterior into an LLR (``±inf`` for blocks of one class).

    Arguments
    ---------
    scores : array-like
        One score per trial (any scale; only the order matters).
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    numpy.ndarray
        float64 LLRs, one per trial in the input order.

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
    """The Cllr after the best monotone transform of the scores (the calibration-free part).

    Arguments
    ---------
    scores : array-like
        One score (or LLR) per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.

    Returns
    -------
    float
        ``cllr(pav_llrs(scores, labels), labels)``; never above
        ``cllr(scores, labels)`` up to the rounding of the scores.

    Example
    -------
    >>> min_cllr([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    0.0
    >>> round(min_cllr([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]), 4)
    0.5
    """
    return cllr(pav_llrs(scores, labels), labels)


def act_dcf(llrs, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised detection cost of the Bayes decision on LLRs.

    Accept a trial when ``llr > bayes_threshold(p_target, c_miss, c_fa)``
    (strictly, as :func:`sb_angcl.evaluation.metrics.compute_min_dcf` accepts
    ``score > threshold``, so ``act_dcf >= min_dcf`` on the same LLRs);
    ``C = c_miss p_target P_miss + c_fa (1 - p_target) P_fa``, divided by
    ``min(c_miss p_target, c_fa (1 - p_target))``.

    Arguments
    ---------
    llrs : array-like
        One LLR per trial.
    labels : array-like
        bool or 0/1, 1 = target trial.
    p_target : float
        Prior of a target trial.
    c_miss, c_fa : float
        Costs of a miss and of a false alarm.

    Returns
    -------
    float

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


# ------------------------------------------------------------------ the map
def calibration_features(method, scores, enrol_seconds=None, test_seconds=None):
    """The inputs of a method's affine map, one row per trial (:data:`FEATURES`).

    Arguments
    ---------
    method : str
        ``linear`` or ``qmf``.
    scores : array-like
        One raw score per trial.
    enrol_seconds, test_seconds : array-like or None
        ``qmf``: seconds of audio on each side of each trial (positive).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_trials, len(FEATURES[method]))``.

    Example
    -------
    >>> calibration_features("qmf", [0.5], [math.e], [1.0]).tolist()
    [[0.5, 1.0, 0.0]]
    """
    if method not in FEATURES:
        raise ValueError(f"calibration method must be one of {list(FEATURES)}, got {method!r}")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    columns = [np.asarray(scores, dtype=np.float64).reshape(-1)]
    if method == "qmf":
        for name, seconds in (("enrol_seconds", enrol_seconds), ("test_seconds", test_seconds)):
            if seconds is None:
                raise ValueError(f"qmf calibration needs {name} (durations of the trials)")
            seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
            if seconds.shape != columns[0].shape:
                raise ValueError(f"{len(seconds)} {name} for {len(columns[0])} scores")
            if not (seconds > 0).all():
                raise ValueError(f"{name} must be positive (a log duration is an input)")
            columns.append(np.log(seconds))
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class Calibration:
    """A fitted affine map from scores (and log durations) to LLRs.

    ``llr = offset + sum_k weights[k] * features[k]`` with the features of
    :data:`FEATURES` for ``method``.

    Arguments
    ---------
    method : str
        ``linear`` or ``qmf``.
    weights : tuple of float
        One weight per feature; ``weights[0]`` multiplies the raw score.
    offset : float
        The constant term (the fitted log-odds' intercept minus ``logit(prior)``).
    prior : float
        The effective prior the map was fitted at.

    Example
    -------
    >>> cal = Calibration("linear", (10.0,), -5.0, 0.01)
    >>> cal.llr([0.5, 0.9]).tolist()
    [0.0, 4.0]
    >>> round(cal.score_threshold(0.01), 4)  # the raw score at the Bayes threshold
    0.9595
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    method: str
    weights: tuple
    offset: float
    prior: float

    def __post_init__(self):
        if self.method not in FEATURES:
            raise ValueError(f"calibration method must be one of {list(FEATURES)}, got {self.method!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        object.__setattr__(self, "offset", float(self.offset))
        if len(self.weights) != len(FEATURES[self.method]):
            raise ValueError(
                f"{self.method} calibration has {len(FEATURES[self.method])} weights "
                f"({', '.join(FEATURES[self.method])}), got {len(self.weights)}"
            )

    def llr(self, scores, enrol_seconds=None, test_seconds=None):
        """LLRs of raw scores (float64 numpy; durations for ``qmf``)."""
        features = calibration_features(self.method, scores, enrol_seconds, test_seconds)
        return features @ np.asarray(self.weights) + self.offset

    def score_threshold(self, p_target, c_miss=1.0, c_fa=1.0):
        """The raw score whose LLR is the Bayes threshold (None unless ``linear`` with a positive slope).

        Then ``llr > bayes_threshold`` is ``score > this``.
        """
        if self.method != "linear" or self.weights[0] <= 0:
            return None
        return (bayes_threshold(p_target, c_miss, c_fa) - self.offset) / self.weights[0]

    def to_dict(self):
        """Plain values (for JSON / YAML)."""
        return {
            "method": self.method,
            "features": list(FEATURES[self.method]),
            "weights": list(self.weights),
            "offset": self.offset,
            "prior": self.prior,
        }

    @classmethod
    def from_dict(cls, values):
        """The inverse of :meth:`to_dict` (extra keys are ignored)."""
        return cls(values["method"], tuple(values["weights"]), values["offset"], values["prior"])


def _weighted_logistic(params, x, y, weight):
    """Loss, gradient and Hessian of ``sum weight * log(1 + exp(-(2y - 1) x.params))``."""
    eta = x @ params
    sign = np.where(y, 1.0, -1.0)
    loss = float(weight @ np.logaddexp(0.0, -sign * eta))
    posterior = 0.5 * (1.0 + np.tanh(0.5 * eta))  # sigmoid without overflow
    grad = x.T @ (weight * (posterior - y))
    hess = (x * (weight * posterior * (1.0 - posterior))[:, None]).T @ x
    return loss, grad, hess


def fit_calibration(scores, labels, prior, method="linear", enrol_seconds=None,
                    test_seconds=None, max_iter=100, tol=1e-10):
    """Fit the affine score-to-LLR map by prior-weighted logistic regression.

    Minimises
    ``P/N_tar sum_tar log(1 + e^-eta) + (1-P)/N_non sum_non log(1 + e^eta)``
    over ``eta = w . features + c`` (Newton's method with a backtracking line
    search, float64): targets weigh ``P`` and non-targets ``1 - P`` in total,
    so ``eta`` is the log-odds at prior ``P`` whatever the class counts of the
    calibration trials, and ``llr = eta - logit(P)``. The objective is ``P``
    times the Cllr-style cost at that prior; for ``P = 0.5`` minimising it
    minimises the Cllr of the calibration trials.

    Arguments
    ---------
    scores : array-like
        Raw scores of the calibration trials.
    labels : array-like
        bool or 0/1, 1 = target trial.
    prior : float
        Effective target prior ``P`` of the fit.
    method : str
        ``linear`` (``llr = a * score + b``) or ``qmf`` (plus weights on the
        log durations of enrolment and test).
    enrol_seconds, test_seconds : array-like or None
        ``qmf``: seconds of audio on each side of each calibration trial.
    max_iter : int
        Newton iterations at most.
    tol : float
        Stop when the largest gradient component is below it.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        No target or no non-target trial, or trials that the features separate
        perfectly (the loss then has no minimum: the weights grow without
        bound), so that there is nothing to calibrate on.

    Example
    -------
    >>> cal = fit_calibration([0.7, 0.2, 0.6, 0.3, 0.5, 0.4], [1, 0, 1, 0, 0, 1], prior=0.5)
    >>> cal.method, round(cal.weights[0], 3), round(cal.offset, 3)
    ('linear', 12.14, -5.463)
    """
    scores, labels = _scores_labels(scores, labels)
    features = calibration_features(method, scores, enrol_seconds, test_seconds)
    x = np.concatenate([features, np.ones((len(scores), 1))], axis=1)
    y = labels.astype(np.float64)
    n_tar = int(labels.sum())
    weight = np.where(labels, prior / n_tar, (1.0 - prior) / (len(labels) - n_tar))
    if method == "linear" and scores[labels].min() > scores[~labels].max():
        raise ValueError(
            "the calibration trials are perfectly separated (every target scores above "
            "every non-target): a logistic fit has no finite solution. Calibrate on more "
            "(and harder) trials."
        )
    params = np.zeros(x.shape[1])
    params[-1] = logit(prior)
    loss, grad, hess = _weighted_logistic(params, x, y, weight)
    converged = False
    for _ in range(max_iter):
        if np.abs(grad).max() < tol:
            converged = True
            break
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        rate = 1.0
        while True:
            trial = params - rate * step
            new_loss, new_grad, new_hess = _weighted_logistic(trial, x, y, weight)
            if new_loss <= loss or rate < 1e-10:
                break
            rate *= 0.5
        if rate < 1e-10 and new_loss > loss:
            break
        params, loss, grad, hess = trial, new_loss, new_grad, new_hess
    if not converged and np.abs(grad).max() >= max(tol, 1e-7):
        raise ValueError(
            f"the calibration fit did not converge in {max_iter} Newton steps (largest "
            f"gradient {np.abs(grad).max():.2e}, weights {params.tolist()}): the calibration "
            "trials are (nearly) separated by the features. Calibrate on more trials."
        )
    return Calibration(method, tuple(params[:-1]), params[-1] - logit(prior), prior)


def cross_fitted_llrs(scores, labels, enrol_fold, test_fold, prior, method="linear",
                      enrol_seconds=None, test_seconds=None, max_trials=None, seed=0):
    """LLRs of trials, each from a calibration fitted on trials of other speakers.

    Speakers are grouped into folds; a trial between folds ``i`` and ``j``
    (``i`` may equal ``j``) gets the map fitted (:func:`fit_calibration`) on
    the trials whose two sides are both outside ``{i, j}``, so no speaker of
    a trial is among those its calibration was fitted on. Every fold pair is
    fitted once. It is how a calibration on unseen speakers is measured
    when the only unseen speakers are the test's.

    Arguments
    ---------
    scores, labels : array-like
        Raw scores and 0/1 labels of all trials.
    enrol_fold, test_fold : array-like of int
        The fold of the speaker on each side of each trial.
    prior : float
        Effective prior of the fits.
    method : str
        ``linear`` or ``qmf``.
    enrol_seconds, test_seconds : array-like or None
        ``qmf``: durations of each side.
    max_trials : int or None
        Fit each map on at most this many of its trials (a seeded sample of
        at most half targets, see :func:`sample_trials`): a few parameters
        need no millions of trials, and CN-Celeb has 3.5 million.
    seed : int
        Seed of the samples.

    Returns
    -------
    llrs : numpy.ndarray
        float64, one per trial.
    fits : dict
        ``(i, j)`` (``i <= j``) to its :class:`Calibration` and the number
        of trials it was fitted on.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(600) % 3 == 0
    >>> scores = rng.normal(size=600) + 2 * labels
    >>> folds = np.arange(600) % 4
    >>> llrs, fits = cross_fitted_llrs(scores, labels, folds, folds, 0.5)
    >>> len(fits), sorted(fits)[:2]
    (4, [(0, 0), (1, 1)])
    """
    scores, labels = _scores_labels(scores, labels)
    enrol_fold = np.asarray(enrol_fold).reshape(-1)
    test_fold = np.asarray(test_fold).reshape(-1)
    if enrol_fold.shape != scores.shape or test_fold.shape != scores.shape:
        raise ValueError("one enrolment fold and one test fold per trial are needed")
    seconds = {}
    if method == "qmf":
        seconds = {"enrol_seconds": np.asarray(enrol_seconds, dtype=np.float64),
                   "test_seconds": np.asarray(test_seconds, dtype=np.float64)}
    low, high = np.minimum(enrol_fold, test_fold), np.maximum(enrol_fold, test_fold)
    rng = np.random.default_rng(seed)
    llrs = np.empty(len(scores))
    fits = {}
    for i, j in sorted(set(zip(low.tolist(), high.tolist()))):
        apply = (low == i) & (high == j)
        outside = ~np.isin(enrol_fold, (i, j)) & ~np.isin(test_fold, (i, j))
        n_tar = int(labels[outside].sum())
        if n_tar == 0 or n_tar == int(outside.sum()):
            raise ValueError(
                f"no {'target' if n_tar == 0 else 'non-target'} trial lies outside the speaker "
                f"folds {i} and {j} ({int(outside.sum())} trials): too few speakers or folds "
                "to calibrate each trial on other speakers' trials"
            )
        chosen = np.flatnonzero(outside)
        if max_trials is not None:
            chosen = chosen[sample_trials(labels[chosen], max_trials, rng)]
        part = {k: v[chosen] for k, v in seconds.items()}
        cal = fit_calibration(scores[chosen], labels[chosen], prior, method, **part)
        llrs[apply] = cal.llr(scores[apply], **{k: v[apply] for k, v in seconds.items()})
        fits[(i, j)] = (cal, len(chosen))
    return llrs, fits


def sample_trials(labels, max_trials, rng):
    """Indices of at most ``max_trials`` trials: up to half targets, non-targets filling up.

    The prior-weighted fit gives each class its prior's weight whatever its
    count, so the sample keeps both classes as large as the cap allows.

    Arguments
    ---------
    labels : array-like
        bool or 0/1 labels.
    max_trials : int
        The cap.
    rng : numpy.random.Generator
        Source of the draws.

    Returns
    -------
    numpy.ndarray
        Sorted indices (all of them when there are at most ``max_trials``).

    Example
    -------
    >>> idx = sample_trials([1] * 10 + [0] * 100, 20, np.random.default_rng(0))
    >>> len(idx), int((idx < 10).sum())
    (20, 10)
    """
    labels = np.asarray(labels).astype(bool).reshape(-1)
    if len(labels) <= max_trials:
        return np.arange(len(labels))
    tar, non = np.flatnonzero(labels), np.flatnonzero(~labels)
    n_tar = min(len(tar), max(1, max_trials // 2))
    n_non = min(len(non), max_trials - n_tar)
    n_tar = min(len(tar), max_trials - n_non)
    keep = np.r_[rng.choice(tar, n_tar, replace=False), rng.choice(non, n_non, replace=False)]
    return np.sort(keep)


# ------------------------------------------------------------- inference
class CalibratedSpeakerRecognition(SpeakerRecognition):
    """SpeechBrain's ``SpeakerRecognition`` that returns calibrated LLRs.

    Reads the ``calibration`` mapping of the folder's ``hyperparams.yaml``
    (written there by sb-angcl's ``verify.py``): the map of
    :class:`Calibration`, ``p_target`` (and ``c_miss``, ``c_fa``) of the
    decision, ``sample_rate`` and ``max_seconds`` for the durations of
    ``qmf``. ``verify_batch`` (and so ``verify_files``) returns the LLR of
    the cosine score and decides ``llr > threshold``, the Bayes threshold of
    that prior unless a ``threshold`` is given (on the LLR scale). A folder
    without the mapping behaves like ``SpeakerRecognition`` (cosine, 0.25),
    with a warning. The embeddings are those of ``SpeakerRecognition``.

    Load with ``CalibratedSpeakerRecognition.from_hparams(source=folder)``
    (sb-angcl installed) or SpeechBrain's ``foreign_class(source=folder,
    pymodule_file="custom.py", classname="CalibratedSpeakerRecognition")``.

    Example
    -------
    >>> issubclass(CalibratedSpeakerRecognition, SpeakerRecognition)
    True
    """

    def calibration(self):
        """The folder's :class:`Calibration` and decision settings, or None."""
        values = getattr(self.hparams, "calibration", None)
        if not values:
            return None
        return Calibration.from_dict(values), values

    def verify_batch(self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None):
        """Calibrated LLRs of pairs of waveforms and the Bayes decision.

        Arguments
        ---------
        wavs1, wavs2 : torch.Tensor
            Waveforms ``(batch, time)`` at the model's sample rate.
        wav1_lens, wav2_lens : torch.Tensor or None
            Relative lengths (1 = the whole row).
        threshold : float or None
            Accept when the LLR is above it; None: the Bayes threshold of the
            folder's ``p_target``.

        Returns
        -------
        score : torch.Tensor
            LLRs ``(batch, 1)`` (cosines when the folder is not calibrated).
        decision : torch.Tensor
            ``score > threshold``.
        """
        emb1 = self.encode_batch(wavs1, wav1_lens, normalize=False)
        emb2 = self.encode_batch(wavs2, wav2_lens, normalize=False)
        cosine = self.similarity(emb1, emb2)
        found = self.calibration()
        if found is None:
            logger.warning("this folder holds no score calibration (run verify.py on it): "
                           "returning cosine scores, decision at 0.25")
            return cosine, cosine > (0.25 if threshold is None else threshold)
        cal, values = found
        shape = cosine.shape
        seconds = [self._seconds(w, n, values) for w, n in ((wavs1, wav1_lens), (wavs2, wav2_lens))]
        llr = cal.llr(cosine.reshape(-1), *seconds) if cal.method == "qmf" else cal.llr(cosine.reshape(-1))
        llr = torch.as_tensor(llr, dtype=cosine.dtype, device=cosine.device).reshape(shape)
        if threshold is None:
            threshold = bayes_threshold(
                values["p_target"], values.get("c_miss", 1.0), values.get("c_fa", 1.0)
            )
        return llr, llr > threshold

    @staticmethod
    def _seconds(wavs, lens, values):
        """Seconds of audio per row, capped as verify.py capped them (``max_seconds``)."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        rel = torch.ones(wavs.shape[0]) if lens is None else lens.detach().cpu().float()
        seconds = rel.numpy() * wavs.shape[1] / values["sample_rate"]
        if values.get("max_seconds"):
            seconds = np.minimum(seconds, values["max_seconds"])
        return seconds
