"""Tests for sb_angcl.evaluation.calibration and calibrated verification.

Oracles: brute-force float64 loops written here (Cllr, actual DCF, and min
Cllr through the min-max formula of isotonic regression rather than
pool-adjacent-violators), ``scipy.optimize.minimize`` on the prior-weighted
logistic objective, and the closed-form LLR of two Gaussians. Then the
recipe end to end: ``verify.py`` on the built-in corpus with a calibration
list writes ``scores_calibrated.txt``, the new metrics columns and the
exported folder's calibration, which SpeechBrain loads offline.
"""

import json
import math
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize
from test_recipes import ROWS, TMP, corpus, run_row  # noqa: F401 (corpus is a fixture)

from sb_angcl.evaluation.calibrated import Calibration, bayes_threshold, calibration_features
from sb_angcl.evaluation.calibration import (
    cross_fit_test_calibration,
    cross_fitted_llrs,
    fit_calibration,
    fit_score_calibration,
    read_trial_list,
    speaker_folds,
    split_trials,
    trial_speakers,
)
from sb_angcl.evaluation.metrics import (
    act_dcf,
    cllr,
    compute_min_dcf,
    metrics_table,
    min_cllr,
    pav_llrs,
)
from sb_angcl.evaluation.scoring import EmbeddingTable, enrolment_seconds


# ------------------------------------------------------------ references
def _softplus(x):
    """log(1 + e^x) for one float, without overflow."""
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


def ref_cllr(llrs, labels):
    tar = [v for v, y in zip(llrs, labels) if y]
    non = [v for v, y in zip(llrs, labels) if not y]
    c_tar = sum(0.0 if v == math.inf else _softplus(-v) for v in tar) / len(tar)
    c_non = sum(0.0 if v == -math.inf else _softplus(v) for v in non) / len(non)
    return (c_tar + c_non) / (2 * math.log(2))


def ref_act_dcf(llrs, labels, p, c_miss=1.0, c_fa=1.0):
    th = math.log((1 - p) * c_fa / (p * c_miss))
    n_tar = sum(1 for y in labels if y)
    n_non = len(labels) - n_tar
    miss = sum(1 for v, y in zip(llrs, labels) if y and not v > th)
    fa = sum(1 for v, y in zip(llrs, labels) if not y and v > th)
    cost = c_miss * p * miss / n_tar + c_fa * (1 - p) * fa / n_non
    return cost / min(c_miss * p, c_fa * (1 - p))


def ref_min_cllr(scores, labels):
    """Isotonic posteriors by the min-max formula over blocks of equal scores, then Cllr."""
    values = sorted({float(s) for s in scores})
    tar = [sum(1 for s, y in zip(scores, labels) if s == v and y) for v in values]
    cnt = [sum(1 for s in scores if s == v) for v in values]
    cum_tar, cum_cnt = [0], [0]
    for t, c in zip(tar, cnt):
        cum_tar.append(cum_tar[-1] + t)
        cum_cnt.append(cum_cnt[-1] + c)
    fitted = []
    for i in range(len(values)):
        best = -math.inf
        for j in range(i + 1):
            worst = math.inf
            for k in range(i, len(values)):
                mean = (cum_tar[k + 1] - cum_tar[j]) / (cum_cnt[k + 1] - cum_cnt[j])
                worst = min(worst, mean)
            best = max(best, worst)
        fitted.append(best)
    n_tar = sum(1 for y in labels if y)
    prior_log_odds = math.log(n_tar / (len(labels) - n_tar))
    posterior = dict(zip(values, fitted))
    llrs = []
    for s in scores:
        p = posterior[float(s)]
        log_odds = math.inf if p == 1 else (-math.inf if p == 0 else math.log(p / (1 - p)))
        llrs.append(log_odds - prior_log_odds)
    return ref_cllr(llrs, labels)


def _score_set(seed):
    """Random scores; many sets rounded so that scores tie within and across classes."""
    rng = np.random.default_rng(seed)
    n_tar, n_non = int(rng.integers(1, 30)), int(rng.integers(1, 70))
    scores = np.r_[rng.normal(2.0, 1.5, n_tar), rng.normal(-1.0, 1.5, n_non)]
    if seed % 3 == 0:
        scores = np.round(scores)
    elif seed % 3 == 1:
        scores = np.round(scores, 1)
    labels = np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)]
    perm = rng.permutation(len(scores))
    return scores[perm], labels[perm]


DEGENERATE = {
    "all targets equal": ([1.0, 1.0, 1.0, 0.2, 1.5, -0.3], [1, 1, 1, 0, 0, 0]),
    "every score equal": ([0.5] * 5, [1, 0, 1, 0, 0]),
    "ties across classes": ([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, -1.0], [1, 0, 1, 0, 1, 1, 0]),
    "one target": ([3.0, 0.1, 0.2, 2.5, -1.0], [1, 0, 0, 0, 0]),
    "one non-target": ([3.0, 0.1, 0.2, 2.5, -1.0], [1, 1, 1, 1, 0]),
    "one of each": ([0.3, 0.7], [0, 1]),
    "reversed": ([0.1, 0.2, 0.9, 1.0], [1, 1, 0, 0]),
    "huge llrs": ([800.0, -800.0, 5.0, -5.0], [1, 0, 0, 1]),
}


