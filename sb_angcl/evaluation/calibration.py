"""Score calibration: fitting the score-to-LLR map, and choosing the trials it is fitted on.

:func:`fit_calibration` fits a :class:`~sb_angcl.evaluation.calibrated.Calibration`
(prior-weighted logistic regression, as BOSARIS); the trials are the test
trials across speaker folds (:func:`cross_fit_test_calibration`), a given list
or trials built from ``dev.csv`` (:func:`fit_score_calibration`).

Authors
 * sb-angcl contributors
"""

import logging
import os

import numpy as np
import pandas as pd

from sb_angcl.evaluation.calibrated import Calibration, bayes_threshold, calibration_features, logit
from sb_angcl.evaluation.metrics import _scores_labels, cllr
from sb_angcl.evaluation.scoring import (
    _lookup,
    _manifest_seconds,
    embed_listed,
    score_trials,
)

logger = logging.getLogger(__name__)

#: Calibration methods (the verification YAML's ``calibration`` key).
METHODS = ("linear", "qmf", "none")
#: p_target of minDCF and actDCF, and of the exported model's Bayes decision.
DECISION_PRIOR = 0.01


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

    Minimises ``P/N_tar sum_tar log(1 + e^-eta) + (1-P)/N_non sum_non log(1 + e^eta)``
    over ``eta = w . features + c`` (Newton with backtracking); ``llr = eta - logit(P)``.

    Arguments
    ---------
    scores, labels : array-like
        Raw scores and labels (bool or 0/1, 1 = target) of the calibration trials.
    prior : float
        Effective target prior ``P`` of the fit.
    method : str
        ``linear`` (``llr = a * score + b``) or ``qmf`` (plus the log durations
        ``enrol_seconds``, ``test_seconds`` of each trial).
    max_iter, tol : int, float
        Newton steps at most; stop when no gradient component reaches ``tol``.

    Returns
    -------
    Calibration
        (ValueError when a class is missing or the features separate the trials.)

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

    A trial between speaker folds ``i`` and ``j`` gets the map fitted on the
    trials with both sides outside ``{i, j}``; each fold pair is fitted once.

    Arguments
    ---------
    scores, labels : array-like
        Raw scores and 0/1 labels of all trials.
    enrol_fold, test_fold : array-like of int
        The fold of the speaker on each side of each trial.
    prior, method, enrol_seconds, test_seconds
        As :func:`fit_calibration`.
    max_trials, seed : int or None, int
        Fit each map on at most this many of its trials (:func:`sample_trials`).

    Returns
    -------
    llrs : numpy.ndarray
        One per trial.
    fits : dict
        ``(i, j)`` (``i <= j``) to its :class:`Calibration` and its number of trials.
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
    """Sorted indices of at most ``max_trials`` trials drawn with ``rng``: up to half targets.

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


def read_trial_list(path):
    """A trial list, ``label enrol test`` lines or an ``enrol,test,label`` CSV, as a DataFrame."""
    fix = ("one trial per line, 'label enrol test' (label 1 = same speaker, 0 = not; "
           "utterances by their manifest ID), or a CSV with columns enrol,test,label")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration_trials: {path} not found; give a trial list: {fix}.")
    with open(path, encoding="utf-8") as fin:
        first = next((line for line in fin if line.strip()), "")
    if {"enrol", "test", "label"} & {c.strip() for c in first.split(",")}:
        table = pd.read_csv(path, dtype={"enrol": str, "test": str})
        missing = {"enrol", "test", "label"} - set(table.columns)
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}; expected {fix}.")
        table = table[["enrol", "test", "label"]]
    else:
        rows = []
        with open(path, encoding="utf-8") as fin:
            for number, line in enumerate(fin, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 3 or fields[0] not in ("0", "1"):
                    raise ValueError(f"{path}:{number}: {line.strip()!r} is not a trial; expected {fix}.")
                rows.append((fields[1], fields[2], int(fields[0])))
        table = pd.DataFrame(rows, columns=["enrol", "test", "label"])
    if not table["label"].isin((0, 1)).all():
        raise ValueError(f"{path}: labels must be 0 or 1; expected {fix}.")
    table["label"] = table["label"].astype(int)
    return table.reset_index(drop=True)


def split_trials(manifest, max_trials, seed, source="the manifest"):
    """Calibration trials (``enrol``, ``test``, ``label``) among a manifest's utterances.

    Same-speaker pairs (at most ``max_trials // 2``, drawn with ``seed``) are
    the targets; random pairs of different speakers fill up to ``max_trials``.
    ``manifest`` has ``ID`` and ``spk_id`` columns; ``source`` names it in errors.
    """
    ids = manifest["ID"].astype(str).to_numpy()
    speakers = manifest["spk_id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    order = np.argsort(speakers, kind="stable")
    ids, speakers = ids[order], speakers[order]
    starts = np.flatnonzero(np.r_[True, speakers[1:] != speakers[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    pairs = [(i, j) for s, n in zip(starts, sizes) for i in range(s, s + n) for j in range(i + 1, s + n)]
    if not pairs:
        raise ValueError(
            f"No target calibration trial can be built from {source}: no speaker has two "
            "utterances there. Give the validation split a larger share in split_ratio (and prepare "
            "and train again), give a trial list as calibration_trials, or set calibration: none."
        )
    n_tar = min(len(pairs), max_trials // 2)
    targets = np.asarray(pairs)[rng.choice(len(pairs), n_tar, replace=False)] if n_tar < len(pairs) \
        else np.asarray(pairs)
    n = len(ids)
    n_non_all = n * (n - 1) // 2 - len(pairs)
    n_non = min(n_non_all, max_trials - len(targets))
    if n_non <= 0:
        raise ValueError(
            f"No non-target calibration trial can be built from {source}: it holds one "
            "speaker. Give a trial list as calibration_trials, or set calibration: none."
        )
    if n_non_all <= 4 * n_non:  # few enough to list: draw without replacement
        i, j = np.triu_indices(n, 1)
        keep = speakers[i] != speakers[j]
        everything = np.stack([i[keep], j[keep]], axis=1)
        pick = np.sort(rng.choice(len(everything), n_non, replace=False))
        nontargets = everything if n_non == n_non_all else everything[pick]
    else:  # draws are rarely repeated: reject same-speaker and repeated pairs
        chosen = set()
        while len(chosen) < n_non:
            i = rng.integers(0, n, 2 * (n_non - len(chosen)))
            j = rng.integers(0, n, len(i))
            for a, b in zip(i.tolist(), j.tolist()):
                if speakers[a] != speakers[b]:
                    chosen.add((min(a, b), max(a, b)))
                    if len(chosen) == n_non:
                        break
        nontargets = np.array(sorted(chosen))
    both = np.concatenate([targets, nontargets])
    labels = np.r_[np.ones(len(targets), int), np.zeros(len(nontargets), int)]
    return pd.DataFrame({"enrol": ids[both[:, 0]], "test": ids[both[:, 1]], "label": labels})


def _read_manifest(csv_path):
    return pd.read_csv(csv_path, dtype={"ID": str, "spk_id": str})


def fit_score_calibration(hparams, test_trials, test, cohort, model, opts):
    """Fit the YAML's calibration on ``calibration_trials``: a trial list, or ``dev``.

    A list names utterances of the run's manifests by ID; ``dev`` builds trials
    from ``dev.csv`` (:func:`split_trials`). At most ``calibration_max_trials``;
    speakers shared with the test trials are warned about. The trials are scored
    as the test trials (same cohort).

    ``test`` embeddings are reused; returns ``calibration``, ``p_target`` (of
    the decision) and ``summary``.
    """
    method = hparams["calibration"]
    prior = hparams["calibration_prior"]
    given = hparams["calibration_trials"]
    manifests = [hparams[key] for key in ("test_annotation", "enrol_annotation",
                                          "valid_annotation", "train_annotation")]
    max_trials = int(hparams["calibration_max_trials"])
    if given == "dev":
        source = hparams["valid_annotation"]
        trials = split_trials(_read_manifest(source), max_trials, hparams["seed"], source)
    else:
        source = given
        trials = read_trial_list(given)
        keep = sample_trials(trials["label"].to_numpy(), max_trials,
                             np.random.default_rng(hparams["seed"]))
        trials = trials.iloc[keep].reset_index(drop=True)
    n_tar = int(trials["label"].sum())
    if n_tar == 0 or n_tar == len(trials):
        kind = "target (label 1)" if n_tar == 0 else "non-target (label 0)"
        raise ValueError(
            f"{source} holds no {kind} trial: a calibration needs both. Add such trials to "
            "the list, or set calibration: none."
        )
    # Where each calibration utterance is listed (first manifest that has it).
    wanted = pd.unique(pd.concat([trials["enrol"], trials["test"]]).astype(str))
    found = {}
    rows = []
    for csv_path in manifests:
        if not os.path.isfile(csv_path):
            continue
        table = _read_manifest(csv_path)
        hits = table[table["ID"].isin(wanted) & ~table["ID"].isin(list(found))]
        for utt in hits["ID"]:
            found[utt] = csv_path
        rows.append(hits)
    unknown = [u for u in wanted if u not in found]
    if unknown:
        raise KeyError(
            f"{source}: {len(unknown)} utterance(s) of the calibration trials are in none of "
            f"the run's manifests ({', '.join(os.path.basename(m) for m in manifests)} in "
            f"{os.path.dirname(manifests[0])}), e.g. {unknown[:3]}. Name utterances by their "
            "manifest ID (VoxCeleb: spk/video/file.wav under wav/)."
        )
    listed = pd.concat(rows, ignore_index=True)
    _warn_shared_speakers(listed, test_trials, manifests[:2], source)
    table = embed_listed(found, test, model, opts)
    scores = score_trials(table, table, trials["enrol"].tolist(), trials["test"].tolist(),
                          cohort=cohort, top_k=hparams["top_k"], progress=False)
    seconds = {}
    if method == "qmf":
        lengths = pd.concat([_manifest_seconds(m, hparams) for m in set(found.values())])
        lengths = lengths[~lengths.index.duplicated()]
        seconds = {"enrol_seconds": _lookup(lengths, trials["enrol"], "calibration enrolment"),
                   "test_seconds": _lookup(lengths, trials["test"], "calibration test")}
    labels = trials["label"].to_numpy()
    try:
        cal = fit_calibration(scores, labels, prior, method, **seconds)
    except ValueError as err:
        raise ValueError(
            f"calibration on {source}: {err}"
            + (" (dev.csv holds training speakers, which the encoder separates far better than "
               "new ones: leave calibration_trials null to calibrate across speaker folds of "
               "the test trials)" if given == "dev" else "")
        ) from None
    summary = {
        "fitted_on": source,
        "source": "dev" if given == "dev" else "list",
        "trials": int(len(trials)),
        "targets": n_tar,
        "speakers": int(listed["spk_id"].nunique()) if "spk_id" in listed else None,
        "scoring": "AS-norm" if cohort is not None else "cosine",
        "cllr_on_fitted_trials": cllr(cal.llr(scores, **seconds), labels),
        "bayes_threshold": bayes_threshold(DECISION_PRIOR),
    }
    logger.info("Calibration (%s) fitted on %d trials (%d targets) of %s: %s",
                method, len(trials), n_tar, source, cal)
    return {"calibration": cal, "p_target": DECISION_PRIOR, "summary": summary}


def trial_speakers(trials, protocol, hparams):
    """The speakers (``spk_id``) of the enrolment and test side of each trial, two arrays.

    ``protocol`` says where the enrolment ids are: ``concat``, ``enrol.csv``;
    ``average``, the models of ``enrol_average.csv``.
    """
    enrol_csv = hparams["enrol_average_annotation"] if protocol == "average" \
        else hparams["enrol_annotation"]
    key = "model" if protocol == "average" else "ID"
    out = []
    for csv_path, ids, column in ((enrol_csv, trials["enrol"], key),
                                  (hparams["test_annotation"], trials["test"], "ID")):
        table = pd.read_csv(csv_path, dtype=str)
        if "spk_id" not in table:
            raise KeyError(f"{csv_path} has no spk_id column: calibrating across speaker folds "
                           "needs the speakers; give calibration_trials instead.")
        speaker = table.drop_duplicates(column).set_index(column)["spk_id"]
        out.append(_lookup(speaker, ids.astype(str), f"speaker of the {os.path.basename(csv_path)}"))
    return out[0].astype(str), out[1].astype(str)


def speaker_folds(speakers, folds, seed):
    """A seeded map of speakers (repeats are fine) to ``folds`` (>= 3) groups of near-equal size.

    Example
    -------
    >>> f = speaker_folds(["a", "b", "c", "d", "e"], 3, seed=0)
    >>> sorted(f), sorted(list(f.values()).count(k) for k in range(3))
    (['a', 'b', 'c', 'd', 'e'], [1, 2, 2])
    """
    if int(folds) < 3:
        raise ValueError(f"calibration_folds must be at least 3 (a trial between two folds is "
                         f"calibrated on the others), got {folds}")
    names = sorted(set(speakers))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[k]: int(rank % folds) for rank, k in enumerate(order)}


def cross_fit_test_calibration(trials, scores, protocol, hparams, calibration, seconds, scoring):
    """Calibrate the test trials across speaker folds (``calibration_trials: null``).

    Each trial's LLR comes from a map fitted on the other folds' trials
    (:func:`cross_fitted_llrs`): the Cllr and actDCF then estimate how the map
    does on new speakers. The exported map is fitted on all the trials.

    Arguments
    ---------
    trials, scores : pandas.DataFrame, numpy.ndarray
        The test trials and their raw scores.
    protocol, hparams : str, dict
        Enrolment protocol and the verification YAML.
    calibration, seconds : dict, tuple
        ``method`` and ``prior``; ``(enrol_seconds, test_seconds)`` for ``qmf``.
    scoring : str
        ``cosine`` or ``AS-norm`` (recorded).

    Returns
    -------
    llrs, fitted : numpy.ndarray, dict
        The cross-fitted LLRs; ``calibration`` (fitted on all trials),
        ``p_target``, ``summary``.
    """
    folds = int(hparams["calibration_folds"])
    method, prior = calibration["method"], calibration["prior"]
    labels = trials["label"].to_numpy().astype(int)
    spk_e, spk_t = trial_speakers(trials, protocol, hparams)
    fold = speaker_folds(np.concatenate([spk_e, spk_t]), folds, hparams["seed"])
    enrol_fold = np.array([fold[s] for s in spk_e])
    test_fold = np.array([fold[s] for s in spk_t])
    where = hparams["trials_annotation"]
    max_trials = int(hparams["calibration_max_trials"])
    try:
        llrs, fits = cross_fitted_llrs(scores, labels, enrol_fold, test_fold, prior, method,
                                       *seconds, max_trials=max_trials, seed=hparams["seed"])
        chosen = sample_trials(labels, max_trials, np.random.default_rng(hparams["seed"]))
        cal = fit_calibration(scores[chosen], labels[chosen], prior, method,
                              *(v[chosen] for v in seconds))
    except ValueError as err:
        raise ValueError(
            f"calibration across {folds} speaker folds of {where}: {err}. Give a list of other "
            "speakers' trials as calibration_trials, fewer calibration_folds (at least 3), or "
            "set calibration: none."
        ) from None
    summary = {
        "fitted_on": where,
        "source": "test folds",
        "folds": folds,
        "trials": int(len(trials)),
        "targets": int(labels.sum()),
        "fitted_on_trials": int(len(chosen)),
        "speakers": len(fold),
        "scoring": scoring,
        "cllr_on_fitted_trials": cllr(cal.llr(scores, *seconds), labels),
        "bayes_threshold": bayes_threshold(DECISION_PRIOR),
        "fold_fits": [{"folds": [i, j], "fitted_on_trials": n, "weights": list(c.weights),
                       "offset": c.offset} for (i, j), (c, n) in sorted(fits.items())],
    }
    logger.info("Calibration (%s) of %s across %d speaker folds; for the exported model: %s",
                method, where, folds, cal)
    return llrs, {"calibration": cal, "p_target": DECISION_PRIOR, "summary": summary}


def _warn_shared_speakers(listed, test_trials, eval_manifests, source):
    """Warn when calibration and test trials share speakers."""
    if "spk_id" not in listed:
        return
    test_ids = set(test_trials["enrol"].astype(str)) | set(test_trials["test"].astype(str))
    test_speakers = set()
    for csv_path in eval_manifests:
        if os.path.isfile(csv_path):
            table = _read_manifest(csv_path)
            if "spk_id" in table:
                test_speakers |= set(table.loc[table["ID"].isin(test_ids), "spk_id"].dropna())
    shared = sorted(set(listed["spk_id"].dropna()) & test_speakers)
    if shared:
        logger.warning(
            "The calibration trials of %s share %d speaker(s) with the test trials (e.g. %s): "
            "the Cllr and actDCF reported on the test trials are then optimistic.",
            source, len(shared), shared[:3])
