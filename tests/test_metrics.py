"""Tests for sb_angcl.evaluation.metrics: EER, minDCF, DET curve, per-condition tables.

Oracle: SpeechBrain's own ``EER`` / ``minDCF`` (O(N^2)).
"""

import numpy as np
import pytest
import torch
from speechbrain.utils.metric_stats import EER, minDCF

from sb_angcl.evaluation.metrics import compute_eer, compute_min_dcf, det_curve, metrics_table


def _score_set(seed):
    """Random target/non-target scores; most sets are rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    n_pos = int(rng.integers(1, 80))
    n_neg = n_pos if seed % 4 == 0 else int(rng.integers(1, 300))
    pos, neg = rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)
    if seed % 3 == 0:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    elif seed % 3 == 1:
        pos, neg = np.round(pos * 2) / 2, np.round(neg * 2) / 2
    return torch.tensor(pos, dtype=torch.float32), torch.tensor(
        neg, dtype=torch.float32
    )


def _sb_check(pos, neg):
    scores = torch.cat([pos, neg]).numpy()
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    perm = np.random.default_rng(len(scores)).permutation(len(scores))
    scores, labels = scores[perm], labels[perm]

    sb_eer, sb_th = EER(pos, neg)
    eer, th = compute_eer(scores, labels)
    assert eer == pytest.approx(sb_eer, abs=1e-4)
    assert th == pytest.approx(sb_th, abs=1e-6)

    for p, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.2, 2, 1), (0.5, 1, 3)]:
        sb_dcf, sb_dcf_th = minDCF(pos, neg, c_miss, c_fa, p)
        dcf, dcf_th = compute_min_dcf(scores, labels.astype(int), p, c_miss, c_fa)
        assert dcf == pytest.approx(sb_dcf / min(c_miss * p, c_fa * (1 - p)), abs=1e-4)
        assert dcf_th == pytest.approx(sb_dcf_th, abs=1e-6)


@pytest.mark.parametrize("seed", range(24))
def test_eer_min_dcf_equal_speechbrain(seed):
    _sb_check(*_score_set(seed))


def test_eer_min_dcf_equal_speechbrain_heavy_ties():
    # Scores on a grid of 13 values: nearly every score ties with another.
    # (A seeded loop rather than hypothesis: hypothesis' pytest plugin walks
    # sys.modules and trips over SpeechBrain's lazy optional modules.)
    rng = np.random.default_rng(123)
    for _ in range(60):
        n_pos, n_neg = rng.integers(1, 26, size=2)
        pos = torch.tensor(rng.integers(-6, 7, n_pos), dtype=torch.float32) / 4
        neg = torch.tensor(rng.integers(-6, 7, n_neg), dtype=torch.float32) / 4
        _sb_check(pos, neg)


def test_eer_min_dcf_larger_set_and_invariances():
    rng = np.random.default_rng(5)
    pos = torch.tensor(np.round(rng.normal(2, 1, 400), 2), dtype=torch.float32)
    neg = torch.tensor(np.round(rng.normal(0, 1, 1600), 2), dtype=torch.float32)
    _sb_check(pos, neg)
    scores = torch.cat([pos, neg]).double().numpy()
    labels = np.r_[np.ones(400), np.zeros(1600)]
    eer, _ = compute_eer(scores, labels)
    # A strictly increasing transform keeps every operating point.
    eer2, _ = compute_eer(np.exp(scores), labels)
    assert eer2 == pytest.approx(eer, abs=1e-12)
    # Accepting exactly "score > threshold" reproduces the reported rates.
    dcf, th = compute_min_dcf(scores, labels, 0.01)
    p_miss = np.mean(scores[labels == 1] <= th)
    p_fa = np.mean(scores[labels == 0] > th)
    assert dcf == pytest.approx((0.01 * p_miss + 0.99 * p_fa) / 0.01, abs=1e-9)


def test_eer_hand_computed():
    # Targets 0.9, 0.4; non-targets 0.5, 0.1, 0.0 -> at threshold 0.4: miss 1/2, fa 1/3.
    eer, th = compute_eer([0.9, 0.4, 0.5, 0.1, 0.0], [1, 1, 0, 0, 0])
    assert eer == pytest.approx((0.5 + 1 / 3) / 2)
    assert th == pytest.approx(0.4)
    assert compute_eer([3, 2, 1, 0], [True, True, False, False]) == (0.0, 1.0)


def test_min_dcf_accept_all_and_normalisation():
    # p_target 0.9: the best real threshold costs 0.45 but accepting every
    # trial costs 0.1 (= the normaliser), so the normalised minDCF is 1.
    dcf, th = compute_min_dcf([0.0, 1.0, 2.0], [1, 0, 1], p_target=0.9)
    assert dcf == pytest.approx(1.0) and th == float("-inf")
    dcf, th = compute_min_dcf([0.0, 1.0, 2.0], [1, 0, 1], p_target=0.5)
    assert dcf == pytest.approx(0.5 * 0.5 / 0.5) and th == 1.0
    perfect, _ = compute_min_dcf([1.0, 2.0, 0.0], [1, 1, 0])
    assert perfect == 0.0


def test_det_curve_monotone_and_grouped_ties():
    th, p_miss, p_fa = det_curve([0.1, 0.4, 0.4, 0.4, 0.8], [0, 1, 0, 1, 1])
    assert th.tolist() == [0.1, 0.4, 0.8]
    assert p_miss.tolist() == [0.0, 2 / 3, 1.0]
    assert p_fa.tolist() == [0.5, 0.0, 0.0]


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 2], "0/1"),
        ([0.1, 0.2, 0.3], [1, 0], "labels"),
    ],
)
def test_metric_input_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        compute_min_dcf(scores, labels)


def test_metrics_table_per_condition():
    rng = np.random.default_rng(10)
    n = 600
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.5 * labels
    genre = rng.choice(["drama", "interview", "singing"], size=n)
    genre[:5] = "solo"
    labels[:5] = True  # "solo": targets only -> NaN metrics
    df = metrics_table(scores, labels, {"genre": genre})
    assert list(df.columns) == [
        "condition",
        "value",
        "n_trials",
        "n_target",
        "EER",
        "minDCF",
    ]
    assert df.iloc[0][["condition", "value", "n_trials", "n_target"]].tolist() == [
        "all",
        "all",
        n,
        labels.sum(),
    ]
    assert df.iloc[0]["EER"] == pytest.approx(compute_eer(scores, labels)[0])
    assert df.iloc[0]["minDCF"] == pytest.approx(compute_min_dcf(scores, labels)[0])
    per = df[df.condition == "genre"].set_index("value")
    assert sorted(per.index) == ["drama", "interview", "singing", "solo"]
    assert per.n_trials.sum() == n
    for g in ["drama", "interview", "singing"]:
        m = genre == g
        assert per.loc[g, "EER"] == pytest.approx(compute_eer(scores[m], labels[m])[0])
        assert per.loc[g, "minDCF"] == pytest.approx(
            compute_min_dcf(scores[m], labels[m])[0]
        )
    assert np.isnan(per.loc["solo", "EER"]) and per.loc["solo", "n_target"] == 5
    with pytest.raises(ValueError, match="labels for"):
        metrics_table(scores, labels, {"bad": genre[:10]})
