"""The SpeechBrain ``Brain`` that trains a speaker encoder with AAM + AM-SupCon.

:class:`AngularContrastiveBrain` is the one Brain of the recipes.
:meth:`~AngularContrastiveBrain.compute_forward` gives the embeddings and the
classifier's cosine logits; :meth:`~AngularContrastiveBrain.compute_objectives`
gives the training loss: the AAM-softmax loss on the logits and the
angular-margin supervised contrastive loss on the embeddings (with class-aware
attention weights when enabled), combined by the YAML's balancer (a
:class:`~sb_angcl.objective.balancing.Balancer`: ``fixed``, ``mgda_ub``, ``mgda``). In
validation it gives the AAM-softmax loss and the classification error.
SpeechBrain's gradient accumulation, clipping, GradScaler, DDP and
checkpointing are kept; the speaker-balanced sampler is used as is under DDP,
and a learning-rate schedule defined in epochs learns the steps of an epoch
from the training loader.

Reliability: :meth:`~AngularContrastiveBrain.fit_batch` adds what SpeechBrain
lacks: a batch with a non-finite loss or gradient on any rank is skipped with
a warning on every rank, leaving parameters, optimiser state and BatchNorm
statistics as they were; more than ``nonfinite_patience`` (SpeechBrain's run
option) in a row raise :class:`~sb_angcl.training.nonfinite.NonFiniteLossError`. Files whose audio held
NaN/inf samples are named (:func:`~sb_angcl.training.nonfinite.note_nonfinite_audio`).
Before resuming, checkpoints half-written by a killed run are set aside
(:func:`~sb_angcl.training.checkpoints.discard_incomplete_checkpoints`).

Hyperparameters it reads (``self.hparams``):

* modules ``compute_features``, ``mean_var_norm``, ``embedding_model``,
  ``classifier`` (a cosine head such as ECAPA-TDNN's ``Classifier``);
* ``classification_loss``: e.g. ``LogSoftmaxWrapper(AdditiveAngularMargin)``;
* ``contrastive_loss``: :class:`~sb_angcl.objective.losses.AngularSupConLoss` or ``None``;
* ``class_attention``: :class:`~sb_angcl.objective.attention.ClassAwareAttention` or ``None``;
* ``balancer``: from :func:`~sb_angcl.objective.balancing.make_balancer`;
* optional ``wav_augment`` (SpeechBrain ``Augmenter``), ``lr_annealing``,
  ``gather_across_ranks`` (default True), ``error_stats``, ``train_logger``,
  ``epoch_counter``.

Authors
 * sb-angcl contributors
"""

import logging
import math

import speechbrain as sb
import torch

from sb_angcl.data.augment import select_augmenters
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.objective.attention import negative_weight_percentiles, pair_weights_from_confidence
from sb_angcl.objective.balancing import Balancer
from sb_angcl.objective.distributed import (
    all_ranks_finite,
    gather_no_grad,
    gather_with_grad,
    world_size,
    wrap_distributed_modules,
)
from sb_angcl.objective.margins import MarginWarmup
from sb_angcl.training.checkpoints import discard_incomplete_checkpoints, is_checkpointable
from sb_angcl.training.epoch_stats import EpochStats
from sb_angcl.training.nonfinite import (  # noqa: F401  (NonFiniteLossError: raised here)
    NonFiniteLossError,
    SkippedBatches,
    gradients_finite,
    note_nonfinite_audio,
)

logger = logging.getLogger(__name__)


