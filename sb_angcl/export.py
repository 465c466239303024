"""Moving trained encoders in and out of SpeechBrain's inference format.

:func:`export_inference_folder` writes a folder that
``speechbrain.inference.speaker.SpeakerRecognition.from_hparams(source=folder)``
loads with no network: ``hyperparams.yaml`` (the recipe's own feature,
normalisation, encoder and classifier definitions with every ``!ref``
resolved), ``embedding_model.ckpt``, ``classifier.ckpt``, the label encoder,
``train_hyperparams.yaml`` (the whole training YAML as run) and a model card,
``README.md`` (training data and recipe, settings, date, how to load the model
and verify two files, and a results section that
:func:`record_model_card_results` fills when ``verify.py`` scores the trials).
:func:`record_calibration` adds a score calibration fitted by ``verify.py``: a
``calibration`` mapping in ``hyperparams.yaml``, the calibrated interface as
``custom.py`` and a section of the card.
The converse, starting training from such a folder (ours, or one laid out
like ``speechbrain/spkrec-ecapa-voxceleb``), is the recipe YAML's
``pretrainer`` (:func:`sb_angcl.recipe.start_from_pretrained`). The
``embedding_model.ckpt`` also serves upstream SpeechBrain's
``recipes/VoxCeleb/SpeakerRec/speaker_verification_cosine.py``, its
``pretrain_path`` pointed at the folder (the model card gives the overrides).

Authors
 * sb-angcl contributors
"""

import datetime
import io
import logging
import os
import shutil
import sys

import pandas as pd
import torch
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

logger = logging.getLogger(__name__)

#: Keys of the training YAML copied into the inference ``hyperparams.yaml``.
INFERENCE_KEYS = ("compute_features", "mean_var_norm", "embedding_model", "classifier")

_PRETRAINER_BLOCK = """
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

# Files are looked up in the folder given to from_hparams(source=...).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""


def inference_yaml(hparams_file, overrides=None):
    """Inference ``hyperparams.yaml`` text from a training YAML.

    The definitions are copied as the training YAML writes them (the
    encoder as ``!new:speechbrain.lobes.models....`` with its arguments), so
    the folder loads with SpeechBrain alone and nothing else has to remember
    how the modules were built.

    Arguments
    ---------
    hparams_file : str
        The training hyperparameters file.
    overrides : dict or str or None
        The overrides the training run used (so the architecture matches).

    Returns
    -------
    str
        YAML text with the :data:`INFERENCE_KEYS` (references resolved), a
        ``modules`` dict and a ``pretrainer``.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(path, "w").write(
    ...     "n: 4\\ncompute_features: !new:speechbrain.lobes.features.Fbank\\n"
    ...     "    n_mels: !ref <n>\\nmean_var_norm: null\\nembedding_model: null\\n"
    ...     "classifier: null\\n")
    >>> "n_mels: 4" in inference_yaml(path)
    True
    """
    yaml = YAML()
    tree = yaml.load(_resolved_yaml(hparams_file, overrides))
    missing = [key for key in INFERENCE_KEYS if key not in tree]
    if missing:
        raise KeyError(
            f"{hparams_file} lacks {missing}: an exportable recipe YAML defines "
            f"{list(INFERENCE_KEYS)}."
        )
    subset = type(tree)()
    for key in INFERENCE_KEYS:
        subset[key] = tree[key]
    out = io.StringIO()
    yaml.dump(subset, out)
    header = (
        "# Speaker encoder exported by sb-angcl. Load it with\n"
        "# SpeakerRecognition.from_hparams(source=<this folder>, savedir=...)\n\n"
    )
    return header + out.getvalue() + _PRETRAINER_BLOCK


def _resolved_yaml(hparams_file, overrides):
    """The training YAML's text with the overrides applied and every ``!ref`` resolved."""
    with open(hparams_file, encoding="utf-8") as fin:
        return resolve_references(fin, overrides or {}).getvalue()


