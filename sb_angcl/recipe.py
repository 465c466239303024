"""The training driver shared by the VoxCeleb and CN-Celeb recipes.

A recipe's ``train.py`` only names its data preparation; everything else,
the SpeechBrain way, is here: parse ``train.py hparams.yaml --key=value``,
start DDP, prepare data once (``run_on_main``), size the classifier from the
training speakers, build datasets and the speaker-balanced sampler, start
from a pretrained encoder if asked, train with
:class:`~sb_angcl.brain.AngularContrastiveBrain` and export the best
checkpoint as a SpeechBrain inference folder.

Authors
 * sb-angcl contributors
"""

import logging
import os
import sys

import pandas as pd
import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from sb_angcl.augment import setup_noise_augmentation
from sb_angcl.brain import AngularContrastiveBrain
from sb_angcl.dataio import speaker_datasets
from sb_angcl.export import export_inference_folder, load_pretrained_encoder
from sb_angcl.sampler import SpeakerBalancedBatchSampler

logger = logging.getLogger(__name__)


def overrides_to_dict(overrides):
    """SpeechBrain's override string (or dict) as a dict.

    Arguments
    ---------
    overrides : str or dict or None
        As returned by ``sb.parse_arguments``.

    Returns
    -------
    dict

    Example
    -------
    >>> overrides_to_dict("margin: 0.3\\nbalancing: fixed")
    {'margin': 0.3, 'balancing': 'fixed'}
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return yaml.safe_load(overrides) or {}


def load_hparams(hparams_file, overrides):
    """Load a recipe YAML with overrides.

    Arguments
    ---------
    hparams_file : str
        YAML path.
    overrides : dict
        Overrides.

    Returns
    -------
    dict
    """
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def load_unsized_hparams(hparams_file, overrides):
    """Load a recipe YAML before the number of training speakers is known.

    ``out_n_neurons`` (the classifier size; 0 in the YAML means "count the
    training speakers") gets a placeholder of 1 unless the overrides set it:
    enough to read folders and run data preparation.

    Arguments
    ---------
    hparams_file : str
        YAML path.
    overrides : dict
        Overrides.

    Returns
    -------
    dict
    """
    return load_hparams(
        hparams_file, dict(overrides, out_n_neurons=overrides.get("out_n_neurons") or 1)
    )


def size_classifier(hparams_file, overrides, hparams):
    """Reload the YAML with ``out_n_neurons`` = the number of training speakers.

    Nothing is reloaded when the overrides already give ``out_n_neurons``.

    Arguments
    ---------
    hparams_file : str
        YAML path.
    overrides : dict
        Overrides (not modified).
    hparams : dict
        From :func:`load_unsized_hparams` (names ``train_annotation``).

    Returns
    -------
    hparams : dict
        Loaded with the right classifier size.
    overrides : dict
        The overrides including ``out_n_neurons``.
    """
    if overrides.get("out_n_neurons"):
        return hparams, overrides
    overrides = dict(overrides, out_n_neurons=count_speakers(hparams["train_annotation"]))
    return load_hparams(hparams_file, overrides), overrides


def count_speakers(csv_path):
    """Number of distinct ``spk_id`` in a manifest.

    Arguments
    ---------
    csv_path : str
        Manifest.

    Returns
    -------
    int

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("ID,spk_id\\na,s1\\nb,s2\\nc,s1\\n")
    >>> count_speakers(p)
    2
    """
    return int(pd.read_csv(csv_path, usecols=["spk_id"])["spk_id"].nunique())


def train_loader_kwargs(hparams, train_data):
    """DataLoader options for training: balanced sampler or random batches.

    Arguments
    ---------
    hparams : dict
        With ``sampler`` (``balanced`` | ``random``) and its sizes.
    train_data : DynamicItemDataset
        The training set.

    Returns
    -------
    dict
    """
    kind = hparams.get("sampler", "balanced")
    common = {"num_workers": hparams.get("num_workers", 0)}
    if kind == "balanced":
        sampler = SpeakerBalancedBatchSampler.from_dataset(
            train_data,
            key="spk_id",
            speakers_per_batch=hparams["speakers_per_batch"],
            utterances_per_speaker=hparams["utterances_per_speaker"],
            seed=hparams.get("seed", 0),
            positives_across_sessions=hparams.get("positives_across_sessions", False),
        )
        return {"batch_sampler": sampler, **common}
    if kind == "random":
        return {"batch_size": hparams["batch_size"], "shuffle": True, "drop_last": True, **common}
    raise ValueError(f"sampler must be 'balanced' or 'random', got {kind!r}")


class RecipeBrain(AngularContrastiveBrain):
    """The Brain of the recipes: keeps our DDP-aware sampler unwrapped.

    SpeechBrain wraps any ``batch_sampler`` in a ``DistributedSamplerWrapper``
    under DDP, which would split our batches a second time, and only calls
    ``set_epoch`` on samplers it made itself. Our sampler already gives each
    rank its own speakers, so it is used as is and registered as the train
    sampler (``set_epoch`` every epoch, mid-epoch resume by batch count).
    """

    def _train_loader_specifics(self, dataset, loader_kwargs):
        sampler = loader_kwargs.get("batch_sampler")
        if isinstance(sampler, SpeakerBalancedBatchSampler):
            self.train_sampler = sampler
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def fit_batch(self, batch):
        """Note files with non-finite samples, then train on the batch.

        Arguments
        ---------
        batch : PaddedBatch
            Training batch.

        Returns
        -------
        torch.Tensor
        """
        self._note_nonfinite(batch)
        return super().fit_batch(batch)

    def evaluate_batch(self, batch, stage):
        """Note files with non-finite samples, then evaluate the batch.

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
        self._note_nonfinite(batch)
        return super().evaluate_batch(batch, stage)

    def _note_nonfinite(self, batch):
        """Warn once per file whose crop held NaN/inf samples (zeroed on load).

        The data pipeline (:func:`sb_angcl.dataio.make_train_pipeline`) runs
        in worker processes; it replaces the samples and reports their count
        in ``sig_nonfinite``, so the other utterances of the batch train as
        usual and this process keeps one list of the files for the whole run
        (``nonfinite_audio_files``, summarised at the end of the run).
        """
        counts = getattr(batch, "sig_nonfinite", None)
        if counts is None:
            return
        if not hasattr(self, "nonfinite_audio_files"):
            self.nonfinite_audio_files = {}
        paths = getattr(batch, "wav", None) or list(batch.id)
        for path, count in zip(paths, counts):
            count = int(count)
            if count and path not in self.nonfinite_audio_files:
                logger.warning(
                    "Audio file %s holds non-finite samples (NaN or inf; %d in this "
                    "crop). They are replaced by zeros and the rest of the batch trains; "
                    "re-convert or remove the file.", path, count,
                )
                self.nonfinite_audio_files[path] = count

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; the training one also sizes the LR schedule.

        A schedule defined in epochs (one with ``set_steps_per_epoch``, e.g.
        :class:`~sb_angcl.lr_schedule.WarmupDecayScheduler`) learns the
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
        annealing = self.hparams_get("lr_annealing")
        if stage == sb.Stage.TRAIN and hasattr(annealing, "set_steps_per_epoch"):
            steps = max(len(loader) // self.grad_accumulation_factor, 1)
            annealing.set_steps_per_epoch(steps)
            logger.info("Learning-rate schedule: %d optimiser steps per epoch.", steps)
        return loader

    def on_fit_start(self):
        """Register the LR schedule with the checkpointer, recover, set the rate.

        A per-batch schedule keeps a step counter: without it in the
        checkpoint a resumed run would restart its schedule. It is registered
        here when the YAML's ``checkpointer`` does not list it. After the
        recovery a schedule with ``apply`` sets the optimiser's rate for the
        first batch (the warm-up start, or where the resumed run was).
        """
        annealing = self.hparams_get("lr_annealing")
        if (
            self.checkpointer is not None
            and annealing is not None
            and annealing not in self.checkpointer.recoverables.values()
            and _is_checkpointable(annealing)
        ):
            self.checkpointer.add_recoverable("lr_annealing", annealing)
        super().on_fit_start()
        if hasattr(annealing, "apply") and self.optimizer is not None:
            annealing.apply(self.optimizer)


def _is_checkpointable(obj):
    """Whether SpeechBrain's checkpointer has a save hook for ``obj``."""
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    return get_default_hook(obj, DEFAULT_SAVE_HOOKS) is not None


def adopt_label_encoder(pretrained_folder, save_folder):
    """Start a fine-tuning run with the label encoder of the run it starts from.

    Its classifier's row ``i`` is the speaker with index ``i`` in that run's
    ``label_encoder.ckpt`` (an exported inference folder) or
    ``label_encoder.txt`` (a ``save`` folder); the copy becomes this run's
    ``label_encoder.txt`` unless this run already has one.

    Arguments
    ---------
    pretrained_folder : str
        The trained run's inference (or save) folder.
    save_folder : str
        This run's save folder.

    Returns
    -------
    bool
        Whether a label encoder was copied.

    Example
    -------
    >>> import tempfile
    >>> adopt_label_encoder(tempfile.mkdtemp(), tempfile.mkdtemp())
    False
    """
    import shutil

    target = os.path.join(save_folder, "label_encoder.txt")
    if os.path.isfile(target):
        return False
    for name in ("label_encoder.ckpt", "label_encoder.txt"):
        source = os.path.join(pretrained_folder, name)
        if os.path.isfile(source):
            os.makedirs(save_folder, exist_ok=True)
            shutil.copyfile(source, target)
            logger.info("Speaker labels taken from %s (pretrained classifier).", source)
            return True
    return False


def run_training(argv, prepare, brain_class=RecipeBrain):
    """Run a whole training recipe.

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value, ...]`` as given to ``train.py``.
    prepare : callable
        ``prepare(hparams)`` writes the manifests named in the YAML; it runs on
        the main process only.
    brain_class : type
        The Brain to train with.

    Returns
    -------
    brain : AngularContrastiveBrain
        The trained Brain (best checkpoint loaded).
    hparams : dict
        The loaded hyperparameters.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = overrides_to_dict(overrides)
    sb.utils.distributed.ddp_init_group(run_opts)

    # The classifier size depends on the data, so the YAML is loaded once to
    # find the folders, the data prepared, and the YAML loaded again.
    hparams = load_unsized_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if not hparams.get("skip_prep", False):
        run_on_main(prepare, kwargs={"hparams": hparams})
    hparams, overrides = size_classifier(hparams_file, overrides, hparams)
    logger.info("Training speakers (classifier outputs): %s", hparams["out_n_neurons"])
    # MUSAN noise / RIR reverberation from local folders (musan_folder, rir_folder).
    setup_noise_augmentation(hparams, run_on_main)

    with_classifier = bool(hparams.get("pretrained_model") and hparams.get("pretrained_classifier"))
    if with_classifier:
        # The pretrained classifier's rows follow its run's label encoder.
        run_on_main(adopt_label_encoder, args=[hparams["pretrained_model"], hparams["save_folder"]])
    train_data, valid_data, label_encoder = speaker_datasets(hparams)
    if hparams.get("pretrained_model"):
        # SpeechBrain's fetching is safe to run on every rank at once.
        load_pretrained_encoder(
            hparams["pretrained_model"],
            hparams["embedding_model"],
            os.path.join(hparams["save_folder"], "pretrained"),
            classifier=hparams["classifier"] if with_classifier else None,
        )

    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_loader_kwargs(hparams, train_data),
        valid_loader_kwargs={
            "batch_size": hparams.get("eval_batch_size", 16),
            "num_workers": hparams.get("num_workers", 0),
        },
    )
    bad_files = getattr(brain, "nonfinite_audio_files", {})
    if bad_files:
        logger.warning(
            "%d audio file(s) held non-finite samples (replaced by zeros): %s",
            len(bad_files), ", ".join(sorted(bad_files)),
        )
    if brain.skipped_nonfinite:
        logger.warning("%d batches were skipped for non-finite values.", brain.skipped_nonfinite)

    brain.checkpointer.recover_if_possible(min_key="ErrorRate")
    if hparams.get("export_folder") and if_main_process():
        export_inference_folder(
            hparams["export_folder"],
            hparams_file,
            brain.modules.embedding_model,
            brain.modules.classifier,
            label_encoder,
            overrides=overrides,
        )
    return brain, hparams


def main(prepare):
    """Entry point for a recipe's ``train.py``.

    Arguments
    ---------
    prepare : callable
        The recipe's data preparation, ``prepare(hparams)``.
    """
    run_training(sys.argv[1:], prepare)
