"""The reusable steps of the recipes' ``train.py``.

A recipe's ``train.py`` shows the SpeechBrain pipeline (parse, prepare, load
the YAML, experiment folder, datasets, Brain, fit, export); the steps two
recipes share are here:

* :func:`prepare_and_size`: data preparation on the main process, then the
  classifier's size from the label encoder it leads to (the one source of
  ``out_n_neurons``), before the YAML is loaded and the experiment folder
  created;
* :func:`log_to_experiment`: what is logged before the experiment folder
  exists (data preparation) still reaches its ``log.txt``;
* :func:`train_loader_kwargs`, :func:`valid_loader_kwargs`: the loaders
  (speaker-balanced batches or random ones);
* :func:`start_from_pretrained`, :func:`adopt_label_encoder`: fine-tuning
  from an exported folder;
* :func:`report_skipped`: the end-of-run summary of broken audio and skipped
  batches.

Authors
 * sb-angcl contributors
"""

import contextlib
import logging
import os
import shutil

from speechbrain.utils.distributed import run_on_main

from sb_angcl.data.dataio import build_label_encoder, load_manifest
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.export import load_pretrained_encoder
from sb_angcl.hyperparams import (
    LABEL_ENCODER_FILE,
    classifier_size,
    overrides_to_dict,
    plain_hparams,
)

logger = logging.getLogger(__name__)

#: The YAML settings the recipes' train.py and these steps read (the Brain's are in
#: :data:`sb_angcl.training.brain.HPARAMS`); a YAML without one is refused, naming it.
RECIPE_SETTINGS = (
    "seed", "output_folder", "save_folder", "data_folder", "train_annotation",
    "valid_annotation", "skip_prep", "sample_rate", "sentence_len", "speakers_per_batch",
    "utterances_per_speaker", "positives_across_sessions", "num_workers", "eval_batch_size",
    "pretrained_model", "pretrained_classifier", "musan_folder", "rir_folder", "export_folder",
)


def prepare_and_size(hparams_file, overrides, prepare):
    """Prepare the data, then set ``out_n_neurons`` from the label encoder.

    ``prepare(hparams)`` gets the YAML's plain settings
    (:func:`~sb_angcl.hyperparams.plain_hparams`: nothing is built yet) and
    runs on the main process; it passes ``skip_prep`` on to the recipe's
    data preparation, which then does nothing (as SpeechBrain's recipes do). When fine-tuning with the
    pretrained classifier, that run's label encoder is adopted
    (:func:`adopt_label_encoder`); otherwise the label encoder is made from
    the training manifest. Its number of speakers becomes ``out_n_neurons``,
    unless the overrides already give one.

    Arguments
    ---------
    prepare : callable
        The recipe's data preparation, ``prepare(hparams)``.

    Returns
    -------
    dict
        The overrides, with ``out_n_neurons``: load the YAML and save it in
        the experiment folder with these.
    """
    overrides = overrides_to_dict(overrides)
    plain = plain_hparams(hparams_file, overrides)
    missing = [key for key in RECIPE_SETTINGS if key not in plain]
    if missing:
        raise KeyError(
            f"{hparams_file} does not set {', '.join(missing)}: every setting the recipe "
            "reads is in its YAML (see the shipped recipes/*/SpeakerRec/hparams/*.yaml)"
        )
    run_on_main(prepare, kwargs={"hparams": plain})
    if plain["pretrained_model"] and plain["pretrained_classifier"]:
        # The pretrained classifier's rows follow its run's label encoder.
        run_on_main(adopt_label_encoder, args=[plain["pretrained_model"], plain["save_folder"]])
    if not overrides.get("out_n_neurons"):
        run_on_main(_make_label_encoder, args=[plain])
        overrides["out_n_neurons"] = classifier_size(plain["save_folder"])
    logger.info("Training speakers (classifier outputs): %s", overrides["out_n_neurons"])
    return overrides


def _make_label_encoder(plain):
    """``<save_folder>/label_encoder.txt`` from the training manifest (kept if it exists)."""
    train = load_manifest(plain["train_annotation"], plain["data_folder"])
    # With skip_prep no preparation has made the folder yet.
    os.makedirs(plain["save_folder"], exist_ok=True)
    build_label_encoder(train, os.path.join(plain["save_folder"], LABEL_ENCODER_FILE))


class _HeldRecords(logging.Handler):
    """Keeps log records until the experiment's handlers exist."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        """Keep the record."""
        self.records.append(record)


@contextlib.contextmanager
def log_to_experiment():
    """Hold what is logged until the block sets up the experiment's logging.

    ``sb.create_experiment_directory`` starts the experiment's ``log.txt``;
    records logged earlier in the block (data preparation's reports) are
    held at INFO level and handed to its handlers when the block ends. Where
    no logging was set up (another DDP rank, or an error before it) the
    warnings go to standard error.
    """
    root = logging.getLogger()
    held, level = _HeldRecords(), root.level
    root.addHandler(held)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(held)
        handlers = list(root.handlers)
        if not handlers:
            root.setLevel(level)
            handlers = [logging.lastResort]
        for record in held.records:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


def train_loader_kwargs(hparams, train_data):
    """DataLoader options for training: speaker-balanced P x K batches (the YAML's sizes, seed, sessions)."""
    sampler = SpeakerBalancedBatchSampler.from_dataset(
        train_data,
        key="spk_id",
        speakers_per_batch=hparams["speakers_per_batch"],
        utterances_per_speaker=hparams["utterances_per_speaker"],
        seed=hparams["seed"],
        positives_across_sessions=hparams["positives_across_sessions"],
    )
    return {"batch_sampler": sampler, "num_workers": hparams["num_workers"]}


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


def valid_loader_kwargs(hparams):
    """DataLoader options for validation.

    Example
    -------
    >>> valid_loader_kwargs({"eval_batch_size": 8, "num_workers": 0})
    {'batch_size': 8, 'num_workers': 0}
    """
    return {"batch_size": hparams["eval_batch_size"], "num_workers": hparams["num_workers"]}


def start_from_pretrained(hparams):
    """Load ``pretrained_model`` (a local folder) into the encoder, if the YAML names one.

    The classifier is loaded too with ``pretrained_classifier: True``. SpeechBrain's
    fetching is safe to run on every rank at once.

    Returns
    -------
    list of str
        The parts loaded (empty without ``pretrained_model``).

    Example
    -------
    >>> start_from_pretrained({"pretrained_model": None})
    []
    """
    if not hparams["pretrained_model"]:
        return []
    return load_pretrained_encoder(
        hparams["pretrained_model"],
        hparams["embedding_model"],
        os.path.join(hparams["save_folder"], "pretrained"),
        classifier=hparams["classifier"] if hparams["pretrained_classifier"] else None,
    )


def report_skipped(brain):
    """Log, at the end of a run, the broken audio files and skipped batches."""
    bad_files = getattr(brain, "nonfinite_audio_files", {})
    if bad_files:
        logger.warning(
            "%d audio file(s) held non-finite samples (replaced by zeros): %s",
            len(bad_files), ", ".join(sorted(bad_files)),
        )
    if brain.skipped_nonfinite:
        logger.warning("%d batches were skipped for non-finite values.", brain.skipped_nonfinite)