def export_inference_folder(
    folder, hparams_file, embedding_model, classifier, label_encoder, overrides=None
):
    """Write a SpeechBrain inference folder for a trained encoder.

    Arguments
    ---------
    folder : str
        Output folder (created; existing files are replaced).
    hparams_file : str
        The training YAML (its model definitions are copied).
    embedding_model : torch.nn.Module
        Trained encoder.
    classifier : torch.nn.Module
        Trained cosine classifier.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Training speakers.
    overrides : dict or str or None
        Overrides of the training run.

    Returns
    -------
    str
        The folder, holding ``hyperparams.yaml``, ``embedding_model.ckpt``,
        ``classifier.ckpt``, ``label_encoder.ckpt`` (and ``.txt``),
        ``train_hyperparams.yaml`` and the model card ``README.md``.

    Example
    -------
    >>> callable(export_inference_folder)
    True
    """
    os.makedirs(folder, exist_ok=True)
    text = inference_yaml(hparams_file, overrides)
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as fout:
        fout.write(text)
    torch.save(_plain(embedding_model).state_dict(), os.path.join(folder, "embedding_model.ckpt"))
    torch.save(_plain(classifier).state_dict(), os.path.join(folder, "classifier.ckpt"))
    label_encoder.save(os.path.join(folder, "label_encoder.ckpt"))
    shutil.copyfile(
        os.path.join(folder, "label_encoder.ckpt"), os.path.join(folder, "label_encoder.txt")
    )
    write_model_card(folder, hparams_file, overrides, len(label_encoder))
    logger.info("Exported the inference model to %s", folder)
    return folder


def _plain(module):
    """Unwrap DDP / DataParallel."""
    return getattr(module, "module", module)


#: The classes SpeechBrain's ``recipes/VoxCeleb/SpeakerRec/hparams/verification_ecapa.yaml``
#: builds for its features, normalisation and encoder.
UPSTREAM_VERIFICATION_CLASSES = {
    "compute_features": "speechbrain.lobes.features.Fbank",
    "mean_var_norm": "speechbrain.processing.features.InputNormalization",
    "embedding_model": "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN",
}


