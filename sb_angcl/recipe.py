"""The steps the recipes' ``train.py`` share.

Data preparation and the classifier's size (:func:`prepare_and_size`), early
log records kept for ``log.txt`` (:func:`log_to_experiment`), starting from a
trained model (:func:`start_from_pretrained`) and the end-of-run summary
(:func:`report_skipped`).

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
    """Prepare the data, then set ``out_n_neurons`` from the label encoder; returns the overrides.

    ``prepare(hparams)``, the recipe's data preparation, gets the YAML's plain
    settings (:func:`~sb_angcl.hyperparams.plain_hparams`) on the main process.
    The label encoder is the pretrained classifier's (``pretrained_classifier:
    True``) or made from the training set; an ``out_n_neurons`` override wins.
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
    """``<save_folder>/label_encoder.txt`` of the training set (derived labels: also its CSV)."""
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
    """Hold the records logged in the block (INFO and up) for the handlers it sets up.

    ``sb.create_experiment_directory`` starts ``log.txt`` inside the block; with
    no handler at its end (another DDP rank, an error) they go to standard error.
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
    """Copy the pretrained run's label encoder (its classifier's rows) into ``save_folder``.

    Returns whether it was copied (not when this run has one already).

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
    """Run the YAML's ``pretrainer`` (as upstream's recipes write it); returns what it loaded.

    Its files must be local (collected on the main process without network):
    a Hugging Face id is refused with how to download it, and a path that
    needs a null ``pretrained_model`` names the key.
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
    """Whether ``text`` reads as ``owner/name`` (a Hugging Face id), not a path."""
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