@pytest.mark.parametrize("seed", range(20))
def test_measures_equal_brute_force_on_random_sets(seed):
    scores, labels = _score_set(seed)
    assert cllr(scores, labels) == pytest.approx(ref_cllr(scores, labels), rel=1e-12, abs=1e-12)
    assert min_cllr(scores, labels) == pytest.approx(ref_min_cllr(scores, labels), rel=1e-10, abs=1e-12)
    for p in (0.01, 0.1, 0.5, 0.9):
        assert act_dcf(scores, labels, p) == pytest.approx(ref_act_dcf(scores, labels, p), abs=1e-12)
    assert act_dcf(scores, labels, 0.2, 2.0, 0.5) == pytest.approx(
        ref_act_dcf(scores, labels, 0.2, 2.0, 0.5), abs=1e-12)


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_measures_equal_brute_force_on_degenerate_sets(name):
    scores, labels = DEGENERATE[name]
    labels = [bool(y) for y in labels]
    assert cllr(scores, labels) == pytest.approx(ref_cllr(scores, labels), rel=1e-12, abs=1e-12)
    assert min_cllr(scores, labels) == pytest.approx(ref_min_cllr(scores, labels), rel=1e-10, abs=1e-12)
    for p in (0.01, 0.5):
        assert act_dcf(scores, labels, p) == pytest.approx(ref_act_dcf(scores, labels, p), abs=1e-12)


def test_measure_properties():
    rng = np.random.default_rng(3)
    scores, labels = _score_set(7)
    # min Cllr: invariant to increasing maps, never above the Cllr of any of them.
    for transform in (lambda s: s, lambda s: 3 * s - 1, np.tanh, lambda s: s ** 3):
        llrs = transform(scores)
        assert min_cllr(llrs, labels) == pytest.approx(min_cllr(scores, labels), abs=1e-12)
        assert min_cllr(llrs, labels) <= cllr(llrs, labels) + 1e-12
    # The PAV map is itself an LLR: its Cllr is the min Cllr, and it is monotone.
    pav = pav_llrs(scores, labels)
    assert cllr(pav, labels) == pytest.approx(min_cllr(scores, labels))
    order = np.argsort(scores, kind="stable")
    assert (pav[order][1:] >= pav[order][:-1]).all()
    # Equal scores get equal LLRs (ties never split).
    for value in np.unique(scores):
        assert len(np.unique(pav[scores == value])) == 1
    # LLR 0 everywhere costs exactly 1 bit; actDCF of always rejecting at p=0.01 is 1.
    assert cllr(np.zeros(5), [1, 0, 0, 1, 0]) == pytest.approx(1.0)
    assert act_dcf(np.zeros(5), [1, 0, 0, 1, 0], 0.01) == pytest.approx(1.0)
    # actDCF >= minDCF on the same LLRs (the Bayes threshold is one of the thresholds).
    for seed in range(10):
        s, y = _score_set(seed)
        llrs = 2.5 * s + rng.normal()
        for p in (0.01, 0.05, 0.5):
            assert act_dcf(llrs, y, p) >= compute_min_dcf(llrs, y, p)[0] - 1e-12


@pytest.mark.parametrize(
    "values, labels, match",
    [([0.1, 0.2], [0, 0], "no target"), ([0.1, 0.2], [1, 1], "no non-target"),
     ([0.1, float("nan")], [1, 0], "NaN"), ([0.1, 0.2, 0.3], [1, 0], "labels"),
     ([0.1, 0.2], [1, 3], "0/1")],
)
def test_measure_input_errors(values, labels, match):
    for fn in (cllr, min_cllr, act_dcf):
        with pytest.raises(ValueError, match=match):
            fn(values, labels)


# ------------------------------------------------------------------ the fit
def _objective(params, x, labels, prior):
    """The prior-weighted logistic loss of the log-odds x @ params (float64), and its gradient."""
    eta = x @ params
    tar, non = labels, ~labels
    loss = prior * np.mean(np.logaddexp(0, -eta[tar])) + (1 - prior) * np.mean(np.logaddexp(0, eta[non]))
    sig = 1 / (1 + np.exp(-eta))
    grad = (prior * (x[tar] * (sig[tar] - 1)[:, None]).mean(0)
            + (1 - prior) * (x[non] * sig[non][:, None]).mean(0))
    return loss, grad


