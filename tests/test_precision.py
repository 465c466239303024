"""Mixed precision: bf16 autocast through the Brain, GradScaler, fp16 on CPU.

Findings these tests pin down (CPU, SpeechBrain 1.1):

* ``--precision=bf16`` runs ``compute_forward`` under ``torch.autocast``;
  the objectives and MGDA are computed in float32 outside it: the losses and
  alpha of a bf16 (or fp32) run equal a float64 reference computed from that
  run's own encoder outputs, to bounds on float32 rounding. Across
  precisions the losses move (the contrastive loss by about 1 % here, because
  the whole encoder runs in bf16 and the loss divides cosines by the
  temperature 0.07); how far depends on the CPU's bf16 kernels, so no
  tolerance is set on that.
* ``--precision=fp16`` is refused on CPU by SpeechBrain itself (ValueError);
  on GPUs it enables a GradScaler. The Brain's GradScaler path is exercised
  here with ``torch.GradScaler("cpu")``: same weights and alpha as without a
  scaler, and a step with an infinite gradient is skipped with the scale
  halved.
* MGDA takes gradients of the *scaled* losses: in fp16, gradients that would
  underflow to zero survive, and alpha does not depend on the scale.
"""

import math

import pytest
import speechbrain as sb
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization

from sb_angcl.objective.balancing import MGDABalancer, make_balancer
from sb_angcl.objective.joint import JointObjective
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.training.brain import AngularContrastiveBrain

SAMPLES = 4000  # 0.25 s at 16 kHz
SPEAKERS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def make_brain(precision="fp32", balancing="mgda_ub"):
    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(20, channels=[16, 16, 16, 16, 48], lin_neurons=8),
        "classifier": Classifier(8, out_neurons=SPEAKERS),
    }
    hparams = {
        "objective": JointObjective(
            LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
            AngularSupConLoss(0.2, 0.07, attention_temperature=1.0),
            make_balancer(balancing),
        ),
        "augmentation": "none",
        "positive_views": 1,
        "lr_annealing": None,
        "error_stats": None,
        "train_logger": None,
    }
    return AngularContrastiveBrain(
        modules,
        lambda params: torch.optim.SGD(params, lr=0.05),
        hparams,
        run_opts={"device": "cpu", "precision": precision},
    )


def make_batch(seed, n=6):
    """Speaker-dependent tones plus noise, so embeddings are spread out."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SAMPLES) / 16000
    items = []
    for i in range(n):
        spk = i % SPEAKERS
        sig = (
            0.5 * torch.sin(2 * torch.pi * (200 + 450 * spk) * t)
            + 0.3 * torch.sin(2 * torch.pi * (1300 + 900 * spk) * t)
            + 0.05 * torch.randn(SAMPLES, generator=g)
        )
        items.append({"id": f"u{i}", "sig": sig, "spk_id_encoded": torch.LongTensor([spk])})
    return sb.dataio.batch.PaddedBatch(items)


def objectives(brain, batch):
    """Forward under the Brain's training autocast, objectives as in fit_batch."""
    brain.modules.train()
    with brain.training_ctx:
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    parts = out["objective"]
    return out, [float(v.detach()) for v in (parts.loss_cls, parts.loss_con, parts.loss, parts.alpha)]


def params_of(brain):
    return [p.detach().clone() for p in brain.modules.parameters()]


U32 = 2.0**-24  # float32 unit roundoff (24-bit significand)


def reference_aam_loss(cosine, labels, margin=0.2, scale=30.0):
    """float64 AAM-softmax of given cosines, as SpeechBrain defines it (ArcFace fallback)."""
    c = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
    phi = c * math.cos(margin) - torch.sqrt(1 - c * c) * math.sin(margin)
    phi = torch.where(c > math.cos(math.pi - margin), phi, c - math.sin(math.pi - margin) * margin)
    target = torch.nn.functional.one_hot(labels, cosine.shape[1]).bool()
    logits = scale * torch.where(target, phi, c)
    return -torch.log_softmax(logits, dim=1)[target].mean()


def reference_contrastive_loss(z, cosine, labels, margin=0.2, tau=0.07, t_att=1.0):
    """float64 AM-SupCon with class-aware attention, one anchor at a time (DESIGN.md's formula)."""
    z = z / z.norm(dim=1, keepdim=True)
    conf = torch.softmax(cosine / t_att, dim=1)[torch.arange(len(labels)), labels]
    total = 0.0
    for i in range(len(labels)):
        pos = [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[i]]
        a_pair = torch.minimum(conf[i], conf[neg])
        w = len(neg) * a_pair / a_pair.sum()
        cos_p = z[pos] @ z[i]
        theta = torch.arccos(cos_p)
        s_pos = torch.where(theta + margin <= math.pi, torch.cos(theta + margin),
                            cos_p - math.sin(math.pi - margin) * margin) / tau
        s_neg = (z[neg] @ z[i]) / tau
        log_den = torch.logsumexp(torch.cat([s_pos, s_neg + torch.log(w)]), dim=0)
        total = total + (log_den - s_pos).mean()
    return total / len(labels)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("seed", [0, 1])
