"""The SpeechBrain ``Brain`` that trains a speaker encoder with AAM-softmax + AM-SupCon.

:class:`AngularContrastiveBrain` fills in SpeechBrain's public hooks and keeps
its ``fit_batch`` (gradient accumulation, GradScaler, DDP's ``no_sync``,
clipping, checkpointing). A training batch goes::

    on_fit_batch_start   keep the module buffers (a skipped batch puts them back)
    compute_forward      features, augmentation, embeddings, cosine logits (autocast)
    compute_objectives   the JointObjective in float32 (sb_angcl.objective.joint):
                         alpha * L_cls + (1 - alpha) * L_con; its parts join the outputs
    check_loss_isfinite  a non-finite loss on any rank skips the batch on every rank
    optimizers_step      ... as does a non-finite gradient; else SpeechBrain's step
    on_fit_batch_end     the parts counted in the epoch statistics; a per-step LR schedule

More than ``nonfinite_patience`` (SpeechBrain's run option) skipped batches in
a row raise :class:`~sb_angcl.training.nonfinite.NonFiniteLossError`. Before
resuming, checkpoints half-written by a killed run are set aside. Validation
reports the classification loss and error.

The hparams it reads (:data:`HPARAMS`, all required): ``objective`` (a
:class:`~sb_angcl.objective.joint.JointObjective` built in the YAML),
``augmentation`` (``waveform`` | ``features`` | ``none``, with ``wav_augment``
or ``feat_augment``), ``positive_views`` (1, or 2: each crop and an augmented
copy of it, same label), ``lr_annealing`` (a
:class:`~sb_angcl.training.lr_schedule.WarmupDecayScheduler`, stepped per
optimiser step; any other per epoch; or None), ``error_stats`` and
``train_logger`` (None allowed), and ``checkpoints_to_keep`` with a
checkpointer. Modules: ``compute_features``, ``mean_var_norm``,
``embedding_model``, ``classifier`` (cosine logits), optionally
``contrastive_head``.

Authors
 * sb-angcl contributors
"""

import logging
import math

import speechbrain as sb
import torch
from torch.nn.parallel import DistributedDataParallel

from sb_angcl.data.augment import select_augmenters
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.objective.joint import JointObjective
from sb_angcl.training.checkpoints import discard_incomplete_checkpoints
from sb_angcl.training.epoch_stats import EpochStats
from sb_angcl.training.lr_schedule import WarmupDecayScheduler
from sb_angcl.training.nonfinite import (  # noqa: F401  (NonFiniteLossError: raised here)
    NonFiniteLossError,
    SkippedBatches,
    all_ranks_finite,
    gradients_finite,
    note_nonfinite_audio,
)

logger = logging.getLogger(__name__)

#: The hparams the Brain reads (``checkpoints_to_keep`` too, with a checkpointer).
HPARAMS = (
    "objective",
    "augmentation",
    "positive_views",
    "lr_annealing",
    "error_stats",
    "train_logger",
)


