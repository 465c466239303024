"""The SpeechBrain ``Brain`` that trains a speaker encoder with AAM + AM-SupCon.

:class:`AngularContrastiveBrain` computes features, embeddings and the
classifier's cosine logits; the AAM-softmax loss on the logits and the
angular-margin supervised contrastive loss on the embeddings (with class-aware
attention weights when enabled); and combines them with the balancer the YAML
names (``fixed``, ``mgda_ub``, ``mgda``) inside :meth:`fit_batch`, keeping
SpeechBrain's gradient accumulation, clipping, GradScaler, DDP and
checkpointing.

Reliability: a batch with a non-finite loss or gradient is skipped with a
warning, leaving parameters, optimiser state and BatchNorm statistics as they
were; more than ``nonfinite_patience`` (SpeechBrain's run option) in a row
raise :class:`NonFiniteLossError`. Before resuming, checkpoints half-written
by a killed run are set aside (:func:`discard_incomplete_checkpoints`).

Hyperparameters it reads (``self.hparams``):

* modules ``compute_features``, ``mean_var_norm``, ``embedding_model``,
  ``classifier`` (a cosine head such as ECAPA-TDNN's ``Classifier``);
* ``classification_loss``: e.g. ``LogSoftmaxWrapper(AdditiveAngularMargin)``;
* ``contrastive_loss``: :class:`~sb_angcl.losses.AngularSupConLoss` or ``None``;
* ``class_attention``: :class:`~sb_angcl.attention.ClassAwareAttention` or ``None``;
* ``balancer``: from :func:`~sb_angcl.balancing.make_balancer`;
* optional ``wav_augment`` (SpeechBrain ``Augmenter``), ``lr_annealing``,
  ``gather_across_ranks`` (default True), ``error_stats``, ``train_logger``,
  ``epoch_counter``.

Authors
 * sb-angcl contributors
"""

import logging
import math
import os
import time
import zipfile

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT

