"""Property tests (hypothesis) of the objective on random and degenerate batches.

AM-SupCon (:class:`~sb_angcl.objective.losses.AngularSupConLoss`), with and without
class-aware attention weights, the attention weights themselves and the MGDA
balancer must stay finite, with finite gradients, on every batch a training
run can produce: one speaker only, every speaker once, zero embeddings,
duplicated embeddings, rows with tiny or huge norms (mixed in one batch),
temperatures down to 0.01 and margins up to 0.5 rad.

Besides finiteness each test checks bounds that follow from the formulas:

* AM-SupCon: ``0 <= L <= log(N * max(1, w_max)) + (2 + m) / tau`` (each
  term is ``-log`` of a ratio at most one, and the logits lie in
  ``[(-1 - m) / tau, 1 / tau]``); exactly ``0`` without a positive pair;
  float32 agrees with float64.
* Attention: confidences in ``[0, 1]``, weights ``>= 0`` with mean one over
  each anchor's negatives and one elsewhere.
* MGDA: ``alpha`` in ``[0, 1]``, the returned loss is
  ``alpha * L_cls + (1 - alpha) * L_con``, and (no normalisation) the
  combined gradient is no longer than at any other weight on a grid.

Examples are derandomised and not stored (``database=None``), so a run is
reproducible and writes nothing into the source tree.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb_angcl.objective.balancing import MGDABalancer
from sb_angcl.objective.losses import (
    AngularSupConLoss,
    class_confidence,
    pair_weights_from_confidence,
)

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


#: Row norms a batch may mix: underflow-ish, ordinary, and huge (float32-safe
#: squares: 1e18 ** 2 * 16 < 3.4e38).
SCALES = [0.0, 1e-20, 1e-6, 1.0, 1e6, 1e18]


# --------------------------------------------------------------- strategies
@st.composite
def label_batches(draw, min_size=2, max_size=12):
    """Speaker labels of a batch, degenerate layouts included."""
    n = draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(["random", "one_speaker", "all_distinct", "pairs"]))
    if kind == "one_speaker":
        labels = [0] * n
    elif kind == "all_distinct":
        labels = list(range(n))
    elif kind == "pairs":
        labels = [i // 2 for i in range(n)]
    else:
        labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return torch.tensor(labels)


@st.composite
def embedding_batches(draw, n, dim):
    """``[n, dim]`` float32 embeddings: random, zero, duplicated, odd norms."""
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    kind = draw(
        st.sampled_from(
            ["random", "zeros", "duplicates", "some_duplicates", "antipodal"]
        )
    )
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    if kind == "zeros":
        x = torch.zeros(n, dim, dtype=torch.float64)
    elif kind == "duplicates":
        x = x[:1].repeat(n, 1)
    elif kind == "some_duplicates":
        x[n // 2 :] = x[0]
    elif kind == "antipodal":
        first = x[0].clone()
        x[0::2] = first
        x[1::2] = -first
    row_scale = draw(st.lists(st.sampled_from(SCALES), min_size=n, max_size=n))
    if draw(st.booleans()):  # one norm for the whole batch
        row_scale = [row_scale[0]] * n
    x = x * torch.tensor(row_scale, dtype=torch.float64).unsqueeze(1)
    return x.float()


@st.composite
def contrastive_cases(draw):
    """A batch, hyperparameters and optional negative-pair weights."""
    labels = draw(label_batches())
    n = labels.numel()
    dim = draw(st.integers(2, 16))
    emb = draw(embedding_batches(n, dim))
    margin = draw(st.floats(0.0, 0.5))
    tau = draw(st.floats(0.01, 1.0))
    kind = draw(st.sampled_from(["none", "attention", "raw"]))
    confidence = None
    if kind == "attention":
        classes = int(labels.max()) + 1
        cos = draw(cosine_logits(n, classes))
        confidence = class_confidence(cos, labels, draw(st.floats(0.01, 100.0)))
    elif kind == "raw":
        values = draw(
            st.lists(st.sampled_from([0.0, 1e-30, 1e-3, 0.5, 1.0]), min_size=n, max_size=n)
        )
        confidence = torch.tensor(values)
    return emb, labels, margin, tau, confidence


@st.composite
def cosine_logits(draw, n, classes):
    """Classifier cosines in ``[-1, 1]``: random, constant, or saturated."""
    kind = draw(st.sampled_from(["random", "constant", "saturated"]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if kind == "constant":
        return torch.full((n, 1, classes), draw(st.sampled_from([-1.0, 0.0, 1.0])))
    cos = torch.rand(n, 1, classes, generator=gen) * 2 - 1
    if kind == "saturated":
        cos = torch.sign(cos) + (cos == 0).float()  # every entry +-1
    return cos


# ------------------------------------------------------------- AM-SupCon
@SETTINGS
@given(contrastive_cases())
def test_am_supcon_finite_bounded_with_finite_gradients(case):
    emb, labels, margin, tau, confidence = case
    emb = emb.clone().requires_grad_(True)
    loss_fn = AngularSupConLoss(margin=margin, temperature=tau)
    loss = loss_fn(emb, labels, confidence)
    loss.backward()
    assert loss.dim() == 0 and bool(torch.isfinite(loss)), float(loss)
    assert emb.grad is not None and bool(torch.isfinite(emb.grad).all())
    n = labels.numel()
    has_positive = bool((torch.bincount(labels) > 1).any())
    if not has_positive:
        assert float(loss.detach()) == 0.0
        assert loss.requires_grad  # a zero that keeps the graph
    value = float(loss.detach())
    w_max = 1.0
    if confidence is not None:
        w_max = max(1.0, float(pair_weights_from_confidence(confidence, labels).max()))
    bound = math.log(n * w_max) + (2.0 + margin) / tau
    assert -1e-5 <= value <= bound * (1 + 1e-5) + 1e-3, value


@SETTINGS
@given(contrastive_cases())
def test_am_supcon_float32_agrees_with_float64(case):
    emb, labels, margin, tau, confidence = case
    loss_fn = AngularSupConLoss(margin=margin, temperature=tau)
    single = float(loss_fn(emb, labels, confidence))
    double = float(loss_fn(emb.double(), labels, confidence))
    # float32 rounding of the cosines is amplified by 1 / tau at most.
    assert abs(single - double) <= 1e-3 * abs(double) + 2e-3 / tau, (single, double)


@SETTINGS
@given(label_batches(min_size=2, max_size=8), st.floats(0.0, 0.5), st.floats(0.01, 1.0))
def test_am_supcon_one_repeated_utterance_per_speaker(labels, margin, tau):
    """The sampler's single-utterance case: K identical copies per speaker."""
    gen = torch.Generator().manual_seed(int(labels.sum()))
    per_speaker = torch.randn(int(labels.max()) + 1, 8, generator=gen)
    emb = per_speaker[labels].clone().requires_grad_(True)  # exact duplicates
    loss = AngularSupConLoss(margin, tau)(emb, labels)
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(emb.grad).all())