def test_autocast_losses_and_alpha_match_a_float64_reference(precision, seed):
    """The objectives of a run are exact functions of its encoder outputs.

    What bf16 changes is the encoder: its embeddings and classifier cosines
    come out rounded (bf16 keeps 8 significant bits, a relative rounding of
    up to 2^-8 per value, compounded over the encoder's layers, so nothing
    bounds how far they move from the float32 run's a priori: on an AMD EPYC
    the contrastive loss of seed 0 moved from 9.101 to 8.998). So the losses
    are not compared across precisions; each run's losses and alpha are
    compared with a float64 reference computed from that run's own outputs
    (the bf16 values upcast exactly). The only difference left is float32
    rounding in the Brain's objectives, u = 2^-24 per operation, bounded as
    follows (N = 24 samples, D = 8 dims, C = 3 classes, |cos| <= 0.995 on the
    margin pairs, checked):

    * L_con: a cosine of two normalised D-vectors is off by at most (D + 3) u;
      the margin map cos -> cos(theta + m) has slope at most
      1 + sin(m) / sqrt(1 - cos^2) <= 3 there, so a logit is off by at most
      e_s = 3 (D + 3) u / tau + 2 u |s|max; log w (softmax over C classes, a
      sum over N negatives) by e_w = (2 C + N + 6) u; L_i = mean_p (LSE - s_ip)
      by 2 (e_s + e_w) + (N + 2) u |s|max (the log-sum-exp's own rounding).
    * L_cls: each logit 30 cos(theta + m) is off by at most 30 * 8 u (the
      square root near |cos| = 0.995 amplifies u by 1 / (2 * 0.1)); each
      log-softmax by twice that plus (C + 2) u 30; the mean adds N u L.
    * alpha: the balancer's dot products over n = N D entries are each off by
      at most n u times the sum of |products| (Higham's gamma_n); the
      closed form's error follows to first order.

    A loss computed in bf16 instead (logits rounded by 2^-8 |s| ~ 0.05) or a
    wrong margin misses these bounds by orders of magnitude.
    """
    batch = make_batch(seed, n=24)
    brain = make_brain(precision)
    brain.on_fit_start()
    brain.modules.train()
    with brain.training_ctx:
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
    expected_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert out["embeddings"].dtype == expected_dtype  # the encoder ran in that precision
    brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    _, loss_cls, loss_con, alpha, _ = out["objective"]
    shared = out["embeddings"]
    (g1,) = torch.autograd.grad(loss_cls, shared, retain_graph=True)
    (g2,) = torch.autograd.grad(loss_con, shared, retain_graph=True)
    alpha = float(alpha)

    labels = batch.spk_id_encoded[0].reshape(-1)
    z = out["embeddings"].detach().reshape(len(labels), -1).double()
    cosine = out["cosine"].detach().reshape(len(labels), -1).double()
    n, d, c = z.shape[0], z.shape[1], cosine.shape[1]
    zn = z / z.norm(dim=1, keepdim=True)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    assert float((zn @ zn.T)[same].abs().max()) <= 0.995  # margin slope <= 3
    assert float(cosine[torch.arange(n), labels].abs().max()) <= 0.995

    tau = 0.07
    s_max = 1.0 / tau
    e_s = 3 * (d + 3) * U32 / tau + 2 * U32 * s_max
    e_w = (2 * c + n + 6) * U32
    ref_con = float(reference_contrastive_loss(z, cosine, labels))
    tol_con = 2 * (e_s + e_w) + (n + 2) * U32 * s_max
    assert float(loss_con.detach()) == pytest.approx(ref_con, rel=0, abs=tol_con)

    ref_cls = float(reference_aam_loss(cosine, labels))
    tol_cls = 2 * 30 * 8 * U32 + (c + 2) * U32 * 30 + n * U32 * ref_cls
    assert float(loss_cls.detach()) == pytest.approx(ref_cls, rel=0, abs=tol_cls)

    g1, g2 = g1.double().reshape(-1), g2.double().reshape(-1)
    diff = g1 - g2
    raw = float((g2 - g1) @ g2 / (diff @ diff))
    gamma = g1.numel() * U32
    cross = float((g1 * g2).abs().sum())
    err_num = gamma * (float(g2 @ g2) + cross)
    err_den = gamma * (float(g1 @ g1) + float(g2 @ g2) + 2 * cross)
    tol_alpha = (err_num + abs(raw) * err_den) / float(diff @ diff)
    assert alpha == pytest.approx(min(max(raw, 0.0), 1.0), rel=0, abs=tol_alpha + 1e-12)
    assert 0.05 < raw < 0.95  # an interior solution: the formula, not a clip, is tested


