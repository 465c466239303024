"""Mixed precision: bf16 autocast through the Brain, GradScaler, fp16 on CPU.

Findings these tests pin down (CPU, SpeechBrain 1.1):

* ``--precision=bf16`` runs ``compute_forward`` under ``torch.autocast``;
  the objectives and MGDA are computed in float32 outside it. The balanced and
  classification losses stay within 1e-2 (relative) of float32; the
  contrastive loss moves by a few percent, because the whole encoder runs in
  bf16 and the loss divides cosines by the temperature (0.07).
* ``--precision=fp16`` is refused on CPU by SpeechBrain itself (ValueError);
  on GPUs it enables a GradScaler. The Brain's GradScaler path is exercised
  here with ``torch.GradScaler("cpu")``: same weights and alpha as without a
  scaler, and a step with an infinite gradient is skipped with the scale
  halved.
* MGDA takes gradients of the *scaled* losses: in fp16, gradients that would
  underflow to zero survive, and alpha does not depend on the scale.
"""

import pytest
import speechbrain as sb
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization

from sb_angcl.objective.attention import ClassAwareAttention
from sb_angcl.objective.balancing import MGDABalancer, make_balancer
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
        "classification_loss": LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
        "contrastive_loss": AngularSupConLoss(0.2, 0.07),
        "class_attention": ClassAwareAttention(1.0),
        "balancer": make_balancer(balancing),
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
    loss_cls, loss_con = brain.compute_loss_parts(out, batch, sb.Stage.TRAIN)
    result = brain.hparams.balancer(loss_cls, loss_con, shared=out["embeddings"])
    return out, [float(v.detach()) for v in (loss_cls, loss_con, result.loss, result.alpha)]


def params_of(brain):
    return [p.detach().clone() for p in brain.modules.parameters()]


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_autocast_losses_close_to_float32(seed):
    # 24 utterances: with only a handful, training-mode BatchNorm statistics
    # taken from bf16 activations move the losses by up to ~10 % (measured).
    batch = make_batch(seed, n=24)
    brain32, brain16 = make_brain("fp32"), make_brain("bf16")
    brain32.on_fit_start()
    brain16.on_fit_start()
    for a, b in zip(params_of(brain32), params_of(brain16)):
        assert torch.equal(a, b)  # same weights
    out32, (cls32, con32, loss32, alpha32) = objectives(brain32, batch)
    out16, (cls16, con16, loss16, alpha16) = objectives(brain16, batch)
    # The encoder really ran in bf16 (else this test compares fp32 with itself).
    assert out32["embeddings"].dtype == torch.float32
    assert out16["embeddings"].dtype == torch.bfloat16
    for value in (cls16, con16, loss16, alpha16):
        assert torch.isfinite(torch.tensor(value))
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert cls16 == pytest.approx(cls32, rel=1e-2)
    assert con16 == pytest.approx(con32, rel=1e-2)
    assert alpha16 == pytest.approx(alpha32, abs=2e-2)


def test_bf16_objectives_are_computed_in_float32():
    """Under bf16 the losses are the float32 losses of the bf16 outputs."""
    brain = make_brain("bf16", balancing="fixed")
    brain.on_fit_start()
    batch = make_batch(0)
    out, (cls16, con16, _, _) = objectives(brain, batch)
    labels = batch.spk_id_encoded[0]
    emb = out["embeddings"].detach().float()
    cosine = out["cosine"].detach().float()
    conf = brain.hparams.class_attention.confidence(cosine, labels.reshape(-1))
    from sb_angcl.objective.attention import pair_weights_from_confidence

    weights = pair_weights_from_confidence(conf, labels.reshape(-1))
    expected_con = brain.hparams.contrastive_loss(emb, labels, pair_weights=weights)
    expected_cls = brain.hparams.classification_loss(cosine, labels)
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
    original = scaled.hparams.balancer.forward

    def spy(*args, **kwargs):
        seen_scales.append(kwargs.get("grad_scale"))
        return original(*args, **kwargs)

    scaled.hparams.balancer.forward = spy
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
