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
* :func:`start_from_pretrained`, :func:`adopt_label_encoder`: starting from
  a trained model through the YAML's ``pretrainer`` (SpeechBrain's
  ``Pretrainer`` with ``loadables`` and ``paths``, as upstream recipes write
  it), from a local folder laid out like ``speechbrain/spkrec-ecapa-voxceleb``
  or a run's exported ``inference`` folder;
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
from speechbrain.utils.fetching import FetchConfig
from speechbrain.utils.parameter_transfer import Pretrainer

from sb_angcl.data.dataio import (
    build_label_encoder,
    derive_training_set,
    load_manifest,
    write_dataset_csv,
)
from sb_angcl.hyperparams import (
    LABEL_ENCODER_FILE,
    classifier_size,
    overrides_to_dict,
    plain_hparams,
)

logger = logging.getLogger(__name__)

#: The derived training set, written for analysis (not read back).
DERIVED_TRAIN_FILE = "train_derived.csv"

#: The YAML settings the recipes' train.py and these steps read (the Brain's are in
#: :data:`sb_angcl.training.brain.HPARAMS`); a YAML without one is refused, naming it.
RECIPE_SETTINGS = (
    "seed", "output_folder", "save_folder", "data_folder", "train_annotation",
    "valid_annotation", "skip_prep", "sample_rate", "sentence_len", "speakers_per_batch",
    "utterances_per_speaker", "positives_across_sessions", "num_workers", "eval_batch_size",
    "pretrained_model", "pretrained_classifier", "musan_folder", "rir_folder", "export_folder",
    "speed_perturb_speakers", "label_noise",
)


def prepare_and_size(hparams_file, overrides, prepare):
    """Prepare the data, then set ``out_n_neurons`` from the label encoder.

    ``prepare(hparams)`` gets the YAML's plain settings
    (:func:`~sb_angcl.hyperparams.plain_hparams`: nothing is built yet) and
    runs on the main process; it passes ``skip_prep`` on to the recipe's
    data preparation, which then does nothing (as SpeechBrain's recipes do).
    When fine-tuning with the pretrained classifier (``pretrained_classifier:
    True``, which needs ``pretrained_model``: refused here, before data
    preparation, when it is null), that run's label encoder is adopted
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
    if plain["pretrained_classifier"] and not plain["pretrained_model"]:
        raise ValueError(
            f"{hparams_file}: pretrained_model is null, but pretrained_classifier: True "
            "(fine-tuning) loads a trained model's classifier. Give --pretrained_model="
            f"<local folder holding {', '.join(PRETRAINED_FILES)}>: a run's "
            "<output_folder>/inference or a downloaded speechbrain/spkrec-ecapa-voxceleb "
            "(or set pretrained_classifier: False)."
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
    """``<save_folder>/label_encoder.txt`` from the training set (kept if it exists).

    The training set is the manifest with its derived labels
    (:func:`~sb_angcl.data.dataio.derive_training_set`); when labels are
    derived, the set is also written to ``<save_folder>/train_derived.csv``
    for analysis (``true_spk_id``, ``label_noise``, ``speed``).
    """
    train = load_manifest(plain["train_annotation"], plain["data_folder"])
    derived = derive_training_set(
        train, plain["speed_perturb_speakers"], plain["label_noise"], plain["seed"]
    )
    os.makedirs(plain["save_folder"], exist_ok=True)  # skip_prep: manifests from elsewhere
    if derived is not train:
        write_dataset_csv(derived, os.path.join(plain["save_folder"], DERIVED_TRAIN_FILE))
        speakers = {row["spk_id"] for row in derived.data.values()}
        logger.info(
            "Training set: %d utterances of %d speakers after speed_perturb_speakers=%s, "
            "label_noise=%s (%s).", len(derived), len(speakers),
            plain["speed_perturb_speakers"], plain["label_noise"], DERIVED_TRAIN_FILE,
        )
    build_label_encoder(derived, os.path.join(plain["save_folder"], LABEL_ENCODER_FILE))


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


def adopt_label_encoder(pretrained_folder, save_folder):
    """Start a fine-tuning run with the label encoder of the run it starts from.

    Its classifier's row ``i`` is the speaker with index ``i`` in that run's
    ``label_encoder.ckpt`` (an exported inference folder) or
    ``label_encoder.txt`` (a ``save`` folder, or a folder laid out like
    ``speechbrain/spkrec-ecapa-voxceleb``); the copy becomes this run's
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


#: Files of a folder to start from, laid out like ``speechbrain/spkrec-ecapa-voxceleb``.
PRETRAINED_FILES = ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                    "label_encoder.txt")