class AngularContrastiveBrain(sb.Brain):
    """Joint AAM-softmax and AM-SupCon training with loss balancing.

    Example
    -------
    >>> from sb_angcl.objective.losses import AngularSupConLoss
    >>> from sb_angcl.objective.balancing import make_balancer
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    >>> from speechbrain.nnet.losses import LogSoftmaxWrapper, AdditiveAngularMargin
    >>> modules = {
    ...     "compute_features": Fbank(n_mels=20),
    ...     "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
    ...     "embedding_model": ECAPA_TDNN(20, channels=[16, 16, 16, 16, 48], lin_neurons=8),
    ...     "classifier": Classifier(8, out_neurons=3),
    ... }
    >>> objective = JointObjective(
    ...     LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
    ...     AngularSupConLoss(0.2, 0.07, attention_temperature=1.0), make_balancer("mgda_ub"))
    >>> hparams = {
    ...     "objective": objective, "augmentation": "none", "positive_views": 1,
    ...     "lr_annealing": None, "error_stats": None, "train_logger": None,
    ... }
    >>> brain = AngularContrastiveBrain(modules, lambda p: torch.optim.SGD(p, 0.01), hparams)
    >>> brain.on_fit_start()
    >>> batch = sb.dataio.batch.PaddedBatch([
    ...     {"id": str(i), "sig": torch.randn(4000), "spk_id_encoded": torch.LongTensor([i % 3])}
    ...     for i in range(6)])
    >>> loss = brain.fit_batch(batch)
    >>> bool(torch.isfinite(loss)), 0.0 <= brain.last_alpha <= 1.0
    (True, True)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Files whose audio held NaN/inf samples: path -> count (named once each).
        self.nonfinite_audio_files = {}
        self.skips = SkippedBatches(self.nonfinite_patience)
        self.stats = EpochStats()
        self.last_alpha = math.nan

    # ------------------------------------------------------------------ the batch
    def compute_forward(self, batch, stage):
        """Waveforms to embeddings ``[N, 1, D]`` and cosine logits ``[N, 1, C]``.

        With ``positive_views: 2`` (training only) each crop gives two views
        with the same label, the authors' positives: the crop as it is and the
        crop through the YAML's augmentation, stacked along the batch (clean
        views first), so both losses see ``2N`` samples.
        """
        note_nonfinite_audio(batch, self.nonfinite_audio_files)
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        two_views = self.views(stage) == 2
        wav_augment, feat_augment = self.augmenters(stage)
        if wav_augment is not None:
            wavs, lens = augment_views(wav_augment, wavs, lens, two_views)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        if feat_augment is not None:
            # Masks on the normalised features: masked bins hold the mean (0).
            feats, lens = augment_views(feat_augment, feats, lens, two_views)
        embeddings = self.modules.embedding_model(feats, lens)
        if embeddings.dim() == 2:
            embeddings = embeddings.unsqueeze(1)
        cosine = self.modules.classifier(embeddings)
        return {"embeddings": embeddings, "cosine": cosine, "lens": lens}

    def augmenters(self, stage):
        """``(wav_augment, feat_augment)`` in force: the YAML's ``augmentation``, in training only."""
        if stage != sb.Stage.TRAIN:
            return None, None
        return select_augmenters(self.hparams.augmentation, self.hparams)

    def views(self, stage):
        """Views of each crop: the YAML's ``positive_views`` in training, else 1."""
        return self.hparams.positive_views if stage == sb.Stage.TRAIN else 1

    def _labels(self, batch, stage):
        labels, _ = batch.spk_id_encoded
        labels = labels.to(self.device)
        for augment in self.augmenters(stage):
            if augment is not None:
                replicated = augment.replicate_labels(labels)
                labels = torch.cat([labels, replicated]) if self.views(stage) == 2 else replicated
        return labels

    def compute_objectives(self, outputs, batch, stage):
        """The balanced objective in training, the classification loss otherwise (float32).

        In training the :class:`~sb_angcl.objective.joint.ObjectiveResult` joins
        the outputs as ``outputs["objective"]`` for :meth:`on_fit_batch_end`.
        """
        labels = self._labels(batch, stage)
        with torch.autocast(device_type=self.device_type, enabled=False):
            cosine = outputs["cosine"].float()
            if stage != sb.Stage.TRAIN:
                loss = self.hparams.objective.classification_loss(cosine, labels)
                if self.error_metrics is not None:
                    self.error_metrics.append(batch.id, outputs["cosine"], labels)
                return loss
            result = self.hparams.objective(
                outputs["embeddings"],
                cosine,
                labels,
                head=getattr(self.modules, "contrastive_head", None),
                encoder=self.modules.embedding_model,
                grad_scale=self.scaler.get_scale() if self.scaler.is_enabled() else 1.0,
            )
        outputs["objective"] = result
        return result.loss

    def on_fit_batch_start(self, batch, should_step):
        """Keep the module buffers: the forward pass updates BatchNorm statistics, a skip restores them."""
        self.skips.begin(self.modules, batch.id)

    def check_loss_isfinite(self, loss):
        """Skip the batch on every rank when its loss is non-finite on any (a collective under DDP).

        SpeechBrain back-propagates anyway; the step is then not taken and the
        gradients are dropped.
        """
        if not all_ranks_finite(loss):
            self.skips.skip(self.step, "loss")

    def optimizers_step(self):
        """SpeechBrain's step, unless the batch is skipped or a gradient is non-finite.

        With a GradScaler (fp16) non-finite gradients are the scaler's to skip.
        """
        if not (self.skips.skipping or self.scaler.is_enabled() or gradients_finite(self.modules)):
            self.skips.skip(self.step, "gradient")
        if not self.skips.skipping:
            super().optimizers_step()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Count the batch in the epoch statistics and step a per-step LR schedule; or drop a skipped one."""
        if self.skips.end(should_step):
            self.zero_grad(set_to_none=True)
            return
        result = outputs["objective"]
        self.stats.add(result)
        self.last_alpha = float(result.alpha)
        annealing = self.hparams.lr_annealing
        if should_step and isinstance(annealing, WarmupDecayScheduler):
            annealing.on_batch_end(self.optimizer)

    @property
    def skipped_nonfinite(self):
        """Batches skipped for a non-finite loss or gradient in this fit."""
        return self.skips.total

    # ------------------------------------------------------------------ set-up
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loaders, the speaker-balanced sampler kept as it is; the schedule sized.

        Under DDP SpeechBrain wraps any ``batch_sampler`` in a
        ``DistributedSamplerWrapper``, which would split these batches again
        (the sampler gives each rank its own speakers), and calls ``set_epoch``
        only on samplers it made; so a
        :class:`~sb_angcl.data.sampler.SpeakerBalancedBatchSampler`'s loader is
        made directly, registered with the checkpointer, and the sampler
        becomes ``train_sampler``. A ``WarmupDecayScheduler`` learns the
        optimiser steps per epoch from the training loader.
        """
        sampler = loader_kwargs.get("batch_sampler")
        if stage == sb.Stage.TRAIN and isinstance(sampler, SpeakerBalancedBatchSampler):
            loader = sb.dataio.dataloader.make_dataloader(dataset, **loader_kwargs)
            if self.checkpointer is not None and ckpt_prefix is not None:
                self.checkpointer.add_recoverable(ckpt_prefix + stage.name, loader)
            self.train_sampler = sampler
            views = self.hparams.positive_views
            logger.info(
                "Training batches: %d speakers x %d utterances x %d view(s) = %d samples.",
                sampler.speakers_per_batch, sampler.utterances_per_speaker, views,
                sampler.speakers_per_batch * sampler.utterances_per_speaker * views,
            )
        else:
            loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        annealing = self.hparams.lr_annealing
        if stage == sb.Stage.TRAIN and isinstance(annealing, WarmupDecayScheduler):
            try:
                batches = len(loader)
            except TypeError:
                raise TypeError(
                    "the learning-rate schedule is defined in epochs and needs the "
                    "training loader's length; this loader has none"
                ) from None
            steps = max(batches // self.grad_accumulation_factor, 1)
            annealing.set_steps_per_epoch(steps)
            logger.info("Learning-rate schedule: %d optimiser steps per epoch.", steps)
        return loader

    def _wrap_distributed(self):
        # SpeechBrain 1.1.2's Brain._wrap_distributed converts every BatchNorm to
        # SyncBatchNorm, which PyTorch refuses on CPU, and no public hook or run
        # option avoids it: DDP on CPU (gloo) wraps here without the conversion
        # (BatchNorm statistics stay per rank); any other device keeps SpeechBrain's.
        if not (self.distributed_launch and self.device_type == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, find_unused_parameters=self.find_unused_parameters
                )
        return None

    def on_fit_start(self):
        """Check the hparams, register the stateful balancer and schedule, then SpeechBrain's start.

        A balancer with state (MGDA's moving average of alpha) and a
        ``WarmupDecayScheduler`` are checkpointed even when the YAML's
        ``checkpointer`` does not list them; after the recovery the schedule
        sets the rate for the first batch.
        """
        missing = [k for k in HPARAMS if not hasattr(self.hparams, k)]
        if self.checkpointer is not None and not hasattr(self.hparams, "checkpoints_to_keep"):
            missing.append("checkpoints_to_keep")
        if missing:
            raise KeyError(
                f"the hparams lack {', '.join(missing)}: set them in the recipe YAML "
                "(every recipes/*/SpeakerRec/hparams/*.yaml sets them)"
            )
        if not isinstance(self.hparams.objective, JointObjective):
            raise TypeError(
                f"hparams objective must be a sb_angcl.objective.joint.JointObjective, got "
                f"{type(self.hparams.objective).__name__}; build it in the YAML with "
                "!new:sb_angcl.objective.joint.JointObjective (see the shipped recipe YAMLs)"
            )
        balancer = self.hparams.objective.balancer
        views = self.hparams.positive_views
        if views not in (1, 2):
            raise ValueError(f"positive_views must be 1 or 2, got {views!r}")
        if views == 2 and self.hparams.augmentation == "none":
            raise ValueError(
                "positive_views: 2 pairs each crop with an augmented copy of it, and "
                "augmentation is none: set augmentation: features (or waveform)"
            )
        annealing = self.hparams.lr_annealing
        if self.checkpointer is not None:
            recoverables = self.checkpointer.recoverables
            if balancer.state_dict() and "balancer" not in recoverables:
                self.checkpointer.add_recoverable("balancer", balancer, optional_load=True)
            if (
                isinstance(annealing, WarmupDecayScheduler)
                and annealing not in recoverables.values()
            ):
                self.checkpointer.add_recoverable("lr_annealing", annealing)
        self.stats = EpochStats()
        self.skips = SkippedBatches(self.nonfinite_patience)
        self.last_alpha = math.nan
        super().on_fit_start()
        if isinstance(annealing, WarmupDecayScheduler) and self.optimizer is not None:
            annealing.apply(self.optimizer)

    def init_optimizers(self):
        """SpeechBrain's optimiser set-up, then half-written checkpoints set aside.

        ``Brain.on_fit_start`` calls this once every recoverable is registered,
        right before it recovers the latest checkpoint.
        """
        super().init_optimizers()
        if self.checkpointer is not None:
            sb.utils.distributed.run_on_main(
                discard_incomplete_checkpoints, args=[self.checkpointer]
            )

    # ------------------------------------------------------------------ stages
    def on_stage_start(self, stage, epoch=None):
        """New epoch statistics (training) and error metrics."""
        if stage == sb.Stage.TRAIN:
            self.stats = EpochStats()
            self.hparams.objective.start_epoch(epoch or 1)
        error_stats = self.hparams.error_stats
        self.error_metrics = error_stats() if error_stats is not None else None

    def epoch_train_stats(self):
        """Means over the epoch's optimised batches: losses, alpha, attention spread."""
        means = self.stats.means()
        objective = self.hparams.objective
        if objective.fade_start is not None:
            means["con_share"] = objective.contrastive_share
        return means

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, step an epoch-wise LR schedule, save checkpoints."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.epoch_train_stats()}
            self.train_stats["time_s"] = self.stats.seconds()
            return
        stats = {"loss": stage_loss}
        if self.error_metrics is not None and len(self.error_metrics.scores):
            stats["ErrorRate"] = self.error_metrics.summarize("average")
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"] if self.optimizer else None
            annealing = self.hparams.lr_annealing
            if annealing is not None and not isinstance(annealing, WarmupDecayScheduler):
                _, new_lr = annealing(epoch)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            if self.hparams.train_logger is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr},
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"ErrorRate": stats.get("ErrorRate", stage_loss)},
                    min_keys=["ErrorRate"],
                    num_to_keep=self.hparams.checkpoints_to_keep,
                )
        else:
            logger.info("Test stats: %s", stats)