def _fixed_set():
    rng = np.random.default_rng(2024)
    n_tar, n_non = 150, 900
    scores = np.r_[rng.normal(0.55, 0.15, n_tar), rng.normal(0.1, 0.12, n_non)]
    labels = np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)]
    enrol = rng.uniform(1.5, 12.0, n_tar + n_non)
    test = rng.uniform(1.5, 12.0, n_tar + n_non)
    # Short trials score less apart: a duration effect for qmf to find.
    scores = scores - 0.05 * np.log(12.0 / np.minimum(enrol, test)) * np.where(labels, 1, -1)
    return scores, labels, enrol, test


@pytest.mark.parametrize("method", ["linear", "qmf"])
@pytest.mark.parametrize("prior", [0.5, 0.01, 0.2])
def test_fit_equals_scipy_minimize(method, prior):
    scores, labels, enrol, test = _fixed_set()
    seconds = (enrol, test) if method == "qmf" else (None, None)
    cal = fit_calibration(scores, labels, prior, method, *seconds)
    x = np.c_[calibration_features(method, scores, *seconds), np.ones(len(scores))]
    result = minimize(_objective, np.zeros(x.shape[1]), args=(x, labels, prior), jac=True,
                      method="BFGS", options={"gtol": 1e-12, "maxiter": 10000})
    assert np.abs(result.jac).max() < 1e-7, result
    expected_weights, expected_offset = result.x[:-1], result.x[-1] - math.log(prior / (1 - prior))
    np.testing.assert_allclose(cal.weights, expected_weights, atol=1e-4, rtol=0)
    assert cal.offset == pytest.approx(expected_offset, abs=1e-4)
    assert cal.method == method and cal.prior == prior
    llrs = cal.llr(scores, *seconds)
    np.testing.assert_allclose(llrs, x @ result.x - math.log(prior / (1 - prior)), atol=1e-3)


def test_fit_is_independent_of_class_counts_and_recovers_a_known_llr():
    scores, labels, _, _ = _fixed_set()
    cal = fit_calibration(scores, labels, 0.3)
    # Repeating every non-target twice changes nothing: each class weighs its prior.
    doubled = np.r_[scores, scores[~labels]]
    cal2 = fit_calibration(doubled, np.r_[labels, np.zeros((~labels).sum(), bool)], 0.3)
    assert cal2.weights[0] == pytest.approx(cal.weights[0], abs=1e-8)
    assert cal2.offset == pytest.approx(cal.offset, abs=1e-8)
    # Two Gaussians of equal variance: the true LLR is affine,
    # (mu_t - mu_n) / var * s - (mu_t^2 - mu_n^2) / (2 var) = 8 s - 3.2.
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(0.5, np.sqrt(0.025), 40000), rng.normal(0.3, np.sqrt(0.025), 200000)]
    y = np.r_[np.ones(40000, bool), np.zeros(200000, bool)]
    for prior in (0.5, 0.05):
        fitted = fit_calibration(s, y, prior)
        assert fitted.weights[0] == pytest.approx(8.0, rel=0.05)
        assert fitted.offset == pytest.approx(-3.2, abs=0.1)
    # After calibration the Cllr is close to the best a monotone map gives.
    llrs = fitted.llr(s)
    assert cllr(llrs, y) - min_cllr(s, y) < 0.005