def start_from_pretrained(pretrainer, pretrained_model):
    """Run the YAML's ``pretrainer``: load a trained model's weights before training.

    The recipe YAMLs define it the way upstream SpeechBrain recipes do::

        pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
            collect_in: !ref <save_folder>/pretrained
            loadables:
                embedding_model: !ref <embedding_model>
                classifier: !ref <classifier>
            paths:
                embedding_model: !ref <pretrained_model>/embedding_model.ckpt
                classifier: !ref <pretrained_model>/classifier.ckpt
            conditions:
                embedding_model: !ref <pretrained_model>
                classifier: !ref <pretrained_classifier>

    so ``pretrained_model: null`` loads nothing and ``pretrained_classifier``
    adds the classifier. Every file to load must be local (the files are
    linked into ``collect_in`` on the main process, with no network, then
    loaded on every process): a Hugging Face id such as
    ``speechbrain/spkrec-ecapa-voxceleb`` is refused with the way to download
    it. A loadable whose path needs ``pretrained_model`` while it is null
    (the fine-tuning YAMLs load the classifier) is refused naming the key.

    Arguments
    ---------
    pretrainer : speechbrain.utils.parameter_transfer.Pretrainer
        The YAML's ``pretrainer``.
    pretrained_model : str or None
        The YAML's ``pretrained_model`` (named in the errors).

    Returns
    -------
    list of str
        The parts loaded (empty when nothing is to be loaded).

    Example
    -------
    >>> from speechbrain.utils.parameter_transfer import Pretrainer
    >>> import torch
    >>> off = Pretrainer(loadables={"embedding_model": torch.nn.Linear(1, 1)},
    ...                  paths={"embedding_model": "None/embedding_model.ckpt"},
    ...                  conditions={"embedding_model": None})
    >>> start_from_pretrained(off, None)
    []
    >>> hub = Pretrainer(loadables={"embedding_model": torch.nn.Linear(1, 1)},
    ...     paths={"embedding_model": "speechbrain/spkrec-ecapa-voxceleb/embedding_model.ckpt"})
    >>> start_from_pretrained(hub, "speechbrain/spkrec-ecapa-voxceleb")
    Traceback (most recent call last):
     ...
    FileNotFoundError: pretrained_model: 'speechbrain/spkrec-ecapa-voxceleb' is not a local folder (it looks like a Hugging Face id); the recipes start from local folders only, without network. Download the model first, e.g. `huggingface-cli download speechbrain/spkrec-ecapa-voxceleb --local-dir pretrained_models/spkrec-ecapa-voxceleb`, and pass its path: --pretrained_model=pretrained_models/spkrec-ecapa-voxceleb
    """
    if not isinstance(pretrainer, Pretrainer):
        raise TypeError(
            "pretrainer must be a speechbrain.utils.parameter_transfer.Pretrainer "
            f"(the YAML's `pretrainer: !new:...Pretrainer`), got {type(pretrainer).__name__}"
        )
    names = [name for name in pretrainer.loadables if pretrainer.is_loadable(name)]
    if not names:
        return []
    for name in names:
        _check_local_path(name, pretrainer.paths.get(name), pretrained_model)
    # Links in collect_in, made once; every process then loads them.
    run_on_main(pretrainer.collect_files,
                kwargs={"fetch_config": FetchConfig(allow_network=False)})
    pretrainer.load_collected()
    logger.info("Initialised %s from %s (the YAML's pretrainer).", sorted(names),
                pretrained_model or sorted({pretrainer.paths.get(n) for n in names}))
    return sorted(names)


def _check_local_path(name, path, pretrained_model):
    """Refuse, with the fix, a pretrainer path that is not a local file."""
    if path is None:
        raise ValueError(
            f"The YAML's pretrainer is to load '{name}' but gives no path for it: add "
            f"`{name}: !ref <pretrained_model>/{name}.ckpt` under its `paths:`."
        )
    path = str(path)
    if os.path.isfile(path):
        return
    folder = None if pretrained_model in (None, "", "None") else str(pretrained_model)
    if folder is None:
        raise ValueError(
            f"pretrained_model is null, but the YAML's pretrainer is to load '{name}' "
            f"(from {path}): this YAML starts from a trained model (the fine-tuning "
            "YAMLs load its classifier, pretrained_classifier: True). Give "
            "--pretrained_model=<local folder holding "
            f"{', '.join(PRETRAINED_FILES)}>: a run's <output_folder>/inference or a "
            "downloaded speechbrain/spkrec-ecapa-voxceleb."
        )
    if not os.path.exists(folder) and _looks_like_hub_id(folder):
        local = os.path.join("pretrained_models", folder.rstrip("/").rsplit("/", 1)[-1])
        raise FileNotFoundError(
            f"pretrained_model: {folder!r} is not a local folder (it looks like a Hugging "
            "Face id); the recipes start from local folders only, without network. "
            f"Download the model first, e.g. `huggingface-cli download {folder} "
            f"--local-dir {local}`, and pass its path: --pretrained_model={local}"
        )
    raise FileNotFoundError(
        f"pretrained_model: {path} not found (the YAML's pretrainer loads '{name}' from "
        f"it). Give a local folder holding {', '.join(PRETRAINED_FILES)} (a run's "
        "<output_folder>/inference, or a downloaded speechbrain/spkrec-ecapa-voxceleb), "
        "or set pretrained_model: null to train from scratch"
        + (" (and pretrained_classifier: False)." if name == "classifier" else ".")
    )


def _looks_like_hub_id(text):
    """Whether ``text`` reads as ``owner/name`` (a Hugging Face id), not a path.

    Example
    -------
    >>> _looks_like_hub_id("speechbrain/spkrec-ecapa-voxceleb"), _looks_like_hub_id("./x/y")
    (True, False)
    """
    parts = text.strip("/").split("/")
    return (
        len(parts) == 2 and not text.startswith((".", "/", "~"))
        and all(part and not part.startswith(".") for part in parts)
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