def augment_views(augment, batch, lens, two_views):
    """``augment(batch, lens)``; with two views, the batch and its augmented copy stacked."""
    augmented, augmented_lens = augment(batch, lens)
    if two_views:
        return stack_views(batch, lens, augmented, augmented_lens)
    return augmented, augmented_lens


def stack_views(first, first_lens, second, second_lens):
    """Two views ``[N, T1, ...]``, ``[N, T2, ...]`` stacked to ``[2N, max(T1, T2), ...]``.

    The shorter is zero-padded in time; the relative lengths follow.

    Example
    -------
    >>> batch, lens = stack_views(torch.ones(2, 4), torch.ones(2), torch.ones(2, 2), torch.ones(2))
    >>> tuple(batch.shape), lens.tolist()
    ((4, 4), [1.0, 1.0, 0.5, 0.5])
    """
    length = max(first.shape[1], second.shape[1])
    parts, all_lens = [], []
    for views, lens in ((first, first_lens), (second, second_lens)):
        pad = length - views.shape[1]
        if pad:
            widths = [0, 0] * (views.dim() - 2) + [0, pad]
            views = torch.nn.functional.pad(views, widths)
        parts.append(views)
        all_lens.append(lens * (length - pad) / length)
    return torch.cat(parts), torch.cat(all_lens)
