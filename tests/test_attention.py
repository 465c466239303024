"""Class-aware attention of :mod:`sb_angcl.objective.losses` against a brute force of DESIGN.md.

The oracle computes, in Python floats, ``a_j = softmax(cos_j / T_att)[y_j]``,
``A_in = min(a_i, a_n)`` and ``w_in = |N(i)| A_in / sum_n' A_in'`` over each
anchor's negatives (ones elsewhere).
"""

import math

import pytest
import torch

from sb_angcl.objective.losses import (
    AngularSupConLoss,
    class_confidence,
    negative_weight_spread,
    pair_weights_from_confidence,
)


def attention_weights(t_att, cos, labels):
    """The negative-pair weights AngularSupConLoss builds at attention temperature ``t_att``."""
    confidence = AngularSupConLoss(0.2, 0.07, attention_temperature=t_att).confidence(cos, labels)
    n = labels.numel()
    return torch.ones(n, n) if confidence is None else pair_weights_from_confidence(confidence, labels)


def brute_confidence(cos, labels, t_att):
    out = []
    for row, y in zip(cos.double().tolist(), labels.reshape(-1).tolist()):
        top = max(v / t_att for v in row)
        exps = [math.exp(v / t_att - top) for v in row]
        out.append(exps[y] / sum(exps))
    return out


def brute_weights(conf, labels):
    y = labels.reshape(-1).tolist()
    n = len(y)
    w = [[1.0] * n for _ in range(n)]
    for i in range(n):
        neg = [k for k in range(n) if y[k] != y[i]]
        pair = {k: min(conf[i], conf[k]) for k in neg}
        total = sum(pair.values())
        if total <= 0:
            continue
        for k in neg:
            w[i][k] = len(neg) * pair[k] / total
    return torch.tensor(w, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("t_att", [0.05, 0.3, 1.0, 10.0])
def test_weights_match_brute_force(seed, t_att):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(3, 20, (1,), generator=gen))
    c = int(torch.randint(2, 12, (1,), generator=gen))
    labels = torch.randint(0, c, (n,), generator=gen)
    if labels.unique().numel() < 2:
        labels[0] = (labels[0] + 1) % c
    cos = torch.rand(n, c, generator=gen) * 2 - 1
    conf = class_confidence(cos, labels, t_att)
    want_conf = brute_confidence(cos, labels, t_att)
    torch.testing.assert_close(
        conf.double(),
        torch.tensor(want_conf, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-7,
    )
    w = attention_weights(t_att, cos, labels)
    torch.testing.assert_close(
        w.double(), brute_weights(want_conf, labels), rtol=1e-4, atol=1e-6
    )


def test_mean_one_over_negatives_and_ones_elsewhere():
    gen = torch.Generator().manual_seed(9)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4])
    cos = torch.rand(9, 5, generator=gen) * 2 - 1
    w = attention_weights(0.1, cos, labels)
    neg = labels.unsqueeze(0) != labels.unsqueeze(1)
    row_mean = (w * neg).sum(1) / neg.sum(1)
    torch.testing.assert_close(row_mean, torch.ones(9), rtol=1e-5, atol=0)
    assert bool((w[~neg] == 1).all())
    assert bool((w >= 0).all())
    # a cold attention really varies the weights (not trivially ones)
    assert float(w[neg].std()) > 0.1


def test_ambiguous_negative_gets_smaller_weight():
    # sample 2 has low confidence for its own class 1 -> down-weighted
    cos = torch.tensor(
        [[0.9, 0.0, 0.0], [0.9, 0.0, 0.0], [0.8, 0.1, 0.0], [0.0, 0.0, 0.9]]
    )
    labels = torch.tensor([0, 0, 1, 2])
    w = attention_weights(0.1, cos, labels)
    assert float(w[0, 2]) < 1.0 < float(w[0, 3])


def test_detached_and_float32():
    cos = (torch.rand(6, 4) * 2 - 1).double().requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    w = attention_weights(0.5, cos.unsqueeze(1), labels.unsqueeze(1))
    assert not w.requires_grad
    assert w.shape == (6, 6)
    assert class_confidence(cos, labels, 0.5).dtype == torch.float32


def test_temperature_to_infinity_gives_ones():
    gen = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    cos = torch.rand(6, 4, generator=gen) * 2 - 1
    for t in (None, float("inf")):
        loss = AngularSupConLoss(0.2, 0.07, attention_temperature=t)
        assert not loss.attention and loss.confidence(cos, labels) is None
    torch.testing.assert_close(
        attention_weights(1e6, cos, labels), torch.ones(6, 6), rtol=0, atol=1e-5
    )