def test_bf16_objectives_are_computed_in_float32():
    """Under bf16 the losses are the float32 losses of the bf16 outputs."""
    brain = make_brain("bf16", balancing="fixed")
    brain.on_fit_start()
    batch = make_batch(0)
    out, (cls16, con16, _, _) = objectives(brain, batch)
    labels = batch.spk_id_encoded[0]
    emb = out["embeddings"].detach().float()
    cosine = out["cosine"].detach().float()
    conf = brain.hparams.objective.contrastive_loss.confidence(cosine, labels.reshape(-1))
    expected_con = brain.hparams.objective.contrastive_loss(emb, labels, conf)
    expected_cls = brain.hparams.objective.classification_loss(cosine, labels)
    assert con16 == pytest.approx(float(expected_con), rel=1e-6)
    assert cls16 == pytest.approx(float(expected_cls), rel=1e-6)


def test_bf16_fit_batch_trains():
    brain = make_brain("bf16")
    brain.on_fit_start()
    before = params_of(brain)
    losses = [float(brain.fit_batch(make_batch(s))) for s in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert 0.0 <= brain.last_alpha <= 1.0
    assert brain.skipped_nonfinite == 0
    after = params_of(brain)
    # bf16 is only the autocast: the weights stay float32 and do move.
    assert all(p.dtype == torch.float32 for p in after)
    assert max(float((a - b).abs().max()) for a, b in zip(after, before)) > 1e-4


def test_fp16_is_refused_on_cpu_by_speechbrain():
    with pytest.raises(ValueError, match="fp16"):
        make_brain("fp16")


@pytest.mark.parametrize("balancing", ["mgda_ub", "mgda"])
def test_fit_batch_with_enabled_grad_scaler_matches_unscaled(balancing):
    batches = [make_batch(s) for s in range(2)]
    plain, scaled = make_brain(balancing=balancing), make_brain(balancing=balancing)
    plain.on_fit_start()
    scaled.on_fit_start()
    # What --precision=fp16 gives on a GPU; on CPU it must be set by hand.
    scaled.scaler = torch.GradScaler("cpu", init_scale=2.0**12)
    assert scaled.scaler.is_enabled() and not plain.scaler.is_enabled()
    seen_scales = []
    original = scaled.hparams.objective.balancer.forward

    def spy(*args, **kwargs):
        seen_scales.append(kwargs.get("grad_scale"))
        return original(*args, **kwargs)

    scaled.hparams.objective.balancer.forward = spy
    for batch in batches:
        plain.fit_batch(batch)
        scaled.fit_batch(batch)
        assert scaled.last_alpha == pytest.approx(plain.last_alpha, abs=1e-6)
    assert seen_scales == [2.0**12, 2.0**12]  # the Brain passed the scale to MGDA
    assert scaled.scaler.get_scale() == 2.0**12  # no overflow, no skipped step
    for a, b in zip(params_of(plain), params_of(scaled)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grad_scaler_skips_a_step_with_infinite_gradient():
    brain = make_brain()
    brain.on_fit_start()
    brain.scaler = torch.GradScaler("cpu", init_scale=2.0**12)
    weight = brain.modules.classifier.weight
    calls = []

    def poison_once(grad):
        calls.append(1)
        return grad * float("inf") if len(calls) == 1 else grad

    weight.register_hook(poison_once)
    before = params_of(brain)
    brain.fit_batch(make_batch(0))
    # The scaler found the inf, skipped the step and halved the scale.
    assert brain.scaler.get_scale() == 2.0**11
    for a, b in zip(before, params_of(brain)):
        assert torch.equal(a, b)
    brain.fit_batch(make_batch(1))
    assert any(not torch.equal(a, b) for a, b in zip(before, params_of(brain)))
    assert brain.skipped_nonfinite == 0  # the Brain left it to the scaler


@pytest.mark.parametrize("mode", ["mgda_ub", "mgda"])
def test_mgda_scaled_gradients_survive_fp16_underflow(mode):
    """Gradients ~1e-9 underflow in fp16; taken of scaled losses they do not."""
    g = torch.Generator().manual_seed(4)  # a seed with interior alphas in both modes
    a = torch.randn(4, generator=g)
    b = torch.randn(4, generator=g)
    base = torch.randn(6, 4, generator=g)

    def run(dtype, grad_scale):
        weight = torch.nn.Parameter(torch.ones(4, dtype=dtype))
        shared = base.to(dtype) * weight  # the "embedding", computed in dtype
        loss_cls = 1e-9 * (shared.float() * a).sum()
        loss_con = 2e-9 * (shared.float() * b).sum() + 1e-9 * shared.float().square().sum()
        out = MGDABalancer(mode)(
            loss_cls,
            loss_con,
            shared=shared,
            parameters=[weight],
            grad_scale=grad_scale,
        )
        return float(out.alpha)

    reference = run(torch.float32, 1.0)
    assert 0.02 < reference < 0.98  # an interior solution, not a clipped one
    # Without scaling the fp16 gradients are all zero: the answer is junk.
    assert run(torch.float16, 1.0) != pytest.approx(reference, abs=1e-2)
    for scale in (2.0**16, 2.0**20):
        assert run(torch.float16, scale) == pytest.approx(reference, abs=1e-2)
        assert run(torch.float32, scale) == pytest.approx(reference, abs=1e-6)