def _plain_yaml(node):
    """A round-trip YAML node as plain Python values (for ``yaml.safe_dump``)."""
    if isinstance(node, dict):
        return {str(k): _plain_yaml(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain_yaml(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)


def upstream_scoring_overrides(folder):
    """Overrides under which SpeechBrain's VoxCeleb cosine scoring loads this folder's encoder.

    Upstream's ``recipes/VoxCeleb/SpeakerRec/speaker_verification_cosine.py``
    with ``hparams/verification_ecapa.yaml`` builds its own filterbank,
    normalisation and ECAPA-TDNN (the paper's size on 80 filterbanks) and
    loads ``<pretrain_path>/embedding_model.ckpt`` through its
    ``pretrainer``. These overrides point ``pretrain_path`` at ``folder`` and
    give the three modules the arguments of the folder's ``hyperparams.yaml``
    (SpeechBrain merges a mapping override into the YAML's ``!new:`` node).

    Arguments
    ---------
    folder : str
        An exported folder (``hyperparams.yaml``, ``embedding_model.ckpt``).

    Returns
    -------
    list of str
        ``--key=value`` arguments for the script (one argument each, no shell quoting).

    Raises
    ------
    ValueError
        When a module is not of the class upstream's YAML builds (then its
        arguments cannot be carried over).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "hyperparams.yaml"), "w").write(
    ...     "compute_features: !new:speechbrain.lobes.features.Fbank\\n  n_mels: 40\\n"
    ...     "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\\n"
    ...     "  norm_type: sentence\\n"
    ...     "embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN\\n"
    ...     "  input_size: 40\\n  channels: [8, 8, 24]\\n  lin_neurons: 16\\n")
    >>> upstream_scoring_overrides(folder)[1:]
    ['--n_mels=40', '--compute_features={n_mels: 40}', '--mean_var_norm={norm_type: sentence}', '--embedding_model={input_size: 40, channels: [8, 8, 24], lin_neurons: 16}']
    """
    import yaml

    path = os.path.join(folder, "hyperparams.yaml")
    with open(path, encoding="utf-8") as fin:
        tree = YAML().load(fin) or {}
    args = [f"--pretrain_path={os.path.abspath(folder)}"]
    modules = []
    for key, cls in UPSTREAM_VERIFICATION_CLASSES.items():
        node = tree.get(key)
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag != f"!new:{cls}":
            raise ValueError(
                f"{path}: {key} is {tag or node!r}, but SpeechBrain's verification_ecapa.yaml "
                f"builds {cls}; its cosine scoring cannot load this model by overrides."
            )
        values = _plain_yaml(node)
        dumped = yaml.safe_dump(values, default_flow_style=True, sort_keys=False,
                                width=1 << 20).strip()
        modules.append(f"--{key}={dumped}")
        if key == "compute_features" and "n_mels" in values:
            args.append(f"--n_mels={values['n_mels']}")
    return args + modules


# ------------------------------------------------------------------ model card
#: File name of the model card in an exported folder.
MODEL_CARD = "README.md"

#: The whole training YAML as run (overrides applied, references resolved).
TRAIN_YAML = "train_hyperparams.yaml"

_RESULTS_START = "<!-- results: filled in by verify.py -->"
_RESULTS_END = "<!-- end of results -->"
_NO_RESULTS = (
    "Not evaluated yet. Run the recipe's `verify.py` with the training YAML and the\n"
    "same overrides; it writes EER and minDCF here.\n"
)
_RESULT_COLUMNS = (
    "trials",
    "enrolment",
    "scoring",
    "trials (targets)",
    "EER (%)",
    "minDCF (p=0.01)",
    "EER threshold",
    "calibration",
    "Cllr",
    "minCllr",
    "actDCF (p=0.01)",
    "date",
)

#: File name of the calibrated interface (a copy of :mod:`sb_angcl.evaluation.calibration`).
CUSTOM_MODULE = "custom.py"

_CALIBRATION_START = "<!-- calibration: filled in by verify.py -->"
_CALIBRATION_END = "<!-- end of calibration -->"
_NO_CALIBRATION = (
    "Not calibrated yet: `verify_files` returns a cosine score. The recipe's `verify.py`\n"
    "(with `calibration: linear` or `qmf` and cosine scoring) fits a map from cosine to\n"
    "log-likelihood ratio and describes it here.\n"
)
_YAML_START = "# --- score calibration: written by sb-angcl verify.py (README.md of this folder) ---"
_YAML_END = "# --- end of score calibration ---"

# Training settings listed on the card when the YAML defines them.
_CARD_SETTINGS = (
    "emb_dim", "channels", "n_mels", "sample_rate", "sentence_len",
    "number_of_epochs", "sampler", "speakers_per_batch", "utterances_per_speaker",
    "lr", "aam_margin", "aam_scale", "margin", "temperature", "attention_temperature",
    "balancing", "contrastive_weight", "seed",
)  # fmt: skip


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _objective(tree):
    """One line naming the training objective the YAML sets up."""
    if tree.get("balancing") == "fixed" and not tree.get("contrastive_weight"):
        return "AAM-softmax alone (the baseline; the contrastive loss is off)."
    attention = tree.get("attention_temperature")
    parts = [
        "AAM-softmax + AM-SupCon (angular-margin supervised contrastive loss)",
        "class-aware attention" + (f" (T_att={attention})" if attention is not None else " off"),
        f"loss balancing `{tree.get('balancing')}`",
    ]
    return ", ".join(parts) + " (Li, Mak & Meng, ICASSP 2023)."


def _encoder_name(tree):
    """The class the YAML's ``embedding_model`` is built from (``!new:...``)."""
    tag = getattr(getattr(tree.get("embedding_model"), "tag", None), "value", None) or ""
    return tag.rsplit(".", 1)[-1] if tag.startswith("!new:") else "embedding_model"


def _recipe_folder(hparams_file):
    """The recipe folder of a YAML in ``<recipe>/hparams/``, as ``recipes/...`` when it is one."""
    path = os.path.dirname(os.path.abspath(hparams_file))
    if os.path.basename(path) == "hparams":
        path = os.path.dirname(path)
    marker = os.sep + "recipes" + os.sep
    return path[path.rindex(marker) + 1 :] if marker in path else path


def _training_data(tree, n_speakers):
    csv = tree.get("train_annotation")
    line = f"data folder `{tree.get('data_folder')}`; {n_speakers} training speakers"
    if csv and os.path.isfile(csv):
        columns = ("ID", "duration", "wav", "start", "stop", "sample_rate")
        train = pd.read_csv(csv, usecols=lambda c: c in columns)
        hours = _listed_seconds(train, tree.get("sample_rate", 16000)) / 3600
        files = train["wav"].nunique() if "wav" in train else len(train)
        what = (f"{len(train)} utterances" if files == len(train)
                else f"{len(train)} segments of {files} files")
        line += f", {what} ({hours:.2f} h) listed in `{csv}`"
    return line


def _listed_seconds(train, sample_rate):
    """Seconds of audio a manifest lists: ``stop - start`` where a row gives a segment
    (upstream's VoxCeleb preparation lists 3 s chunks, each with the whole file's
    ``duration``), else ``duration``.

    Example
    -------
    >>> rows = pd.DataFrame({"duration": [7.0, 7.0, 2.0], "start": [0, 48000, 0],
    ...                      "stop": [48000, 96000, 0]})
    >>> _listed_seconds(rows, 16000)
    8.0
    """
    if "duration" not in train:
        return float("nan")
    seconds = train["duration"].astype(float)
    if {"start", "stop"} <= set(train.columns):
        rate = train["sample_rate"] if "sample_rate" in train else sample_rate
        segment = (train["stop"] - train["start"]) / rate
        seconds = seconds.where(train["stop"] <= train["start"], segment)
    return float(seconds.sum())


def write_model_card(folder, hparams_file, overrides=None, n_speakers=None):
    """Writes ``README.md`` (model card) and ``train_hyperparams.yaml`` into ``folder``.

    The card names the recipe and its training data, lists the main settings
    and overrides, gives the export date and shows how to load the folder and
    verify two files. Its results section says "not evaluated yet" until
    :func:`record_model_card_results` fills it; results already in a card
    being rewritten are dropped (they belonged to the previous model).

    Arguments
    ---------
    folder : str
        The exported inference folder.
    hparams_file : str
        The training YAML.
    overrides : dict or str or None
        Overrides of the training run.
    n_speakers : int or None
        Number of training speakers (classifier outputs).

    Returns
    -------
    str
        Path of the card.

    Example
    -------
    >>> import tempfile
    >>> folder, yaml_file = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(yaml_file, "w").write("seed: 3\\nbalancing: mgda_ub\\nemb_dim: 8\\n")
    >>> card = open(write_model_card(folder, yaml_file, {"seed": 4}, 10)).read()
    >>> "## Results" in card and "| seed | 4 |" in card
    True
    """
    if isinstance(overrides, str):
        import yaml

        overrides = yaml.safe_load(overrides) or {}
    overrides = dict(overrides or {})
    resolved = _resolved_yaml(hparams_file, overrides)
    with open(os.path.join(folder, TRAIN_YAML), "w", encoding="utf-8") as fout:
        fout.write(f"# {hparams_file} as run (exported {_now()})\n" + resolved)
    # Round-trip loading keeps tagged nodes (!new:, ...) as they are; only the
    # plain keys are read. (No constructor is registered: that would be global.)
    tree = YAML().load(resolved) or {}
    recipe = _recipe_folder(hparams_file)
    given = {k: v for k, v in overrides.items() if k != "out_n_neurons"}
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == "train.py" else "train.py"
    command = " ".join(
        ["python", script, os.fspath(hparams_file)] + [f"--{k}={v}" for k, v in given.items()]
    )
    settings = "\n".join(
        f"| {key} | {tree[key]} |" for key in _CARD_SETTINGS if key in tree
    )
    source = os.path.abspath(folder)
    text = f"""# Speaker encoder: {_encoder_name(tree)}, trained with sb-angcl

Exported {_now()} by sb-angcl {_version()}.

Training objective: {_objective(tree)}

## Training data and recipe

* Recipe: `{recipe}`, trained with (in `{os.getcwd()}`)

  ```
  {command}
  ```
* Training data: {_training_data(tree, n_speakers)}.
* The YAML used: `{TRAIN_YAML}` in this folder (overrides applied, references
  resolved). `hyperparams.yaml` is the inference part that SpeechBrain loads.

| setting | value |
|---|---|
{settings}

## Results

{_RESULTS_START}
{_NO_RESULTS}{_RESULTS_END}

## How to use

```python
from speechbrain.inference.speaker import SpeakerRecognition

model = SpeakerRecognition.from_hparams(
    source="{source}", savedir="pretrained_models/sb_angcl"
)
score, same = model.verify_files("speaker1.wav", "speaker2.wav")
print(float(score), bool(same))  # cosine score; decision at SpeechBrain's 0.25
signal = model.load_audio("speaker1.wav").unsqueeze(0)
embedding = model.encode_batch(signal)  # shape (1, 1, {tree.get('emb_dim', 'emb_dim')})
```

`verify_files` decides with a fixed threshold of 0.25. To decide at the EER
operating point of the trials above, compare the score with the "EER
threshold" of a `cosine` row (an AS-norm threshold is on another scale);
for scores that mean the same on any data, see "Calibrated scores".
The model was trained on {tree.get('sample_rate', 16000)} Hz audio.

## Calibrated scores

{_CALIBRATION_START}
{_NO_CALIBRATION}{_CALIBRATION_END}

{_upstream_scoring_section(folder)}## Files

`hyperparams.yaml`, `embedding_model.ckpt`, `classifier.ckpt` (training
speakers), `label_encoder.ckpt`/`.txt`, `{TRAIN_YAML}`, this `{MODEL_CARD}`
(and, once calibrated, `{CUSTOM_MODULE}`).
"""
    path = os.path.join(folder, MODEL_CARD)
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(text)
    return path


def _upstream_scoring_section(folder):
    """The card's section on scoring with SpeechBrain's own VoxCeleb recipe ('' where it cannot)."""
    import shlex

    try:
        args = upstream_scoring_overrides(folder)
    except (OSError, ValueError):
        return ""
    flags = " \\\n        ".join(shlex.quote(arg) for arg in args)
    return f"""## Scoring with SpeechBrain's VoxCeleb recipe

SpeechBrain's own cosine scoring, `recipes/VoxCeleb/SpeakerRec/speaker_verification_cosine.py`
of a SpeechBrain checkout with its `hparams/verification_ecapa.yaml`, scores this encoder
when its pretrainer is pointed here and the model definitions follow `hyperparams.yaml`:

```
cd recipes/VoxCeleb/SpeakerRec
python speaker_verification_cosine.py hparams/verification_ecapa.yaml \\
        --data_folder=/path/to/VoxCeleb1 --verification_file=/path/to/veri_test2.txt \\
        {flags} \\
        --score_norm=null
```

`--score_norm=null` scores by plain cosine (the recipe's `verify.py` with `score_norm: null`
gives the same EER on the same trials). The script still embeds its training split as a
score-normalisation cohort and takes the top `cohort_size` (20000) scores against it: on a
small corpus give a `--cohort_size` no larger than the rows of its `train.csv`.

"""


def _version():
    from sb_angcl import __version__

    return __version__


def record_model_card_results(folder, row):
    """Adds or replaces one row of the results table of a model card.

    Rows are keyed by their trials, enrolment and scoring cells, so running
    ``verify.py`` again with the same settings replaces its row, and other
    settings (another enrolment protocol, AS-norm) add rows.

    Arguments
    ---------
    folder : str
        An exported folder holding a card written by :func:`write_model_card`.
    row : Mapping
        Values for the columns ``trials, enrolment, scoring, trials (targets),
        EER (%), minDCF (p=0.01), EER threshold, calibration, Cllr, minCllr,
        actDCF (p=0.01)`` (missing ones stay empty); ``date`` is filled in.

    Returns
    -------
    str
        Path of the card.

    Example
    -------
    >>> import tempfile
    >>> folder, yaml_file = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(yaml_file, "w").write("seed: 3\\n")
    >>> _ = write_model_card(folder, yaml_file)
    >>> row = {"trials": "veri_test2.txt", "enrolment": "concat", "scoring": "cosine",
    ...        "trials (targets)": "8 (4)", "EER (%)": "2.50", "minDCF (p=0.01)": "0.1000",
    ...        "EER threshold": "0.4"}
    >>> _ = record_model_card_results(folder, row)
    >>> _ = record_model_card_results(folder, dict(row, **{"EER (%)": "1.25"}))
    >>> card = open(os.path.join(folder, "README.md")).read()
    >>> card.count("| veri_test2.txt | concat | cosine |"), "| 1.25 |" in card
    (1, True)
    """
    path = os.path.join(folder, MODEL_CARD)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: the model card is written when training exports "
            f"the folder; train again (or call write_model_card) first."
        )
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    if _RESULTS_START not in text or _RESULTS_END not in text:
        raise ValueError(
            f"{path} has no results section (markers {_RESULTS_START!r} ... "
            f"{_RESULTS_END!r}); delete it and export again to get a fresh card."
        )
    head, rest = text.split(_RESULTS_START, 1)
    block, tail = rest.split(_RESULTS_END, 1)
    cells = [str(row.get(c, "")).replace("|", "/") for c in _RESULT_COLUMNS[:-1]] + [_now()]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]
    if lines:  # rows of an older card: their cells by column name
        header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
        rows = [[dict(zip(header, r)).get(c, "") for c in _RESULT_COLUMNS] for r in rows]
    same = [k for k, r in enumerate(rows) if r[:3] == cells[:3]]
    if same:
        rows[same[0]] = cells
    else:
        rows.append(cells)
    table = ["| " + " | ".join(_RESULT_COLUMNS) + " |", "|" + "---|" * len(_RESULT_COLUMNS)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(head + _RESULTS_START + "\n" + "\n".join(table) + "\n" + _RESULTS_END + tail)
    return path


def _replace_between(text, start, end, body):
    """``text`` with what lies between the markers replaced by ``body``."""
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    return head + start + "\n" + body + end + tail


def record_calibration(folder, values, summary):
    """Puts a score calibration into an exported folder.

    Writes the ``calibration`` mapping into ``hyperparams.yaml`` (between two
    marker comments, replacing an earlier one; plain values, so
    ``SpeakerRecognition.from_hparams`` still loads the folder with SpeechBrain
    alone, and a copy of the folder, a hub upload or ``LocalStrategy.COPY``
    keep it), copies :mod:`sb_angcl.evaluation.calibration` into the folder as
    ``custom.py`` (for SpeechBrain's ``foreign_class`` where sb-angcl is not
    installed) and describes the calibration in the card.

    Arguments
    ---------
    folder : str
        An exported folder (``hyperparams.yaml``, ``README.md``).
    values : Mapping
        :meth:`sb_angcl.evaluation.calibration.Calibration.to_dict` plus ``p_target``,
        ``c_miss``, ``c_fa`` of the decision, ``sample_rate`` and
        ``max_seconds`` (the cap on durations, for ``qmf``).
    summary : Mapping
        What it was fitted on: ``fitted_on``, ``source`` (``test folds``,
        ``dev`` or ``list``), ``trials``, ``targets``, ``speakers``, ``folds``.

    Returns
    -------
    str
        The path of ``hyperparams.yaml``.

    Example
    -------
    >>> import tempfile, yaml
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "hyperparams.yaml"), "w").write("n_mels: 80\\n")
    >>> values = {"method": "linear", "weights": [10.0], "offset": -5.0, "prior": 0.01,
    ...           "p_target": 0.01, "c_miss": 1.0, "c_fa": 1.0, "sample_rate": 16000,
    ...           "max_seconds": None}
    >>> path = record_calibration(folder, values, {"fitted_on": "dev.csv", "trials": 10,
    ...                                            "targets": 4, "speakers": 3})
    >>> path = record_calibration(folder, dict(values, offset=-6.0), {"fitted_on": "dev.csv"})
    >>> loaded = yaml.safe_load(open(path))
    >>> loaded["n_mels"], loaded["calibration"]["offset"], open(path).read().count("\\ncalibration:")
    (80, -6.0, 1)
    """
    import yaml

    from sb_angcl.evaluation import calibration as calibration_module

    cal = calibration_module.Calibration.from_dict(values)
    keys = ("method", "features", "weights", "offset", "prior", "p_target", "c_miss", "c_fa",
            "sample_rate", "max_seconds")
    plain = dict(cal.to_dict(), **{k: values[k] for k in keys[5:]})
    plain = {k: plain[k] for k in keys}
    threshold = calibration_module.bayes_threshold(values["p_target"], values["c_miss"],
                                                   values["c_fa"])
    block = "\n".join([
        _YAML_START,
        "# llr = offset + sum(weights * features); features: the cosine score (and the log",
        "# seconds of enrolment and test for qmf). CalibratedSpeakerRecognition (custom.py)",
        f"# returns the LLR and accepts when llr > {threshold:.4f} (the Bayes threshold at p_target).",
        yaml.safe_dump({"calibration": plain}, sort_keys=False, default_flow_style=None).rstrip(),
        _YAML_END,
    ]) + "\n"
    path = os.path.join(folder, "hyperparams.yaml")
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    if _YAML_START in text and _YAML_END in text:
        head, rest = text.split(_YAML_START, 1)
        text = head + block.rstrip("\n") + rest.split(_YAML_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(text)
    shutil.copyfile(calibration_module.__file__, os.path.join(folder, CUSTOM_MODULE))
    card = os.path.join(folder, MODEL_CARD)
    if os.path.isfile(card):
        with open(card, encoding="utf-8") as fin:
            text = fin.read()
        if _CALIBRATION_START in text and _CALIBRATION_END in text:
            body = _calibration_card_text(folder, cal, plain, summary, threshold)
            with open(card, "w", encoding="utf-8") as fout:
                fout.write(_replace_between(text, _CALIBRATION_START, _CALIBRATION_END, body))
        else:
            logger.warning("%s has no calibration section (exported by an older version); "
                           "the calibration is in hyperparams.yaml only", card)
    return path


def _calibration_card_text(folder, cal, plain, summary, threshold):
    """The card's "Calibrated scores" section."""
    names = {"score": "cosine score", "log_enrol_seconds": "log seconds of the first file",
             "log_test_seconds": "log seconds of the second file"}
    terms = " ".join(f"{'-' if w < 0 else '+'} {abs(w):.4g} * ({names[f]})"
                     for f, w in zip(plain["features"], cal.weights))
    fitted = summary.get("fitted_on")
    what = (f"{summary.get('trials')} trials ({summary.get('targets')} targets"
            + (f", {summary['speakers']} speakers" if summary.get("speakers") else "")
            + f") of `{fitted}`")
    kind = summary.get("source")
    if kind == "test folds":
        origin = "the test trials, whose speakers the encoder never saw"
        note = ("The Cllr and actDCF in the results table are cross-fitted: each trial's LLR "
                "came from the same kind of map fitted on trials of other speakers "
                f"({summary.get('folds')} speaker folds), so they estimate how this map does "
                "on new speakers.")
    elif kind == "dev":
        origin = "trials built from the validation split (held-out utterances of training speakers)"
        note = ("The encoder has learnt these speakers and separates them better than new "
                "ones, so this map is likely over-confident on new speakers.")
    else:
        origin = "the list given as `calibration_trials`"
        note = ""
    score_threshold = cal.score_threshold(plain["p_target"], plain["c_miss"], plain["c_fa"])
    stock = (
        f"`SpeakerRecognition.from_hparams` still loads this folder and returns the cosine; "
        f"the same decision with it is `verify_batch(x, y, threshold={score_threshold:.4f})`."
        if score_threshold is not None else
        "`SpeakerRecognition.from_hparams` still loads this folder and returns the cosine; "
        "this map is not an increasing function of the cosine alone (`qmf` needs the "
        "durations), so decide with `CalibratedSpeakerRecognition`."
    )
    source = os.path.abspath(folder)
    return f"""`{plain['method']}` calibration fitted {_now()} by `verify.py` at the effective prior
{plain['prior']} on {what}, {origin}:

    llr = {cal.offset:.4g} {terms}

{note + chr(10) if note else ""}It is stored as `calibration` in `hyperparams.yaml`. The calibrated interface
returns this log-likelihood ratio (LLR) and accepts when llr > {threshold:.4f}, the
Bayes threshold for p_target {plain['p_target']} (costs 1): no threshold to tune. The
results table above gives its Cllr and actual DCF on the test trials.

```python
from speechbrain.inference.interfaces import foreign_class

model = foreign_class(
    source="{source}", pymodule_file="{CUSTOM_MODULE}",
    classname="CalibratedSpeakerRecognition", savedir="pretrained_models/sb_angcl_calibrated",
)  # or, with sb-angcl installed: sb_angcl.evaluation.calibration.CalibratedSpeakerRecognition.from_hparams(...)
llr, same = model.verify_files("speaker1.wav", "speaker2.wav")
```

{stock}
"""