def test_fit_errors_and_round_trip():
    with pytest.raises(ValueError, match="perfectly separated"):
        fit_calibration([0.9, 0.8, 0.1], [1, 1, 0], 0.5)
    with pytest.raises(ValueError, match="no target"):
        fit_calibration([0.9, 0.8, 0.1], [0, 0, 0], 0.5)
    with pytest.raises(ValueError, match="needs enrol_seconds"):
        fit_calibration([0.9, 0.2, 0.1, 0.5], [1, 1, 0, 0], 0.5, "qmf")
    with pytest.raises(ValueError, match="positive"):
        fit_calibration([0.9, 0.2, 0.1, 0.5], [1, 1, 0, 0], 0.5, "qmf", [1, 2, 0, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="must be one of"):
        fit_calibration([0.9, 0.2, 0.1, 0.5], [1, 1, 0, 0], 0.5, "isotonic")
    cal = Calibration("qmf", (9.0, -0.5, 0.25), -3.0, 0.01)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    assert cal.llr([0.5], [math.e], [1.0]).tolist() == [9 * 0.5 - 0.5 - 3.0]
    linear = Calibration("linear", (10.0,), -5.0, 0.01)
    th = linear.score_threshold(0.01)
    assert linear.llr([th])[0] == pytest.approx(bayes_threshold(0.01))
    assert cal.score_threshold(0.01) is None


@pytest.mark.parametrize("method", ["linear", "qmf"])
def test_cross_fitted_llrs_equal_a_fit_per_trial_without_its_speakers(method):
    rng = np.random.default_rng(5)
    n_spk, n = 12, 900
    spk_e, spk_t = rng.integers(0, n_spk, n), rng.integers(0, n_spk, n)
    spk_t[: n // 3] = spk_e[: n // 3]
    labels = spk_e == spk_t
    scores = rng.normal(size=n) + 2.0 * labels
    dur_e, dur_t = rng.uniform(1, 10, n), rng.uniform(1, 10, n)
    fold = rng.permutation(n_spk) % 4
    seconds = (dur_e, dur_t) if method == "qmf" else (None, None)
    llrs, fits = cross_fitted_llrs(scores, labels, fold[spk_e], fold[spk_t], 0.2, method, *seconds)
    for k in rng.choice(n, 40, replace=False):  # the reference: one fit per trial
        own = {fold[spk_e[k]], fold[spk_t[k]]}
        others = np.array([fold[spk_e[m]] not in own and fold[spk_t[m]] not in own for m in range(n)])
        part = [None if v is None else v[others] for v in seconds]
        cal = fit_calibration(scores[others], labels[others], 0.2, method, *part)
        one = [None if v is None else v[[k]] for v in seconds]
        assert llrs[k] == pytest.approx(cal.llr(scores[[k]], *one)[0], abs=1e-8)
        assert not {spk_e[k], spk_t[k]} & (set(spk_e[others]) | set(spk_t[others]))
    assert len(fits) == 10  # 4 folds: 4 same-fold and 6 cross-fold pairs
    with pytest.raises(ValueError, match="no target trial lies outside the speaker folds 0 and 0"):
        cross_fitted_llrs(scores, labels, np.zeros(n, int), np.where(labels, 0, 1), 0.2)


def test_metrics_table_with_llrs_per_condition():
    rng = np.random.default_rng(11)
    n = 500
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.5 * labels
    llrs = 2.0 * scores - 1.0 + 0.3 * rng.normal(size=n)  # not a monotone map of the scores
    genre = rng.choice(["a", "b"], size=n)
    genre[:4] = "solo"
    labels[:4] = True
    table = metrics_table(scores, labels, {"genre": genre}, llrs=llrs)
    assert list(table.columns[-3:]) == ["Cllr", "minCllr", "actDCF"]
    for value in ("a", "b"):
        row = table[(table.condition == "genre") & (table.value == value)].iloc[0]
        m = genre == value
        assert row.Cllr == pytest.approx(ref_cllr(llrs[m], labels[m]))
        assert row.minCllr == pytest.approx(ref_min_cllr(scores[m], labels[m]))  # of the scores
        assert row.actDCF == pytest.approx(ref_act_dcf(llrs[m], labels[m], 0.01))
    assert table[table.value == "solo"][["Cllr", "minCllr", "actDCF"]].isna().all(axis=None)
    with pytest.raises(ValueError, match="LLRs for"):
        metrics_table(scores, labels, llrs=llrs[:10])


# ------------------------------------------------------ calibration trials
def test_read_trial_list_formats_and_errors(tmp_path):
    text = tmp_path / "cal.txt"
    text.write_text("1 a/v/1.wav a/v/2.wav\n\n0 a/v/1.wav b/w/1.wav\n")
    csv = tmp_path / "cal.csv"
    csv.write_text("enrol,test,label,extra\na/v/1.wav,a/v/2.wav,1,x\na/v/1.wav,b/w/1.wav,0,y\n")
    for path in (text, csv):
        table = read_trial_list(str(path))
        assert table.values.tolist() == [["a/v/1.wav", "a/v/2.wav", 1], ["a/v/1.wav", "b/w/1.wav", 0]]
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a b\nyes a b\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'yes a b' is not a trial"):
        read_trial_list(str(bad))
    with pytest.raises(FileNotFoundError, match="calibration_trials: .*missing.txt not found"):
        read_trial_list(str(tmp_path / "missing.txt"))


def test_split_trials_pairs():
    speakers = ["s1"] * 4 + ["s2"] * 3 + ["s3"] * 1 + ["s4"] * 2
    manifest = pd.DataFrame({"ID": [f"u{i}" for i in range(10)], "spk_id": speakers})
    spk = dict(zip(manifest.ID, manifest.spk_id))
    trials = split_trials(manifest, 1000, seed=1)
    pairs = {frozenset(p) for p in zip(trials.enrol, trials.test)}
    assert len(pairs) == len(trials)  # no pair twice, no utterance against itself
    assert all(len(p) == 2 for p in pairs)
    targets = trials[trials.label == 1]
    assert len(targets) == 6 + 3 + 0 + 1
    assert all(spk[e] == spk[t] for e, t in zip(targets.enrol, targets.test))
    non = trials[trials.label == 0]
    assert len(non) == 45 - 10 and all(spk[e] != spk[t] for e, t in zip(non.enrol, non.test))
    small = split_trials(manifest, 12, seed=1)
    assert (small.label == 1).sum() == 6 and len(small) == 12
    assert small.equals(split_trials(manifest, 12, seed=1))
    big = pd.DataFrame({"ID": [f"u{i}" for i in range(400)], "spk_id": [f"s{i // 4}" for i in range(400)]})
    drawn = split_trials(big, 2000, seed=0)
    assert (drawn.label == 1).sum() == 600 and len(drawn) == 2000
    assert len({frozenset(p) for p in zip(drawn.enrol, drawn.test)}) == 2000
    singles = pd.DataFrame({"ID": ["a", "b"], "spk_id": ["x", "y"]})
    with pytest.raises(ValueError, match="dev.csv: no speaker has two utterances.*calibration_trials"):
        split_trials(singles, 100, 0, "dev.csv")
    with pytest.raises(ValueError, match="dev.csv: it holds one speaker"):
        split_trials(singles.assign(spk_id="x"), 100, 0, "dev.csv")


def _hparams(tmp_path, given):
    save = tmp_path / "save"
    save.mkdir(exist_ok=True)
    rows = "ID,duration,wav,start,stop,spk_id\n"
    (save / "test.csv").write_text(rows + "t/v/1.wav,2.0,x,0,1,t\nt/w/2.wav,3.0,x,0,1,t\n")
    (save / "enrol.csv").write_text(rows + "t/v/1.wav,2.0,x,0,1,t\n")
    (save / "dev.csv").write_text(rows + "d/v/1.wav,2.0,x,0,1,d\ne/v/1.wav,2.0,x,0,1,e\n")
    (save / "train.csv").write_text(rows + "d/v/2.wav,2.0,x,0,1,d\n")
    return {"calibration": "linear", "calibration_prior": 0.01, "calibration_trials": given,
            "calibration_max_trials": 100, "calibration_folds": 3, "seed": 1, "top_k": 50,
            "scores_file": str(tmp_path / "scores.txt"),
            "trials_annotation": str(save / "trials.csv"),
            "test_annotation": str(save / "test.csv"), "enrol_annotation": str(save / "enrol.csv"),
            "valid_annotation": str(save / "dev.csv"), "train_annotation": str(save / "train.csv")}


def test_calibration_list_errors_name_the_file_and_the_fix(tmp_path):
    test = EmbeddingTable(["t/v/1.wav", "t/w/2.wav"], np.eye(2))
    trials = pd.DataFrame({"enrol": ["t/v/1.wav"], "test": ["t/w/2.wav"], "label": [1]})
    listed = tmp_path / "cal.txt"
    listed.write_text("1 d/v/1.wav d/v/2.wav\n0 d/v/1.wav x/y/3.wav\n")
    with pytest.raises(KeyError, match=r"cal.txt: 1 utterance\(s\).*\['x/y/3.wav'\].*manifest ID"):
        fit_score_calibration(_hparams(tmp_path, str(listed)), trials, test, None, {}, {})
    listed.write_text("0 d/v/1.wav e/v/1.wav\n")
    with pytest.raises(ValueError, match=r"cal.txt holds no target \(label 1\).*calibration: none"):
        fit_score_calibration(_hparams(tmp_path, str(listed)), trials, test, None, {}, {})
    listed.write_text("1 d/v/1.wav d/v/2.wav\n")
    with pytest.raises(ValueError, match=r"cal.txt holds no non-target \(label 0\)"):
        fit_score_calibration(_hparams(tmp_path, str(listed)), trials, test, None, {}, {})
    # dev.csv has one utterance per speaker: no target can be built from it.
    with pytest.raises(ValueError, match=r"dev.csv: no speaker has two utterances"):
        fit_score_calibration(_hparams(tmp_path, "dev"), trials, test, None, {}, {})


def test_dev_calibration_reuses_embeddings_and_explains_a_separated_fit(tmp_path, caplog):
    hparams = _hparams(tmp_path, "dev")
    rows = "ID,duration,wav,start,stop,spk_id\n"
    dev = [f"s{k}/v/{u}.wav,2.0,x,0,1,s{k}" for k in range(4) for u in range(3)]
    (tmp_path / "save" / "dev.csv").write_text(rows + "\n".join(dev) + "\n")
    ids = [line.split(",")[0] for line in dev]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    vectors = [centres[k] + 1.5 * rng.normal(size=8) for k in range(4) for _ in range(3)]
    # The dev utterances are in the embedding table given: nothing is embedded.
    test = EmbeddingTable(ids + ["t/v/1.wav", "t/w/2.wav"], np.r_[vectors, np.eye(8)[:2]])
    trials = pd.DataFrame({"enrol": ["t/v/1.wav"], "test": ["t/w/2.wav"], "label": [1]})
    fitted = fit_score_calibration(hparams, trials, test, None, {}, {})
    summary = fitted["summary"]
    assert summary["source"] == "dev" and summary["targets"] == 12 and summary["trials"] == 66
    assert summary["speakers"] == 4 and fitted["calibration"].weights[0] > 0
    # Separable trials: the error says why dev.csv is a poor source.
    separated = [centres[k] + 0.01 * rng.normal(size=8) for k in range(4) for _ in range(3)]
    test = EmbeddingTable(ids + ["t/v/1.wav", "t/w/2.wav"], np.r_[separated, np.eye(8)[:2]])
    with pytest.raises(ValueError, match="perfectly separated.*training speakers.*speaker folds"):
        fit_score_calibration(hparams, trials, test, None, {}, {})
    # A list naming test utterances shares the test speakers: a warning says so.
    listed = tmp_path / "cal.txt"
    listed.write_text("1 s0/v/0.wav s0/v/1.wav\n0 s0/v/0.wav s1/v/0.wav\n1 s1/v/0.wav s1/v/1.wav\n"
                      "0 s0/v/1.wav t/w/2.wav\n1 t/v/1.wav s2/v/1.wav\n0 s2/v/0.wav s3/v/1.wav\n")
    test = EmbeddingTable(ids + ["t/v/1.wav", "t/w/2.wav"], np.r_[vectors, np.eye(8)[:2]])
    with caplog.at_level("WARNING"):
        fit_score_calibration(dict(hparams, calibration_trials=str(listed)), trials,
                              test, None, {}, {})
    assert "share 1 speaker(s) with the test trials" in caplog.text


def test_cross_fit_test_calibration_over_speaker_folds(tmp_path):
    hparams = _hparams(tmp_path, None)
    rng = np.random.default_rng(1)
    spk = [f"p{k}" for k in range(9)]
    utts = [f"{s}/v/{u}.wav" for s in spk for u in range(4)]
    rows = "ID,duration,wav,start,stop,spk_id\n"
    listed = rows + "\n".join(f"{u},{2 + k % 3}.0,x,0,1,{u.split('/')[0]}" for k, u in enumerate(utts))
    (tmp_path / "save" / "test.csv").write_text(listed + "\n")
    (tmp_path / "save" / "enrol.csv").write_text(listed + "\n")
    pairs = [(a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]
    trials = pd.DataFrame(pairs, columns=["enrol", "test"])
    trials["label"] = (trials.enrol.str[:2] == trials.test.str[:2]).astype(int)
    scores = rng.normal(size=len(trials)) + 2.5 * trials.label.to_numpy()
    calibration = {"method": "linear", "prior": 0.01}
    llrs, fitted = cross_fit_test_calibration(trials, scores, "concat", hparams, calibration, (), "cosine")
    fold = speaker_folds(spk, 3, seed=1)
    f_e = trials.enrol.str[:2].map(fold).to_numpy()
    f_t = trials.test.str[:2].map(fold).to_numpy()
    # Each fit on a seeded sample of at most calibration_max_trials (100 here) of its trials.
    expected, fits = cross_fitted_llrs(scores, trials.label, f_e, f_t, 0.01, max_trials=100, seed=1)
    np.testing.assert_allclose(llrs, expected, atol=1e-12)
    assert all(n <= 100 for _, n in fits.values())
    uncapped, _ = cross_fitted_llrs(scores, trials.label, f_e, f_t, 0.01)
    assert np.abs(uncapped - llrs).max() > 1e-6  # the cap did change something here
    hparams_all = dict(hparams, calibration_max_trials=10**6)
    llrs_all, fitted_all = cross_fit_test_calibration(trials, scores, "concat", hparams_all,
                                                      calibration, (), "cosine")
    np.testing.assert_allclose(llrs_all, uncapped, atol=1e-12)
    # The exported map: all test trials (when they fit under the cap).
    assert fitted_all["calibration"] == fit_calibration(scores, trials.label, 0.01)
    summary = fitted["summary"]
    assert summary["source"] == "test folds" and summary["folds"] == 3 and summary["speakers"] == 9
    assert len(summary["fold_fits"]) == 6 and summary["fitted_on_trials"] == 100
    with pytest.raises(ValueError, match="calibration_folds must be at least 3"):
        cross_fit_test_calibration(trials, scores, "concat", hparams | {"calibration_folds": 2},
                                   calibration, (), "cosine")
    few = trials[trials.enrol.str[:2].isin(["p0", "p1"]) & trials.test.str[:2].isin(["p0", "p1"])]
    with pytest.raises(ValueError, match=r"speaker folds of .*trials.csv.*calibration_trials"):
        cross_fit_test_calibration(few, scores[few.index], "concat", hparams, calibration, (),
                                   "cosine")


def test_trial_speakers_and_enrolment_seconds_of_both_cnceleb_protocols(tmp_path):
    rows = "ID,duration,wav,start,stop,spk_id\n"
    (tmp_path / "enrol.csv").write_text(rows + "m1-enroll,40.0,x,0,1,m1\nm2-enroll,9.0,x,0,1,m2\n")
    (tmp_path / "test.csv").write_text(rows + "t/a.wav,3.0,x,0,1,m1\nt/b.wav,50.0,x,0,1,m3\n")
    (tmp_path / "avg.csv").write_text(
        "ID,duration,wav,start,stop,spk_id,model\n"
        "m1/u1.wav,20.0,x,0,1,m1,m1-enroll\nm1/u2.wav,45.0,x,0,1,m1,m1-enroll\n"
        "m2/u1.wav,9.0,x,0,1,m2,m2-enroll\n")
    hparams = {"enrol_annotation": str(tmp_path / "enrol.csv"), "eval_max_seconds": 30.0,
               "test_annotation": str(tmp_path / "test.csv"),
               "enrol_average_annotation": str(tmp_path / "avg.csv")}
    trials = pd.DataFrame({"enrol": ["m1-enroll", "m2-enroll"], "test": ["t/b.wav", "t/a.wav"]})
    for protocol in ("concat", "average"):
        enrol, test = trial_speakers(trials, protocol, hparams)
        assert enrol.tolist() == ["m1", "m2"] and test.tolist() == ["m3", "m1"]
    # Seconds the embedding sees: each utterance capped at eval_max_seconds, summed per model.
    assert enrolment_seconds("concat", hparams).to_dict() == {"m1-enroll": 30.0, "m2-enroll": 9.0}
    assert enrolment_seconds("average", hparams).to_dict() == {"m1-enroll": 50.0, "m2-enroll": 9.0}
    bad = pd.DataFrame({"enrol": ["m9-enroll"], "test": ["t/a.wav"]})
    with pytest.raises(KeyError, match="m9-enroll"):
        trial_speakers(bad, "concat", hparams)


# ------------------------------------------------------------ end to end
def _calibration_list(run_folder, path):
    """Trials among training utterances (speakers disjoint from the test trials'): for each
    training speaker every pair of its first four utterances, and as many cross-speaker pairs."""
    train = pd.read_csv(os.path.join(run_folder, "save", "train.csv"), dtype=str)
    firsts = train.groupby("spk_id")["ID"].apply(lambda s: list(s)[:4])
    lines = []
    for utts in firsts:
        lines += [f"1 {a} {b}" for i, a in enumerate(utts) for b in utts[i + 1:]]
    speakers = list(firsts.index)
    for k, spk in enumerate(speakers):
        for other in speakers[k + 1:]:
            lines += [f"0 {a} {b}" for a, b in zip(firsts[spk][:2], firsts[other][:2])]
    with open(path, "w") as fout:
        fout.write("\n".join(lines) + "\n")
    return path


def _read_scores(path):
    return pd.read_csv(path, sep=" ", header=None, names=["enrol", "test", "score", "label"],
                       dtype={"enrol": str, "test": str})


def test_verify_writes_calibrated_scores_and_the_model_decides_with_them(corpus):  # noqa: F811
    rows = dict(ROWS)
    trained = os.path.join(TMP, "VoxCeleb_row_02")
    if not os.path.isfile(os.path.join(trained, "inference", "README.md")):
        run_row("VoxCeleb_row_02", rows["VoxCeleb_row_02"])
    out = os.path.join(TMP, "calibration_e2e")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(trained, out)
    cal_list = _calibration_list(out, os.path.join(TMP, "calibration_trials.txt"))
    flags = rows["VoxCeleb_row_03"]["test_debug_flags"]
    flags = re.sub(r"--output_folder=\S+", "--output_folder=tests/tmp/calibration_e2e", flags)
    flags = re.sub(r" --(score_norm|cohort_size|top_k|calibration)=\S+", "", flags)
    _, proc = run_row("calibration_e2e", dict(rows["VoxCeleb_row_03"], test_debug_flags=(
        flags + f" --calibration_trials={cal_list}")))

    raw = _read_scores(os.path.join(out, "scores.txt"))
    llr = _read_scores(os.path.join(out, "scores_calibrated.txt"))
    trials = pd.read_csv(os.path.join(out, "save", "trials.csv"), dtype=str)
    assert len(llr) == len(trials) and (llr.enrol == raw.enrol).all() and (llr.label == raw.label).all()
    fitted = json.load(open(os.path.join(out, "calibration.json")))
    assert fitted["method"] == "linear" and fitted["fitted_on"] == cal_list
    assert fitted["source"] == "list"
    assert fitted["targets"] == sum(1 for line in open(cal_list) if line.startswith("1 "))
    a, b = fitted["weights"][0], fitted["offset"]
    np.testing.assert_allclose(llr.score, a * raw.score + b, atol=1e-5 * (1 + abs(a)))

    metrics = pd.read_csv(os.path.join(out, "metrics.csv"))
    assert {"Cllr", "minCllr", "actDCF"} <= set(metrics.columns)
    overall = metrics.iloc[0]
    labels = llr.label.to_numpy().astype(bool)
    assert overall.Cllr == pytest.approx(ref_cllr(llr.score.tolist(), labels), abs=1e-4)
    assert overall.actDCF == pytest.approx(ref_act_dcf(llr.score.tolist(), labels, 0.01), abs=1e-9)
    assert overall.minCllr <= overall.Cllr + 1e-9
    assert (metrics.condition == "session").any() and metrics.Cllr.notna().sum() > 1
    assert "Cllr" in proc.stdout and "actDCF" in proc.stdout
    assert re.search(r"actDCF\(0\.01\) \d\.\d{4}  Cllr \d+\.\d{4}  minCllr \d\.\d{4}", proc.stdout)

    # The exported folder: the block in hyperparams.yaml, custom.py, the card.
    folder = os.path.join(out, "inference")
    card = open(os.path.join(folder, "README.md")).read()
    assert "Not calibrated yet" not in card and "`linear` calibration fitted" in card
    assert re.search(r"\| concat \| cosine \|.*\| linear \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", card)
    assert os.path.isfile(os.path.join(folder, "custom.py"))

    from speechbrain.inference.interfaces import foreign_class
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.fetching import FetchConfig

    from sb_angcl.evaluation.calibrated import CalibratedSpeakerRecognition

    offline = FetchConfig(allow_network=False)
    test = pd.read_csv(os.path.join(out, "save", "test.csv"))
    wav1, wav2 = test["wav"][0], test["wav"][2]
    stock = SpeakerRecognition.from_hparams(
        source=folder, savedir=os.path.join(TMP, "cal_stock"), fetch_config=offline)
    cosine, _ = stock.verify_files(wav1, wav2)
    model = CalibratedSpeakerRecognition.from_hparams(
        source=folder, savedir=os.path.join(TMP, "cal_model"), fetch_config=offline)
    score, decision = model.verify_files(wav1, wav2)
    assert float(score) == pytest.approx(a * float(cosine) + b, abs=1e-4 * (1 + abs(a)))
    assert bool(decision) == (float(score) > bayes_threshold(0.01))
    assert model.verify_files(wav1, wav2)[0].shape == cosine.shape
    foreign = foreign_class(source=folder, pymodule_file="custom.py",
                            classname="CalibratedSpeakerRecognition",
                            savedir=os.path.join(TMP, "cal_foreign"), fetch_config=offline)
    assert float(foreign.verify_files(wav1, wav2)[0]) == pytest.approx(float(score), abs=1e-5)
    # A threshold given on the LLR scale is used as it is.
    a1, a2 = model.load_audio(wav1), model.load_audio(wav2)
    n = min(len(a1), len(a2))
    wavs = torch.stack([a1[:n], a2[:n]])
    llrs, accepted = model.verify_batch(wavs, wavs.flip(0), threshold=float("-inf"))
    assert llrs.shape == (2, 1) and accepted.all()
    assert not model.verify_batch(wavs, wavs.flip(0), threshold=float("inf"))[1].any()

    # qmf: the log durations enter the map, in verify.py and in the exported model alike.
    run_row("calibration_e2e", dict(rows["VoxCeleb_row_03"], test_debug_flags=(
        flags + f" --calibration_trials={cal_list} --calibration=qmf")))
    fitted = json.load(open(os.path.join(out, "calibration.json")))
    assert fitted["features"] == ["score", "log_enrol_seconds", "log_test_seconds"]
    w, b = fitted["weights"], fitted["offset"]
    raw = _read_scores(os.path.join(out, "scores.txt"))
    llr = _read_scores(os.path.join(out, "scores_calibrated.txt"))
    listed = pd.concat([pd.read_csv(os.path.join(out, "save", f"{name}.csv"))
                        for name in ("enrol", "test")])
    seconds = dict(zip(listed["ID"], listed["duration"].clip(upper=30.0)))
    expected = (w[0] * raw.score + w[1] * np.log(raw.enrol.map(seconds))
                + w[2] * np.log(raw.test.map(seconds)) + b)
    np.testing.assert_allclose(llr.score, expected, atol=1e-4 * (1 + np.abs(w).sum()))
    model = CalibratedSpeakerRecognition.from_hparams(
        source=folder, savedir=os.path.join(TMP, "cal_model_qmf"), fetch_config=offline)
    score, _ = model.verify_files(wav1, wav2)
    d1, d2 = (len(model.load_audio(p)) / 16000 for p in (wav1, wav2))
    assert float(score) == pytest.approx(
        w[0] * float(cosine) + w[1] * math.log(d1) + w[2] * math.log(d2) + b, abs=1e-3)

    # The default (across speaker folds of the test trials) needs more test speakers than this
    # corpus has: verify still scores, says why there is no calibration, and leaves no stale
    # calibrated scores from the runs above.
    _, proc = run_row("calibration_e2e", dict(rows["VoxCeleb_row_03"], test_debug_flags=flags))
    assert "No calibration: calibration across 10 speaker folds" in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(out, "scores_calibrated.txt"))
    assert not os.path.exists(os.path.join(out, "calibration.json"))
    metrics = pd.read_csv(os.path.join(out, "metrics.csv"))
    assert metrics.iloc[0].actDCF == pytest.approx(  # of the raw scores taken as LLRs
        ref_act_dcf(raw.score.tolist(), raw.label.astype(bool).tolist(), 0.01))
