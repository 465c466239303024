"""Margin warm-up: both margins rise linearly from 0 and reach their targets
at the first step of epoch ``margin_warmup_epochs + 1``, during real training
through the Brain, and the warmed-up AAM margin is SpeechBrain's own
``AdditiveAngularMargin`` at that margin."""

import math

import pytest
import speechbrain as sb
import torch
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from sb_angcl.objective.attention import ClassAwareAttention
from sb_angcl.objective.balancing import make_balancer
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.objective.margins import MarginWarmup, set_aam_margin
from sb_angcl.training.brain import AngularContrastiveBrain


def test_set_aam_margin_equals_a_fresh_module():
    cos = torch.rand(6, 1, 5) * 2 - 1
    target = torch.nn.functional.one_hot(torch.arange(6) % 5, 5).unsqueeze(1).float()
    for m in (0.0, 0.05, 0.2, 0.5):
        warmed = AdditiveAngularMargin(margin=0.3, scale=30)
        set_aam_margin(warmed, m)
        fresh = AdditiveAngularMargin(margin=m, scale=30)
        assert torch.allclose(warmed(cos, target), fresh(cos, target))


def test_warmup_schedule_is_linear_and_reaches_target_at_epoch_w_plus_1():
    cls = LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30))
    con = AngularSupConLoss(margin=0.3)
    warm = MarginWarmup(3, cls, con)
    assert warm.update(1, 0.0) == (0.0, 0.0)
    aam, sup = warm.update(2, 0.5)  # 1.5 of 3 epochs
    assert aam == pytest.approx(0.1) and sup == pytest.approx(0.15)
    aam, sup = warm.update(3, 0.999)
    assert aam < 0.2 and sup < 0.3
    assert warm.update(4, 0.0) == (0.2, 0.3)
    assert warm.update(9, 0.5) == (0.2, 0.3)
    off = MarginWarmup(0, cls, con)
    assert not off.enabled and off.factor(1, 0.0) == 1.0
    with pytest.raises(ValueError, match="margin_warmup_epochs"):
        MarginWarmup(-1, cls, con)


class _Recording(AngularContrastiveBrain):
    """Records both margins in force at every training step."""

    def compute_forward(self, batch, stage):
        if stage == sb.Stage.TRAIN:
            aam = self.hparams.classification_loss.loss_fn.margin
            con = self.hparams.contrastive_loss.margin
            self.seen.append((self._epoch, self.step, aam, con))
        return super().compute_forward(batch, stage)


def _tiny_brain(warmup_epochs):
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(20, channels=[16, 16, 16, 16, 48], lin_neurons=8),
        "classifier": Classifier(8, out_neurons=3),
    }
    hparams = {
        "classification_loss": LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
        "contrastive_loss": AngularSupConLoss(0.25, 0.07),
        "class_attention": ClassAwareAttention(1.0 / 30),
        "balancer": make_balancer("fixed", 0.5),
        "margin_warmup_epochs": warmup_epochs,
    }
    brain = _Recording(modules, lambda p: torch.optim.SGD(p, 0.01), hparams,
                       run_opts={"noprogressbar": True})
    brain.seen = []
    return brain


def _dataset(n=12):
    data = {
        str(i): {"sig": torch.randn(3200, generator=torch.Generator().manual_seed(i)),
                 "spk": i % 3}
        for i in range(n)
    }
    ds = sb.dataio.dataset.DynamicItemDataset(
        {k: {"i": k} for k in data},
        dynamic_items=[
            {"func": lambda i: data[i]["sig"], "takes": ["i"], "provides": "sig"},
            {"func": lambda i: torch.LongTensor([data[i]["spk"]]), "takes": ["i"],
             "provides": "spk_id_encoded"},
        ],
        output_keys=["id", "sig", "spk_id_encoded"],
    )
    return ds


def test_brain_warms_up_both_margins_over_the_stated_epochs():
    brain = _tiny_brain(warmup_epochs=2)
    epochs = sb.utils.epoch_loop.EpochCounter(4)
    brain.fit(epochs, _dataset(), train_loader_kwargs={"batch_size": 4})
    seen = brain.seen
    assert len(seen) == 4 * 3  # 3 batches per epoch
    for epoch, step, aam, con in seen:
        progress = (epoch - 1 + (step - 1) / 3) / 2
        k = min(1.0, progress)
        assert math.isclose(aam, 0.2 * k, abs_tol=1e-9), (epoch, step, aam)
        assert math.isclose(con, 0.25 * k, abs_tol=1e-9), (epoch, step, con)
    # strictly below the target during warm-up, the target from epoch 3 on
    assert all(aam < 0.2 and con < 0.25 for e, _, aam, con in seen if e <= 2)
    assert all(aam == pytest.approx(0.2) and con == pytest.approx(0.25)
               for e, _, aam, con in seen if e >= 3)
    assert seen[0][2:] == (0.0, 0.0)
    # and the epoch statistics report the margins in force
    stats = brain.epoch_train_stats()
    assert stats["aam_margin"] == pytest.approx(0.2) and stats["margin"] == pytest.approx(0.25)


def test_no_warmup_leaves_margins_alone():
    brain = _tiny_brain(warmup_epochs=0)
    brain.fit(sb.utils.epoch_loop.EpochCounter(1), _dataset(),
              train_loader_kwargs={"batch_size": 4})
    assert {(aam, con) for _, _, aam, con in brain.seen} == {(0.2, 0.25)}
