"""Tests of :mod:`sb_angcl.objective.losses` (AM-SupCon) against independent oracles.

Oracles:

* pytorch-metric-learning's ``SupConLoss`` for ``margin = 0`` and no weights;
* a brute-force float64 per-anchor Python loop written from DESIGN.md's
  formula (angles via ``acos``, ``cos(theta + m)`` with the ArcFace fallback
  ``cos(theta) - sin(pi - m) * m`` where ``theta + m > pi``) for margins and
  attention weights (from confidences, by the brute force of test_attention);
* ``torch.autograd.gradcheck`` for the backward pass.
"""

import itertools
import math

import pytest
import torch
from test_attention import brute_weights

from sb_angcl.objective.losses import AngularSupConLoss, additive_angular_margin

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


# --------------------------------------------------------------------------
# Helpers and the brute-force oracle
# --------------------------------------------------------------------------
def random_labels(n, gen, n_singletons=None):
    """Labels with ``2 .. n/2`` speakers, at least one singleton speaker.

    The singletons have no positive (they are left out of the mean) but stay
    negatives of everybody else.
    """
    n_spk = int(torch.randint(2, max(2, n // 2) + 1, (1,), generator=gen))
    if n_singletons is None:
        n_singletons = int(torch.randint(1, min(3, n_spk - 1) + 1, (1,), generator=gen))
    multi = n_spk - n_singletons
    rest = n - n_singletons
    # every multi-utterance speaker gets two, the remainder goes at random
    labels = list(range(n_singletons))
    labels += [n_singletons + k for k in range(multi) for _ in range(2)]
    extra = rest - 2 * multi
    labels += (n_singletons + torch.randint(0, multi, (extra,), generator=gen)).tolist()
    labels = torch.tensor(labels)
    return labels[torch.randperm(n, generator=gen)]


def brute_margin_cos(c, m):
    """``cos(theta + m)`` from the angle, ArcFace fallback past ``pi``."""
    theta = math.acos(max(-1.0, min(1.0, c)))
    if theta + m > math.pi:
        return c - math.sin(math.pi - m) * m
    return math.cos(theta + m)


def brute_force_loss(emb, labels, margin, tau, weights=None):
    """Per-anchor loop of DESIGN.md's AM-SupCon formula in Python floats."""
    e = emb.detach().double().reshape(emb.shape[0], -1)
    z = []
    for row in e.tolist():
        norm = math.sqrt(sum(v * v for v in row))
        z.append([v / norm for v in row])
    y = labels.reshape(-1).tolist()
    n = len(y)
    w = None if weights is None else weights.double().tolist()
    total, anchors = 0.0, 0
    for i in range(n):
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        if not pos:
            continue
        cos = {j: sum(a * b for a, b in zip(z[i], z[j])) for j in pos + neg}
        s_pos = {p: brute_margin_cos(cos[p], margin) / tau for p in pos}
        denom = sum(math.exp(s_pos[p]) for p in pos)
        denom += sum(
            (1.0 if w is None else w[i][k]) * math.exp(cos[k] / tau) for k in neg
        )
        total += -sum(s_pos[p] - math.log(denom) for p in pos) / len(pos)
        anchors += 1
    return total / anchors if anchors else 0.0


def pml_supcon(emb, labels, tau):
    return pml_losses.SupConLoss(temperature=tau)(emb, labels)


# --------------------------------------------------------------------------
# margin helper
# --------------------------------------------------------------------------
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5, 1.3])
def test_additive_angular_margin_matches_acos(margin):
    c = torch.linspace(-0.9999, 0.9999, 2001, dtype=torch.float64)
    got = additive_angular_margin(c, margin)
    want = torch.tensor(
        [brute_margin_cos(v, margin) for v in c.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    # the fallback branch is really exercised for m > 0
    if margin > 0:
        assert bool((c < math.cos(math.pi - margin)).any())


@pytest.mark.parametrize("margin", [0.1, 0.2, 0.5, 1.0])
def test_margin_logit_is_monotonic_in_angle(margin):
    """cos(theta + m) with the fallback never increases as theta grows."""
    theta = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    out = additive_angular_margin(torch.cos(theta), margin)
    assert bool((out[1:] <= out[:-1] + 1e-12).all())
    # and the margin really penalises: below the plain cosine everywhere
    assert bool((out < torch.cos(theta)).all())


# --------------------------------------------------------------------------
# Oracle 1: pytorch-metric-learning at margin 0
# --------------------------------------------------------------------------
def test_margin0_equals_pml_supcon_20_batches():
    gen = torch.Generator().manual_seed(1234)
    sizes = [4, 5, 8, 13, 16, 31, 64, 100, 128, 256] * 2
    dims = [2, 3, 256, 7, 16, 64, 2, 192, 33, 128, 256, 2, 5, 9, 40, 3, 128, 17, 64, 2]
    checked = 0
    for n, d in zip(sizes, dims):
        labels = random_labels(n, gen)
        emb = torch.randn(n, d, generator=gen, dtype=torch.float64)
        # vary scale per row: normalisation is part of both losses
        emb = emb * (0.1 + 3 * torch.rand(n, 1, generator=gen, dtype=torch.float64))
        tau = float(0.05 + 0.5 * torch.rand(1, generator=gen))
        counts = torch.bincount(labels)
        assert bool((counts[labels] == 1).any()), "want singleton anchors"
        ours = AngularSupConLoss(margin=0.0, temperature=tau)(emb, labels)
        ref = pml_supcon(emb, labels, tau)
        assert ours.dtype == torch.float64
        torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-6)
        checked += 1
    assert checked == 20


def test_margin0_gradient_equals_pml():
    gen = torch.Generator().manual_seed(7)
    labels = random_labels(24, gen)
    emb = torch.randn(24, 12, generator=gen, dtype=torch.float64)
    e1 = emb.clone().requires_grad_(True)
    e2 = emb.clone().requires_grad_(True)
    AngularSupConLoss(0.0, 0.1)(e1, labels).backward()
    pml_supcon(e2, labels, 0.1).backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------
# Oracle 2: brute force with margin and attention weights
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.1, 0.35, 1.0])
def test_margin_and_weights_match_brute_force(seed, margin):
    gen = torch.Generator().manual_seed(100 + seed)
    n = int(torch.randint(4, 15, (1,), generator=gen))
    d = int(torch.randint(2, 9, (1,), generator=gen))
    labels = random_labels(n, gen)
    emb = torch.randn(n, d, generator=gen, dtype=torch.float64)
    tau = float(0.1 + 0.4 * torch.rand(1, generator=gen))
    confidence = 0.05 + torch.rand(n, generator=gen)
    weights = brute_weights(confidence.tolist(), labels)
    loss_fn = AngularSupConLoss(margin=margin, temperature=tau)
    ours = loss_fn(emb, labels, confidence)
    ref = brute_force_loss(emb, labels, margin, tau, weights)
    # the attention weights are float32 (the confidences are)
    assert math.isclose(float(ours), ref, rel_tol=1e-6, abs_tol=1e-9)
    # and without weights
    assert math.isclose(
        float(loss_fn(emb, labels)),
        brute_force_loss(emb, labels, margin, tau),
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


def test_brute_force_exercises_arcface_fallback():
    """Positives almost opposite: theta + m > pi for some positive pairs."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    emb = torch.cat(
        [base, -base + 0.05 * torch.randn(4, 6, generator=gen, dtype=torch.float64)]
    )
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    margin = 0.4
    z = torch.nn.functional.normalize(emb, dim=1)
    cos = z @ z.t()
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~torch.eye(8, dtype=torch.bool)
    assert bool((cos[pos] < math.cos(math.pi - margin)).any())
    confidence = 0.5 + torch.rand(8, generator=gen)
    ours = AngularSupConLoss(margin, 0.2)(emb, labels, confidence)
    ref = brute_force_loss(emb, labels, margin, 0.2, brute_weights(confidence.tolist(), labels))
    assert math.isclose(float(ours), ref, rel_tol=1e-6)


@pytest.mark.parametrize("margin,seed", [(0.3, 5), (0.5, 6)])
def test_gradcheck_margin_and_attention(margin, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    emb = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    cos = torch.rand(7, 4, generator=gen) * 2 - 1
    loss_fn = AngularSupConLoss(margin=margin, temperature=0.2, attention_temperature=0.1)
    confidence = loss_fn.confidence(cos, labels)
    assert torch.autograd.gradcheck(
        lambda e: loss_fn(e, labels, confidence), (emb,), eps=1e-6, atol=1e-6
    )


def test_singletons_left_out_of_mean_but_stay_negatives():
    gen = torch.Generator().manual_seed(21)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4])  # 2, 3, 4 are singletons
    emb = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    loss = float(AngularSupConLoss(0.2, 0.1)(emb, labels))
    ref = brute_force_loss(emb, labels, 0.2, 0.1)
    assert math.isclose(loss, ref, rel_tol=1e-9)
    # the mean is over the 5 anchors with a positive, not over all 8
    assert not math.isclose(loss, ref * 5 / 8, rel_tol=1e-3)
    # and the singletons act as negatives: dropping them changes the loss
    keep = labels < 2
    dropped = float(AngularSupConLoss(0.2, 0.1)(emb[keep], labels[keep]))
    assert not math.isclose(loss, dropped, rel_tol=1e-3)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------
def test_loss_grows_strictly_with_margin():
    gen = torch.Generator().manual_seed(31)
    for _ in range(3):
        labels = random_labels(32, gen)
        emb = torch.randn(32, 16, generator=gen)
        losses = [
            float(AngularSupConLoss(m, 0.1)(emb, labels))
            for m in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
        ]
        assert all(b > a for a, b in itertools.pairwise(losses)), losses


def test_very_hot_attention_equals_no_attention():
    gen = torch.Generator().manual_seed(41)
    labels = torch.arange(16).repeat_interleave(4)
    emb = torch.randn(64, 32, generator=gen)
    cos = torch.rand(64, 20, generator=gen) * 2 - 1
    hot = AngularSupConLoss(0.2, 0.07, attention_temperature=1e6)
    loss_fn = AngularSupConLoss(0.2, 0.07)
    torch.testing.assert_close(
        hot(emb, labels, hot.confidence(cos, labels)), loss_fn(emb, labels), rtol=1e-5, atol=0
    )
    # a cold attention does change the loss (the comparison can fail)
    cold = AngularSupConLoss(0.2, 0.07, attention_temperature=0.05)
    assert abs(float(cold(emb, labels, cold.confidence(cos, labels)))
               - float(loss_fn(emb, labels))) > 1e-3


def test_invariant_to_scale_and_batch_order():
    gen = torch.Generator().manual_seed(51)
    labels = random_labels(40, gen)
    emb = torch.randn(40, 24, generator=gen, dtype=torch.float64)
    a = 0.5 + torch.rand(40, generator=gen)
    loss_fn = AngularSupConLoss(0.25, 0.1)
    base = loss_fn(emb, labels, a)
    torch.testing.assert_close(loss_fn(3.7 * emb, labels, a), base, rtol=1e-12, atol=0)
    perm = torch.randperm(40, generator=gen)
    permuted = loss_fn(emb[perm], labels[perm], a[perm])
    torch.testing.assert_close(permuted, base, rtol=1e-6, atol=0)  # float32 weights: sums reordered
    # relabelling speakers does not matter either
    torch.testing.assert_close(loss_fn(emb, labels * 7 + 3, a), base)


def test_bf16_autocast_finite_and_close_to_float32():
    torch.manual_seed(61)
    layer = torch.nn.Linear(40, 64)
    x = torch.randn(48, 40)
    labels = torch.arange(12).repeat_interleave(4)
    loss_fn = AngularSupConLoss(0.2, 0.07)
    ref = loss_fn(layer(x), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = layer(x)
        assert emb.dtype == torch.bfloat16
        loss = loss_fn(emb, labels)
    assert loss.dtype == torch.float32
    assert bool(torch.isfinite(loss))
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
    rel = abs(loss.item() - ref.item()) / abs(ref.item())
    assert rel < 1e-2, rel


@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_stable_at_low_temperature_with_aligned_embeddings(margin):
    gen = torch.Generator().manual_seed(71)
    base = torch.randn(1, 32, generator=gen)
    emb = (base + 1e-3 * torch.randn(24, 32, generator=gen)).requires_grad_(True)
    labels = torch.arange(6).repeat_interleave(4)
    loss = AngularSupConLoss(margin, 0.01)(emb, labels)
    loss.backward()
    assert bool(torch.isfinite(loss))
    assert bool(torch.isfinite(emb.grad).all())
    # far-apart embeddings at tau = 0.01 (huge logits): still finite
    emb2 = (10 * torch.randn(24, 32, generator=gen)).requires_grad_(True)
    loss2 = AngularSupConLoss(margin, 0.01)(emb2, labels)
    loss2.backward()
    assert bool(torch.isfinite(loss2)) and bool(torch.isfinite(emb2.grad).all())


def test_speechbrain_shapes():
    gen = torch.Generator().manual_seed(81)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    emb = torch.randn(7, 10, generator=gen)
    loss_fn = AngularSupConLoss(0.2, 0.1)
    flat = loss_fn(emb, labels)
    e3 = emb.unsqueeze(1).clone().requires_grad_(True)
    out = loss_fn(e3, labels.unsqueeze(1))
    torch.testing.assert_close(out, flat)
    out.backward()
    assert e3.grad.shape == (7, 1, 10)
    with pytest.raises(ValueError):
        loss_fn(torch.randn(7, 2, 10), labels)
    with pytest.raises(ValueError):
        loss_fn(emb, labels[:5])


def test_no_positive_returns_graph_zero():
    emb = torch.randn(5, 8, requires_grad=True)
    loss = AngularSupConLoss(0.2, 0.1)(emb, torch.arange(5))
    assert float(loss) == 0.0
    assert loss.requires_grad
    loss.backward()
    assert emb.grad is not None and bool((emb.grad == 0).all())


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError):
        AngularSupConLoss(margin=0.2, temperature=0.0)
    with pytest.raises(ValueError):
        AngularSupConLoss(margin=-0.1)
    with pytest.raises(ValueError):
        AngularSupConLoss(margin=4.0)
