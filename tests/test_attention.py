"""Tests of :mod:`sb_angcl.attention` against a brute force of DESIGN.md.

The oracle computes, in Python floats, ``a_j = softmax(cos_j / T_att)[y_j]``,
``A_in = min(a_i, a_n)`` and ``w_in = |N(i)| A_in / sum_n' A_in'`` over each
anchor's negatives (ones elsewhere).
"""

import math

import pytest
import torch

from sb_angcl.attention import (
    ClassAwareAttention,
    class_confidence,
    pair_weights_from_confidence,
)


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
    w = ClassAwareAttention(t_att)(cos, labels)
    torch.testing.assert_close(
        w.double(), brute_weights(want_conf, labels), rtol=1e-4, atol=1e-6
    )


def test_mean_one_over_negatives_and_ones_elsewhere():
    gen = torch.Generator().manual_seed(9)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4])
    cos = torch.rand(9, 5, generator=gen) * 2 - 1
    w = ClassAwareAttention(0.1)(cos, labels)
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
    w = ClassAwareAttention(0.1)(cos, labels)
    assert float(w[0, 2]) < 1.0 < float(w[0, 3])


def test_detached_and_float32():
    cos = (torch.rand(6, 4) * 2 - 1).double().requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    w = ClassAwareAttention(0.5)(cos.unsqueeze(1), labels.unsqueeze(1))
    assert not w.requires_grad
    assert w.shape == (6, 6)
    assert class_confidence(cos, labels).dtype == torch.float32


def test_temperature_to_infinity_gives_ones():
    gen = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    cos = torch.rand(6, 4, generator=gen) * 2 - 1
    for t in (None, float("inf")):
        caa = ClassAwareAttention(t)
        assert not caa.enabled
        torch.testing.assert_close(caa(cos, labels), torch.ones(6, 6))
    torch.testing.assert_close(
        ClassAwareAttention(1e6)(cos, labels), torch.ones(6, 6), rtol=0, atol=1e-5
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
            ClassAwareAttention(t)