from sb_angcl.attention import negative_weight_percentiles, pair_weights_from_confidence
from sb_angcl.distributed import (
    all_ranks_finite,
    gather_no_grad,
    gather_with_grad,
    world_size,
    wrap_distributed_modules,
)
from sb_angcl.margins import MarginWarmup

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive batches had a non-finite loss or gradient."""


def _checkpoint_problems(ckpt_dir, checkpointer):
    """What makes one checkpoint folder unusable (empty list: nothing)."""
    try:
        with open(os.path.join(ckpt_dir, METAFNAME), encoding="utf-8") as fin:
            meta = yaml.safe_load(fin)
    except (OSError, yaml.YAMLError) as err:
        return [f"{METAFNAME} unreadable ({err.__class__.__name__})"]
    if not isinstance(meta, dict) or "end-of-epoch" not in meta:
        return [f"{METAFNAME} incomplete"]
    problems = []
    optional = getattr(checkpointer, "optional_recoverables", {})
    for name in checkpointer.recoverables:
        path = os.path.join(ckpt_dir, name + PARAMFILE_EXT)
        if not os.path.isfile(path):
            # SpeechBrain itself tolerates these two being absent.
            if not optional.get(name, False) and "dataloader" not in name:
                problems.append(f"{name}{PARAMFILE_EXT} missing")
            continue
        if os.path.getsize(path) == 0:
            problems.append(f"{name}{PARAMFILE_EXT} empty")
            continue
        with open(path, "rb") as fin:
            is_zip_start = fin.read(4) == b"PK\x03\x04"
        if is_zip_start:  # torch.save's format: the index is written last
            try:
                with zipfile.ZipFile(path):
                    pass
            except (zipfile.BadZipFile, OSError):
                problems.append(f"{name}{PARAMFILE_EXT} truncated")
    return problems


def discard_incomplete_checkpoints(checkpointer):
    """Set aside checkpoints that a killed run left half-written.

    SpeechBrain's ``Checkpointer`` writes ``CKPT.yaml`` first and the
    parameter files after it, so a run killed while saving (SIGKILL, power
    loss, a pre-empted job) leaves a folder that looks like the newest
    checkpoint but lacks files or holds a truncated one, and the next run
    fails to resume from it. Each such folder is renamed
    ``INCOMPLETE-CKPT+...`` (kept for inspection, ignored by SpeechBrain) with
    a warning, so recovery falls back to the previous, complete checkpoint.

    A folder is incomplete when its ``CKPT.yaml`` does not parse, when a
    file of a registered recoverable is missing (SpeechBrain's optional
    recoverables and data-loader states excepted, as SpeechBrain does), empty,
    or a ``torch.save`` archive without its index (cut short).

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        With every recoverable registered.

    Returns
    -------
    list of str
        The new paths of the folders set aside.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), {"model": torch.nn.Linear(2, 2)})
    >>> good = ckpt.save_checkpoint(name="good")
    >>> bad = ckpt.save_checkpoint(name="bad")
    >>> data = open(bad.paramfiles["model"], "rb").read()
    >>> _ = open(bad.paramfiles["model"], "wb").write(data[: len(data) // 2])
    >>> [os.path.basename(p) for p in discard_incomplete_checkpoints(ckpt)]
    ['INCOMPLETE-CKPT+bad']
    >>> [os.path.basename(c.path) for c in ckpt.list_checkpoints()]
    ['CKPT+good']
    """
    folder = str(checkpointer.checkpoints_dir)
    if not os.path.isdir(folder):
        return []
    moved = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (name.startswith(CKPT_PREFIX) and os.path.isdir(path)):
            continue
        if not os.path.exists(os.path.join(path, METAFNAME)):
            continue  # not a checkpoint for SpeechBrain either
        problems = _checkpoint_problems(path, checkpointer)
        if not problems:
            continue
        target = os.path.join(folder, "INCOMPLETE-" + name)
        suffix = 1
        while os.path.exists(target):
            target = os.path.join(folder, f"INCOMPLETE-{name}.{suffix}")
            suffix += 1
        os.rename(path, target)
        moved.append(target)
        logger.warning(
            "Checkpoint %s is incomplete (%s), probably written by a run that "
            "was stopped while saving; moved to %s and not used. Training "
            "resumes from the previous checkpoint (delete the folder once "
            "inspected).",
            path,
            ", ".join(problems),
            target,
        )
    return moved


class AngularContrastiveBrain(sb.Brain):
    """Joint AAM-softmax and AM-SupCon training with loss balancing.

    Example
    -------
    >>> from sb_angcl.losses import AngularSupConLoss
    >>> from sb_angcl.attention import ClassAwareAttention
    >>> from sb_angcl.balancing import make_balancer
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

        ``augmentation`` in the YAML picks the domain: ``waveform`` (the
        ``wav_augment`` Augmenter), ``features`` (``feat_augment``, masks on
        the normalised filterbanks, nearly free) or ``none``; without the key
        every augmenter the YAML defines is used. Only training augments.

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
        wav, feat = self.hparams_get("wav_augment"), self.hparams_get("feat_augment")
        choice = self.hparams_get("augmentation")
        if choice is None:
            return wav, feat
        if choice not in ("waveform", "features", "none"):
            raise ValueError(
                f"augmentation must be waveform, features or none, got {choice!r} "
                "(--augmentation=features)"
            )
        if choice != "none" and {"waveform": wav, "features": feat}[choice] is None:
            key = "wav_augment" if choice == "waveform" else "feat_augment"
            raise ValueError(f"augmentation: {choice} needs `{key}` in the YAML")
        return (wav if choice == "waveform" else None), (feat if choice == "features" else None)

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
            ``loss_con`` is a zero (with graph) when there is no contrastive loss.
        """
        labels = self._labels(batch, stage)
        cosine = outputs["cosine"].float()
        embeddings = outputs["embeddings"]
        loss_cls = self.hparams.classification_loss(cosine, labels)
        contrastive = self.hparams_get("contrastive_loss")
        if contrastive is None or (
            stage == sb.Stage.TRAIN and not self._contrastive_active()
        ):
            return loss_cls, embeddings.float().sum() * 0.0
        flat_labels = labels.reshape(-1)
        attention = self.hparams_get("class_attention")
        if attention is not None and getattr(attention, "enabled", True):
            confidence = attention.confidence(cosine, flat_labels)
        else:
            confidence = None
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
                self._record_weight_spread(weights, flat_labels)
        loss_con = contrastive(embeddings, flat_labels, pair_weights=weights)
        return loss_cls, loss_con

    def _contrastive_active(self):
        balancer = self.hparams.balancer
        return getattr(balancer, "contrastive_weight", 1.0) > 0.0

    def compute_objectives(self, outputs, batch, stage):
        """Validation/test loss: the classification loss, plus error rate.

        Training goes through :meth:`fit_batch`, which balances both losses.

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
        labels = self._labels(batch, stage)
        loss_cls = self.hparams.classification_loss(outputs["cosine"].float(), labels)
        if stage != sb.Stage.TRAIN and self.error_metrics is not None:
            self.error_metrics.append(batch.id, outputs["cosine"], labels)
        return loss_cls

    # ------------------------------------------------------------------ training
    def fit_batch(self, batch):
        """One training step with the balanced objective.

        Arguments
        ---------
        batch : PaddedBatch
            Training batch.

        Returns
        -------
        torch.Tensor
            The detached balanced loss.
        """
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        # The forward pass updates BatchNorm statistics; a skipped batch puts
        # them back (a NaN there would poison every later evaluation).
        self._buffers_before = [
            (buf, buf.detach().clone()) for buf in self.modules.buffers()
        ]
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
            # The objectives and the balancing run in float32 outside autocast.
            loss_cls, loss_con = self.compute_loss_parts(outputs, batch, sb.Stage.TRAIN)
            grad_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            balancer = self.hparams.balancer
            if not self._contrastive_active():
                # AAM alone: no second objective to balance.
                result_loss, alpha = loss_cls, torch.tensor(1.0)
            else:
                params = None
                if getattr(balancer, "needs_parameters", False):
                    params = list(self.modules.embedding_model.parameters())
                result = balancer(
                    loss_cls,
                    loss_con,
                    shared=outputs["embeddings"],
                    parameters=params,
                    grad_scale=grad_scale,
                )
                result_loss, alpha = result.loss, result.alpha
            if not all_ranks_finite(result_loss):
                self._skip_nonfinite(batch, "loss")
                return result_loss.detach().cpu()
            scaled = self.scaler.scale(result_loss / self.grad_accumulation_factor)
            scaled.backward()
        if should_step:
            if not self.scaler.is_enabled() and not self._gradients_finite():
                self._skip_nonfinite(batch, "gradient")
                return result_loss.detach().cpu()
            self.optimizers_step()
            self._consecutive_nonfinite = 0
        self._buffers_before = []
        self._record(loss_cls, loss_con, alpha)
        self.on_fit_batch_end(batch, outputs, result_loss, should_step)
        return result_loss.detach().cpu()

    def _gradients_finite(self):
        for param in self.modules.parameters():
            if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
                return False
        return True

    def _skip_nonfinite(self, batch, what):
        """Drop this batch's gradients, report it, stop after too many.

        The module buffers (BatchNorm running statistics, which the forward
        pass has already updated) are restored to their values before the
        batch, so a NaN batch leaves no trace in the model.
        """
        self.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buf, saved in getattr(self, "_buffers_before", []):
                buf.copy_(saved)
        self._buffers_before = []
        self._consecutive_nonfinite += 1
        self.skipped_nonfinite += 1
        logger.warning(
            "Non-finite %s on batch %s (ids %s...): batch skipped, weights untouched "
            "(%d in a row).",
            what,
            self.step,
            list(batch.id)[:3],
            self._consecutive_nonfinite,
        )
        if self._consecutive_nonfinite > self.nonfinite_patience:
            raise NonFiniteLossError(
                f"{self._consecutive_nonfinite} consecutive batches had a non-finite "
                f"{what}. Check the data (silent or corrupt audio), lower the learning "
                "rate, raise the contrastive temperature, or use --precision=fp32; "
                "training resumes from the last checkpoint once fixed."
            )

    def _record_weight_spread(self, weights, labels):
        low, high = negative_weight_percentiles(weights, labels)
        if math.isfinite(low):
            self._sums["w_p5"] += low
            self._sums["w_p95"] += high
            self._sums["weighted_batches"] += 1

    def _record(self, loss_cls, loss_con, alpha):
        self._sums["loss_cls"] += float(loss_cls.detach())
        self._sums["loss_con"] += float(loss_con.detach())
        self._sums["alpha"] += float(alpha)
        self._sums["batches"] += 1
        self.last_alpha = float(alpha)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; the training loader's length is kept for the
        margin warm-up's progress within an epoch.

        Arguments
        ---------
        dataset : Dataset
            The data.
        stage : sb.Stage
            The stage.
        ckpt_prefix : str
            Checkpoint name prefix of the loader.
        **loader_kwargs : dict
            Passed on.

        Returns
        -------
        DataLoader
        """
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            try:
                self._train_batches = len(loader)
            except TypeError:
                self._train_batches = None
        return loader

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
        """Step a per-batch learning-rate schedule, if the YAML has one.

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
        annealing = self.hparams_get("lr_annealing")
        if should_step and annealing is not None and hasattr(annealing, "on_batch_end"):
            annealing.on_batch_end(self.optimizer)

    # ------------------------------------------------------------------ stages
    def _wrap_distributed(self):
        """Wrap the trainable modules in DDP, also on CPU (gloo).

        SpeechBrain 1.1 converts BatchNorm to ``SyncBatchNorm`` whatever the
        device, and PyTorch refuses that on CPU; see
        :func:`sb_angcl.distributed.wrap_distributed_modules`.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        wrap_distributed_modules(self.modules, self.device, self.find_unused_parameters)

    def on_fit_start(self):
        """Initialise the per-epoch statistics, then SpeechBrain's start."""
        if getattr(self, "margin_warmup", None) is None:
            # Built once: it reads the target margins from the loss objects.
            self.margin_warmup = MarginWarmup(
                self.hparams_get("margin_warmup_epochs", 0) or 0,
                self.hparams_get("classification_loss"),
                self.hparams_get("contrastive_loss"),
            )
        self._epoch = 1
        balancer = self.hparams_get("balancer")
        if (
            self.checkpointer is not None
            and isinstance(balancer, torch.nn.Module)
            and balancer.state_dict()
            and "balancer" not in self.checkpointer.recoverables
        ):
            # MGDA's moving average of alpha resumes with the run.
            self.checkpointer.add_recoverable("balancer", balancer, optional_load=True)
        self._reset_stats()
        self._consecutive_nonfinite = 0
        self.skipped_nonfinite = 0
        self._one_speaker_batches = 0
        self.last_alpha = math.nan
        super().on_fit_start()

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

    def _reset_stats(self):
        self._sums = {
            "loss_cls": 0.0, "loss_con": 0.0, "alpha": 0.0, "batches": 0,
            "w_p5": 0.0, "w_p95": 0.0, "weighted_batches": 0,
        }
        self._epoch_start = time.time()

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
            self._reset_stats()
            self._epoch = epoch if epoch is not None else 1
        error_stats = self.hparams_get("error_stats")
        self.error_metrics = error_stats() if error_stats is not None else None

    def epoch_train_stats(self):
        """Mean losses and alpha over the training batches seen this epoch.

        Returns
        -------
        dict
        """
        n = max(self._sums["batches"], 1)
        stats = {
            "loss_cls": self._sums["loss_cls"] / n,
            "loss_con": self._sums["loss_con"] / n,
            "alpha": self._sums["alpha"] / n,
        }
        weighted = self._sums["weighted_batches"]
        if weighted:
            # Attention at work: the 5th and 95th percentiles of the
            # negative-pair weights (mean over batches); 1 and 1 = inert.
            stats["w_p5"] = self._sums["w_p5"] / weighted
            stats["w_p95"] = self._sums["w_p95"] / weighted
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
            self.train_stats["time_s"] = time.time() - self._epoch_start
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