class AngularContrastiveBrain(sb.Brain):
    """Joint AAM-softmax and AM-SupCon training with loss balancing.

    Example
    -------
    >>> from sb_angcl.objective.losses import AngularSupConLoss
    >>> from sb_angcl.objective.attention import ClassAwareAttention
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
    >>> hparams = {
    ...     "classification_loss": LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
    ...     "contrastive_loss": AngularSupConLoss(0.2, 0.07),
    ...     "class_attention": ClassAwareAttention(1.0),
    ...     "balancer": make_balancer("mgda_ub"),
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

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Waveforms to embeddings ``[N, 1, D]`` and cosine logits ``[N, 1, C]``.

        Arguments
        ---------
        batch : PaddedBatch
            With ``sig`` (and ``spk_id_encoded`` for training).
        stage : sb.Stage
            Augmentation is applied in training only.

        Returns
        -------
        dict
            ``embeddings``, ``cosine``, ``lens``.
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        wav_augment, feat_augment = self.augmenters(stage)
        if wav_augment is not None:
            wavs, lens = wav_augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        if feat_augment is not None:
            # Masks on the normalised features: masked bins hold the mean (0).
            feats, lens = feat_augment(feats, lens)
        embeddings = self.modules.embedding_model(feats, lens)
        if embeddings.dim() == 2:
            embeddings = embeddings.unsqueeze(1)
        cosine = self.modules.classifier(embeddings)
        return {"embeddings": embeddings, "cosine": cosine, "lens": lens}

    def hparams_get(self, key, default=None):
        """``self.hparams.key`` or ``default`` when the YAML lacks it.

        Arguments
        ---------
        key : str
            Hyperparameter name.
        default : object
            Returned when missing.

        Returns
        -------
        object
        """
        return getattr(self.hparams, key, default)

    def _labels(self, batch, stage):
        labels, _ = batch.spk_id_encoded
        labels = labels.to(self.device)
        for augment in self.augmenters(stage):
            if augment is not None:
                labels = augment.replicate_labels(labels)
        return labels

    def augmenters(self, stage):
        """The waveform and feature augmenters in force for ``stage``.

        Only training augments; the YAML's ``augmentation`` picks the domain
        (see :func:`sb_angcl.data.augment.select_augmenters`).

        Arguments
        ---------
        stage : sb.Stage
            The stage.

        Returns
        -------
        tuple
            ``(wav_augment, feat_augment)``, each an Augmenter or None.
        """
        if stage != sb.Stage.TRAIN:
            return None, None
        return select_augmenters(
            self.hparams_get("augmentation"),
            self.hparams_get("wav_augment"),
            self.hparams_get("feat_augment"),
        )

    def compute_loss_parts(self, outputs, batch, stage):
        """The two objectives of one batch, in float32.

        Arguments
        ---------
        outputs : dict
            From :meth:`compute_forward`.
        batch : PaddedBatch
            With ``spk_id_encoded``.
        stage : sb.Stage
            Current stage.

        Returns
        -------
        loss_cls, loss_con : torch.Tensor
            ``loss_con`` is a zero (with graph) when there is no contrastive
            loss, or in training when the balancer gives it no weight.
        """
        labels = self._labels(batch, stage)
        cosine = outputs["cosine"].float()
        embeddings = outputs["embeddings"]
        loss_cls = self.hparams.classification_loss(cosine, labels)
        contrastive = self.hparams_get("contrastive_loss")
        if contrastive is None or (
            stage == sb.Stage.TRAIN and not self.hparams.balancer.uses_contrastive
        ):
            return loss_cls, embeddings.float().sum() * 0.0
        flat_labels = labels.reshape(-1)
        attention = self.hparams_get("class_attention")
        if attention is not None and getattr(attention, "enabled", True):
            confidence = attention.confidence(cosine, flat_labels)
        else:
            confidence = None
        head = getattr(self.modules, "contrastive_head", None)
        if head is not None:
            embeddings = head(embeddings)
        if self.hparams_get("gather_across_ranks", True) and world_size() > 1:
            embeddings = gather_with_grad(embeddings.reshape(embeddings.shape[0], -1))
            flat_labels = gather_no_grad(flat_labels)
            if confidence is not None:
                confidence = gather_no_grad(confidence)
        if stage == sb.Stage.TRAIN and flat_labels.unique().numel() < 2:
            self._one_speaker_batches += 1
            if self._one_speaker_batches <= 3:
                logger.warning(
                    "A training batch holds a single speaker: the contrastive loss "
                    "has no negatives in it (only positives are pulled together)."
                )
        weights = None
        if confidence is not None:
            weights = pair_weights_from_confidence(confidence, flat_labels)
            if stage == sb.Stage.TRAIN:
                self.stats.add_weight_spread(*negative_weight_percentiles(weights, flat_labels))
        loss_con = contrastive(embeddings, flat_labels, pair_weights=weights)
        return loss_cls, loss_con

    def compute_objectives(self, outputs, batch, stage):
        """The loss of a batch: balanced in training, AAM-softmax otherwise.

        In training, the classification and contrastive losses
        (:meth:`compute_loss_parts`) are combined by the YAML's ``balancer``
        (a :class:`~sb_angcl.objective.balancing.Balancer`) into
        ``alpha * L_cls + (1 - alpha) * L_con``; with a balancer that gives
        the contrastive loss no weight the loss is ``L_cls`` (``alpha = 1``).
        The parts and ``alpha`` are kept for the epoch statistics, which
        count them once the step is taken. In validation and test the loss is
        the classification loss, and the classification error is noted.

        Arguments
        ---------
        outputs : dict
            From :meth:`compute_forward`.
        batch : PaddedBatch
            Batch with labels.
        stage : sb.Stage
            Current stage.

        Returns
        -------
        torch.Tensor
        """
        if stage == sb.Stage.TRAIN:
            loss_cls, loss_con = self.compute_loss_parts(outputs, batch, stage)
            balancer = self.hparams.balancer
            if not balancer.uses_contrastive:
                loss, alpha = loss_cls, torch.tensor(1.0)
            else:
                params = None
                if balancer.needs_parameters:
                    params = list(self.modules.embedding_model.parameters())
                grad_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                loss, alpha = balancer(
                    loss_cls,
                    loss_con,
                    shared=outputs["embeddings"],
                    parameters=params,
                    grad_scale=grad_scale,
                )
            self._batch_parts = (loss_cls, loss_con, alpha)
            return loss
        labels = self._labels(batch, stage)
        loss_cls = self.hparams.classification_loss(outputs["cosine"].float(), labels)
        if self.error_metrics is not None:
            self.error_metrics.append(batch.id, outputs["cosine"], labels)
        return loss_cls

    # ------------------------------------------------------------------ training
    def fit_batch(self, batch):
        """SpeechBrain's training step, plus what it lacks for this objective.

        As ``sb.Brain.fit_batch`` (gradient accumulation, GradScaler, DDP's
        ``no_sync``, clipping in :meth:`optimizers_step`), with three
        differences: :meth:`compute_objectives` runs outside the autocast
        context (the losses and the balancing in float32); a non-finite loss
        or gradient on any rank skips the batch on every rank, putting the
        module buffers (BatchNorm statistics) back as they were; and files
        whose audio held NaN/inf samples are reported.

        Arguments
        ---------
        batch : PaddedBatch
            Training batch.

        Returns
        -------
        torch.Tensor
            The detached balanced loss.
        """
        note_nonfinite_audio(batch, self.nonfinite_audio_files)
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        # The forward pass updates BatchNorm statistics; a skipped batch puts
        # them back (a NaN there would poison every later evaluation).
        self.skips.keep_buffers(self.modules)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
            loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            if not all_ranks_finite(loss):
                self._skip(batch, "loss")
                return loss.detach().cpu()
            self.scaler.scale(loss / self.grad_accumulation_factor).backward()
        if should_step:
            if not self.scaler.is_enabled() and not gradients_finite(self.modules):
                self._skip(batch, "gradient")
                return loss.detach().cpu()
            self.optimizers_step()
        self.skips.stepped(should_step)
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's evaluation step; files with NaN/inf audio are reported.

        Arguments
        ---------
        batch : PaddedBatch
            Batch.
        stage : sb.Stage
            The stage.

        Returns
        -------
        torch.Tensor
        """
        note_nonfinite_audio(batch, self.nonfinite_audio_files)
        return super().evaluate_batch(batch, stage)

    def _skip(self, batch, what):
        """Drop this batch's gradients and buffer updates; stop after too many."""
        self.zero_grad(set_to_none=True)
        self.skips.skip(batch.id, self.step, what)

    @property
    def skipped_nonfinite(self):
        """Batches skipped for a non-finite loss or gradient in this fit."""
        return self.skips.total

    def _record(self, loss_cls, loss_con, alpha):
        """Count one optimised batch in the epoch statistics."""
        self.stats.add(loss_cls, loss_con, alpha)
        self.last_alpha = float(alpha)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; the training one sizes the schedules.

        The training loader's length is kept for the margin warm-up's
        progress within an epoch, and a learning-rate schedule defined in
        epochs (one with ``set_steps_per_epoch``, e.g.
        :class:`~sb_angcl.training.lr_schedule.WarmupDecayScheduler`) learns the
        optimiser steps of an epoch on this rank: the loader's length over
        the gradient accumulation factor.

        Arguments
        ---------
        dataset : Dataset
            The data.
        stage : sb.Stage
            The stage.
        ckpt_prefix : str or None
            As in ``sb.Brain.make_dataloader``.
        **loader_kwargs : dict
            DataLoader options.

        Returns
        -------
        torch.utils.data.DataLoader
        """
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage != sb.Stage.TRAIN:
            return loader
        try:
            self._train_batches = len(loader)
        except TypeError:
            self._train_batches = None
        annealing = self.hparams_get("lr_annealing")
        if hasattr(annealing, "set_steps_per_epoch"):
            if self._train_batches is None:
                raise TypeError(
                    "the learning-rate schedule is defined in epochs and needs the "
                    "training loader's length; this loader has none"
                )
            steps = max(self._train_batches // self.grad_accumulation_factor, 1)
            annealing.set_steps_per_epoch(steps)
            logger.info("Learning-rate schedule: %d optimiser steps per epoch.", steps)
        return loader

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """Keep the speaker-balanced sampler as it is, also under DDP.

        SpeechBrain wraps any ``batch_sampler`` in a
        ``DistributedSamplerWrapper`` under DDP, which would split our
        batches a second time, and only calls ``set_epoch`` on samplers it
        made itself. :class:`~sb_angcl.data.sampler.SpeakerBalancedBatchSampler`
        already gives each rank its own speakers, so it is used as is and
        registered as the train sampler (``set_epoch`` every epoch,
        mid-epoch resume by batch count).
        """
        sampler = loader_kwargs.get("batch_sampler")
        if isinstance(sampler, SpeakerBalancedBatchSampler):
            self.train_sampler = sampler
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def on_fit_batch_start(self, batch, should_step):
        """Set the warmed-up margins for this step (no-op without warm-up).

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        should_step : bool
            Whether the optimiser steps after this batch.
        """
        warmup = getattr(self, "margin_warmup", None)
        if warmup is None or not warmup.enabled:
            return
        fraction = 0.0
        if getattr(self, "_train_batches", None):
            fraction = min(max(self.step - 1, 0) / self._train_batches, 1.0)
        warmup.update(self._epoch, fraction)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Count the batch in the epoch statistics; step a per-batch LR schedule.

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        outputs : dict
            Forward outputs.
        loss : torch.Tensor
            Balanced loss.
        should_step : bool
            Whether the optimiser stepped.
        """
        parts, self._batch_parts = getattr(self, "_batch_parts", None), None
        if parts is not None:
            self._record(*parts)
        annealing = self.hparams_get("lr_annealing")
        if should_step and annealing is not None and hasattr(annealing, "on_batch_end"):
            annealing.on_batch_end(self.optimizer)

    # ------------------------------------------------------------------ stages
    def _wrap_distributed(self):
        """Wrap the trainable modules in DDP, also on CPU (gloo).

        SpeechBrain 1.1 converts BatchNorm to ``SyncBatchNorm`` whatever the
        device, and PyTorch refuses that on CPU; see
        :func:`sb_angcl.objective.distributed.wrap_distributed_modules`.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        wrap_distributed_modules(self.modules, self.device, self.find_unused_parameters)

    def on_fit_start(self):
        """Set up margins, statistics and checkpointed state, then SpeechBrain's start.

        The balancer must be a :class:`~sb_angcl.objective.balancing.Balancer`; one
        with state (MGDA's moving average of alpha) and a learning-rate
        schedule that keeps a step counter are registered with the
        checkpointer when the YAML's ``checkpointer`` does not list them, so
        a resumed run continues them. After the recovery a schedule with
        ``apply`` sets the optimiser's rate for the first batch (the warm-up
        start, or where the resumed run was).
        """
        balancer = self.hparams_get("balancer")
        if not isinstance(balancer, Balancer):
            raise TypeError(
                f"hparams balancer must be a sb_angcl.objective.balancing.Balancer, got "
                f"{type(balancer).__name__}; build it in the YAML with "
                "!apply:sb_angcl.objective.balancing.make_balancer"
            )
        if getattr(self, "margin_warmup", None) is None:
            # Built once: it reads the target margins from the loss objects.
            self.margin_warmup = MarginWarmup(
                self.hparams_get("margin_warmup_epochs", 0) or 0,
                self.hparams_get("classification_loss"),
                self.hparams_get("contrastive_loss"),
            )
        self._epoch = 1
        annealing = self.hparams_get("lr_annealing")
        if self.checkpointer is not None:
            recoverables = self.checkpointer.recoverables
            if balancer.state_dict() and "balancer" not in recoverables:
                self.checkpointer.add_recoverable("balancer", balancer, optional_load=True)
            if (
                annealing is not None
                and annealing not in recoverables.values()
                and is_checkpointable(annealing)
            ):
                self.checkpointer.add_recoverable("lr_annealing", annealing)
        self.stats = EpochStats()
        self._batch_parts = None
        self.skips = SkippedBatches(self.nonfinite_patience)
        self._one_speaker_batches = 0
        self.last_alpha = math.nan
        if not hasattr(self, "nonfinite_audio_files"):
            self.nonfinite_audio_files = {}
        super().on_fit_start()
        if hasattr(annealing, "apply") and self.optimizer is not None:
            annealing.apply(self.optimizer)

    def init_optimizers(self):
        """SpeechBrain's optimiser set-up, then half-written checkpoints set aside.

        ``Brain.on_fit_start`` calls this once every recoverable (the
        optimiser included) is registered and right before it recovers the
        latest checkpoint, so a run killed while saving resumes from the
        checkpoint before (see :func:`discard_incomplete_checkpoints`).
        """
        super().init_optimizers()
        if self.checkpointer is not None:
            sb.utils.distributed.run_on_main(
                discard_incomplete_checkpoints, args=[self.checkpointer]
            )

    def on_stage_start(self, stage, epoch=None):
        """Reset statistics at the start of each stage.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        epoch : int
            The epoch.
        """
        if stage == sb.Stage.TRAIN:
            self.stats = EpochStats()
            self._epoch = epoch if epoch is not None else 1
        error_stats = self.hparams_get("error_stats")
        self.error_metrics = error_stats() if error_stats is not None else None

    def epoch_train_stats(self):
        """Mean losses and alpha over the training batches seen this epoch.

        With class-aware attention, also the 5th and 95th percentiles of the
        negative-pair weights (mean over batches; 1 and 1 = inert); with a
        margin warm-up, the margins in force.

        Returns
        -------
        dict
        """
        stats = self.stats.means()
        warmup = getattr(self, "margin_warmup", None)
        if warmup is not None and warmup.enabled:
            if warmup.aam is not None:
                stats["aam_margin"] = warmup.aam.margin
            if warmup.contrastive is not None:
                stats["margin"] = warmup.contrastive.margin
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, step the epoch scheduler, save checkpoints.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        stage_loss : float
            Average loss of the stage.
        epoch : int
            The epoch.
        """
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.epoch_train_stats()}
            self.train_stats["time_s"] = self.stats.seconds()
            return
        stats = {"loss": stage_loss}
        if self.error_metrics is not None and len(self.error_metrics.scores):
            stats["ErrorRate"] = self.error_metrics.summarize("average")
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"] if self.optimizer else None
            annealing = self.hparams_get("lr_annealing")
            if annealing is not None and not hasattr(annealing, "on_batch_end"):
                _, new_lr = annealing(epoch)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            train_logger = self.hparams_get("train_logger")
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr},
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"ErrorRate": stats.get("ErrorRate", stage_loss)},
                    min_keys=["ErrorRate"],
                    num_to_keep=self.hparams_get("checkpoints_to_keep", 2),
                )
        else:
            logger.info("Test stats: %s", stats)