# ------------------------------------------------------------- attention
@SETTINGS
@given(label_batches(), st.data())
def test_attention_weights_finite_nonnegative_mean_one(labels, data):
    n = labels.numel()
    classes = int(labels.max()) + 1
    cos = data.draw(cosine_logits(n, classes))
    t_att = data.draw(st.floats(0.01, 100.0))
    conf = AngularSupConLoss(0.2, 0.07, attention_temperature=t_att).confidence(cos, labels)
    assert bool(torch.isfinite(conf).all())
    assert bool(((conf >= 0) & (conf <= 1 + 1e-6)).all())
    weights = pair_weights_from_confidence(conf, labels)
    assert weights.shape == (n, n) and not weights.requires_grad
    assert bool(torch.isfinite(weights).all()) and bool((weights >= 0).all())
    negatives = labels.unsqueeze(0) != labels.unsqueeze(1)
    assert bool((weights[~negatives] == 1).all())
    for i in range(n):
        row = weights[i][negatives[i]]
        if row.numel():
            assert abs(float(row.mean()) - 1.0) < 1e-4, row
    # Same through the functional form with arbitrary confidences in [0, 1].
    raw = data.draw(
        st.lists(st.sampled_from([0.0, 2e-38, 1e-6, 0.3, 1.0]), min_size=n, max_size=n)
    )
    w = pair_weights_from_confidence(torch.tensor(raw), labels)
    assert bool(torch.isfinite(w).all()) and bool((w >= 0).all())