def test_underflowing_row_keeps_weight_one():
    conf = torch.tensor([0.0, 0.0, 0.5])
    labels = torch.tensor([0, 1, 1])
    w = pair_weights_from_confidence(conf, labels)
    # anchor 0: every min(a_0, a_n) is 0 -> weights stay 1
    torch.testing.assert_close(w[0], torch.ones(3))
    # anchor 2: its only negative is 0 with min = 0 -> also 1
    torch.testing.assert_close(w[2], torch.ones(3))
    assert bool(torch.isfinite(w).all())


def test_bad_temperature_raises():
    for t in (0.0, -1.0):
        with pytest.raises(ValueError):
            AngularSupConLoss(0.2, 0.07, attention_temperature=t)


def _trained_looking_cosines(n_classes, labels, seed, own=0.7, other=0.1, spread=0.15):
    """Cosines of a classifier that has learned: each sample is close to its
    own speaker's weight (peaked posterior at the AAM scale), a few less so."""
    gen = torch.Generator().manual_seed(seed)
    cos = other + spread * torch.randn(len(labels), n_classes, generator=gen)
    own_cos = own + spread * torch.randn(len(labels), generator=gen)
    cos[torch.arange(len(labels)), labels] = own_cos
    return cos.clamp(-1.0, 1.0)


@pytest.mark.parametrize("n_classes", [40, 1211])
def test_default_temperature_acts_on_a_trained_classifier(n_classes):
    """At T_att = 1/s (s = 30, the recipes' default) the negative-pair
    weights are not all within [0.8, 1.25]: the least confident samples are
    discounted hard. At the old default T_att = 1 the bulk of the weights
    (5th-95th percentile) stays near it: attention inert, as the objective
    issue measured."""
    labels = torch.arange(8).repeat_interleave(4)  # P = 8 speakers x K = 4
    for seed in range(5):
        cos = _trained_looking_cosines(n_classes, labels, seed)
        conf = class_confidence(cos, labels, 1.0 / 30.0)
        low, high = negative_weight_spread(conf, labels, q=(0.0, 1.0))
        assert low < 0.8 or high > 1.25, (low, high)
        p5, _ = negative_weight_spread(conf, labels)
        assert low < 0.5  # a hard sample's pairs weigh less than half
        p5_old, p95_old = negative_weight_spread(class_confidence(cos, labels, 1.0), labels)
        assert 0.75 <= p5_old and p95_old <= 1.3, (p5_old, p95_old)
        assert p5 < p5_old  # the default discounts more than the old one


def test_negative_weight_spread_brute_force():
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    conf = torch.rand(7, generator=gen)
    w = pair_weights_from_confidence(conf, labels)
    neg = sorted(
        float(w[i, j]) for i in range(7) for j in range(7) if labels[i] != labels[j]
    )
    low, high = negative_weight_spread(conf, labels, q=(0.0, 1.0))
    assert low == pytest.approx(neg[0]) and high == pytest.approx(neg[-1])
    mid, _ = negative_weight_spread(conf, labels, q=(0.5, 1.0))
    assert mid == pytest.approx(float(torch.tensor(neg).median()) if len(neg) % 2 else
                                (neg[len(neg) // 2 - 1] + neg[len(neg) // 2]) / 2)
    one = torch.zeros(3, dtype=torch.long)
    assert all(math.isnan(v) for v in negative_weight_spread(torch.ones(3), one))


def test_recipe_yaml_attention_temperature_follows_aam_scale():
    from hyperpyyaml import load_hyperpyyaml

    root = __file__.rsplit("/tests/", 1)[0]
    for recipe in ("VoxCeleb", "CNCeleb"):
        path = f"{root}/recipes/{recipe}/SpeakerRec/hparams/train_ecapa_angcl_small.yaml"
        with open(path, encoding="utf-8") as fin:
            text = fin.read()
        # Only the objective keys are resolved (no data or model needed).
        keys = ("aam_scale", "attention_temperature")
        lines = [ln for ln in text.splitlines() if ln.split(":")[0] in keys]
        snippet = "\n".join(lines)
        assert load_hyperpyyaml(snippet)["attention_temperature"] == pytest.approx(1 / 30)
        assert load_hyperpyyaml(snippet, {"aam_scale": 20})["attention_temperature"] == (
            pytest.approx(1 / 20))
        assert load_hyperpyyaml(snippet, {"attention_temperature": None})[
            "attention_temperature"] is None