def test_attention_subnormal_confidence_weights():
    """A float32 subnormal confidence (softmax at T_att <~ 0.02) gives finite weights."""
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1])
    confidence = torch.tensor([1.0] * 6 + [1e-40])  # float32 subnormal
    weights = pair_weights_from_confidence(confidence, labels)
    # Anchor 0 has one negative: its weight must be 1 (mean one).
    assert bool(torch.isfinite(weights).all())
    assert float(weights[0, 6]) == pytest.approx(1.0)


# ------------------------------------------------------------------ MGDA
@st.composite
def gradient_pairs(draw):
    """Two objectives on a shared [n, d] tensor with chosen gradient shapes."""
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen)
    b = torch.randn(n, d, generator=gen)
    kind = draw(
        st.sampled_from(
            [
                "random",
                "equal",
                "opposite",
                "parallel",
                "zero_cls",
                "zero_con",
                "both_zero",
            ]
        )
    )
    if kind == "equal":
        b = a.clone()
    elif kind == "opposite":
        b = -a
    elif kind == "parallel":
        b = a * draw(st.sampled_from([1e-6, 0.5, 3.0, 1e6]))
    elif kind == "zero_cls":
        a = torch.zeros_like(a)
    elif kind == "zero_con":
        b = torch.zeros_like(b)
    elif kind == "both_zero":
        a, b = torch.zeros_like(a), torch.zeros_like(b)
    a = a * draw(st.sampled_from([1e-12, 1e-3, 1.0, 1e4, 1e12]))
    b = b * draw(st.sampled_from([1e-12, 1e-3, 1.0, 1e4, 1e12]))
    return a, b


@SETTINGS
@given(
    gradient_pairs(),
    st.sampled_from(["mgda_ub", "mgda"]),
    st.sampled_from(["none", "loss"]),
    st.sampled_from([1.0, 2.0**16]),
)
def test_mgda_alpha_in_unit_interval_and_finite(pair, mode, normalization, grad_scale):
    a, b = pair
    weight = torch.nn.Parameter(torch.ones_like(a))
    shared = weight * 1.0  # the "embedding", a function of a parameter
    # Linear objectives: gradient w.r.t. shared is exactly a (resp. b).
    loss_cls = (shared * a).sum() + 1.0
    loss_con = (shared * b).sum() + 2.0
    balancer = MGDABalancer(mode, normalization, distributed=False)
    out = balancer(
        loss_cls, loss_con, shared=shared, parameters=[weight], grad_scale=grad_scale
    )
    alpha = float(out.alpha)
    assert math.isfinite(alpha) and 0.0 <= alpha <= 1.0
    l1, l2 = float(loss_cls.detach()), float(loss_con.detach())
    # alpha is reported in float32: allow its rounding times the losses.
    expected = alpha * l1 + (1 - alpha) * l2
    assert abs(float(out.loss.detach()) - expected) <= 1e-6 * (1 + abs(l1) + abs(l2))
    out.loss.backward()
    assert bool(torch.isfinite(weight.grad).all())
    g1, g2 = a.double().flatten(), b.double().flatten()
    if normalization == "none" and float(g1 @ g1) > 0 and float(g2 @ g2) > 0:
        # alpha minimises ||alpha g1 + (1 - alpha) g2|| over [0, 1].
        best = float((alpha * g1 + (1 - alpha) * g2).norm())
        for beta in torch.linspace(0, 1, 21, dtype=torch.float64):
            other = float((beta * g1 + (1 - beta) * g2).norm())
            assert best <= other * (1 + 1e-4) + 1e-12 * float(g1.norm() + g2.norm())
