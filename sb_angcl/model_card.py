"""The model card (``README.md``) of an exported folder, and what ``verify.py`` adds to it.

:func:`write_model_card` writes it at export; :func:`record_verification` fills
its results and calibration from a report of
:func:`sb_angcl.evaluation.verification.verify` (nothing here imports evaluation).

Authors
 * sb-angcl contributors
"""

import datetime
import logging
import os
import shutil

import pandas as pd
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from sb_angcl import __version__
from sb_angcl.hyperparams import override_text, overrides_to_dict

logger = logging.getLogger(__name__)

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
    "trials", "enrolment", "scoring", "trials (targets)", "EER (%)", "minDCF (p=0.01)",
    "EER threshold", "calibration", "Cllr", "minCllr", "actDCF (p=0.01)", "date",
)  # fmt: skip

#: File name of the calibrated interface (a copy of :mod:`sb_angcl.evaluation.calibrated`).
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

#: Settings listed on the card when the YAML defines them: the model, the data
#: pipeline and every setting of the objective (so the card tells the default
#: from the paper's setting).
CARD_SETTINGS = (
    "emb_dim", "channels", "n_mels", "sample_rate", "sentence_len",
    "number_of_epochs", "speakers_per_batch", "utterances_per_speaker",
    "positives_across_sessions", "positive_views", "speed_perturb_speakers", "label_noise",
    "augmentation", "lr", "weight_decay", "aam_margin", "aam_scale", "margin", "temperature",
    "attention_temperature", "projection_dim", "balancing", "contrastive_weight",
    "gradient_normalization", "alpha_min", "alpha_max", "alpha_smoothing",
    "contrastive_fade_start", "contrastive_fade_end", "gather_across_ranks", "seed",
)  # fmt: skip

#: The license of the exported weights' code (the package's, setup.cfg).
LICENSE = "Apache-2.0"

#: What the card asks users to cite.
CITATIONS = """```bibtex
@inproceedings{li2023angcl,
  title     = {Discriminative Speaker Representation via Contrastive Learning with
               Class-Aware Attention in Angular Space},
  author    = {Li, Zhe and Mak, Man-Wai and Meng, Helen Mei-Ling},
  booktitle = {Proc. ICASSP},
  year      = {2023},
  note      = {arXiv:2210.16622}
}
@misc{speechbrain,
  title         = {{SpeechBrain}: A General-Purpose Speech Toolkit},
  author        = {Ravanelli, Mirco and Parcollet, Titouan and Plantinga, Peter and others},
  year          = {2021},
  eprint        = {2106.04624},
  archivePrefix = {arXiv}
}
```"""

#: What the built-in corpus generator (``synthetic_corpus``) writes at a corpus' root.
SYNTHETIC_MARKER = "synthetic_corpus.json"


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


def trained_on_synthetic_corpus(data_folder):
    """Whether ``data_folder`` (or its parent) is the built-in synthetic corpus."""
    folders = data_folder if isinstance(data_folder, (list, tuple)) else [data_folder]
    for folder in folders:
        if folder is None:
            continue
        folder = os.path.abspath(str(folder))
        for candidate in (folder, os.path.dirname(folder)):
            if os.path.isfile(os.path.join(candidate, SYNTHETIC_MARKER)):
                return True
    return False


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
    """Seconds of audio a manifest lists: ``stop - start`` of segments, else ``duration``.

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


def write_model_card(folder, hparams_file, overrides=None, n_speakers=None, sections=""):
    """Writes the model card and ``train_hyperparams.yaml`` into ``folder``; returns the card's path.

    The card names the recipe (``hparams_file`` with the run's ``overrides``,
    a dict or YAML text), its training data (``n_speakers``) and settings, and
    shows how to load the folder; its results and calibration sections start
    empty. ``sections``: Markdown added before "Files".
    """
    overrides = overrides_to_dict(overrides)
    resolved = resolved_yaml(hparams_file, overrides)
    with open(os.path.join(folder, TRAIN_YAML), "w", encoding="utf-8") as fout:
        fout.write(f"# {hparams_file} as run (exported {_now()})\n" + resolved)
    # Round-trip loading keeps tagged nodes (!new:, ...) as they are; only the
    # plain keys are read. (No constructor is registered: that would be global.)
    tree = YAML().load(resolved) or {}
    recipe = _recipe_folder(hparams_file)
    given = {k: v for k, v in overrides.items() if k != "out_n_neurons"}
    # As typed in the recipe folder (no path of the machine it ran on).
    yaml_path = os.fspath(hparams_file)
    if os.path.basename(os.path.dirname(os.path.abspath(yaml_path))) == "hparams":
        yaml_path = os.path.join("hparams", os.path.basename(yaml_path))
    command = " ".join(
        ["python", "train.py", yaml_path] + [f"--{k}={override_text(v)}" for k, v in given.items()]
    )
    settings = "\n".join(
        f"| {key} | {tree[key]} |" for key in CARD_SETTINGS if key in tree
    )
    # The folder as the training command saw it (relative to where it ran); a copy
    # of the folder is loaded from wherever it lies.
    source = os.path.relpath(folder)
    warning = ""
    if trained_on_synthetic_corpus(tree.get("data_folder")):
        warning = (
            "\n> **Warning: trained on the built-in synthetic corpus** (`synthetic_corpus`,\n"
            "> generated voices). This model shows that the recipe runs; it is no speaker\n"
            "> encoder for real speech.\n"
        )
    text = f"""# Speaker encoder: {_encoder_name(tree)}, trained with sb-angcl

Exported {_now()} by sb-angcl {__version__}. License: {LICENSE}.
{warning}
Training objective: {_objective(tree)}

## Training data and recipe

* Recipe: `{recipe}`, trained with (in the recipe folder)

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
)  # source: this folder's path
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

{sections}## Files

`hyperparams.yaml`, `embedding_model.ckpt`, `classifier.ckpt` (training
speakers), `label_encoder.ckpt`/`.txt`, `{TRAIN_YAML}`, this `{MODEL_CARD}`
(and, once calibrated, `{CUSTOM_MODULE}`).

## License and citation

The code that trained and exports this model is sb-angcl ({LICENSE}), built on
SpeechBrain ({LICENSE}); the weights inherit the terms of the training data
above. If you use this model, please cite the method and SpeechBrain:

{CITATIONS}
"""
    path = os.path.join(folder, MODEL_CARD)
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(text)
    return path


def record_model_card_results(folder, row):
    """Adds or replaces (same trials, enrolment, scoring) a row of a card's results; returns its path.

    ``row`` maps :data:`_RESULT_COLUMNS` but ``date`` (filled in); missing ones stay empty.

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


def record_calibration(folder, calibration):
    """Puts a score calibration into an exported folder; returns the path of ``hyperparams.yaml``.

    The map goes into ``hyperparams.yaml`` between marker comments (plain
    values: SpeechBrain alone still loads the folder), the calibrated
    interface is copied as ``custom.py`` and the card describes it.
    ``calibration`` is a verification report's (``values``, ``summary``,
    ``bayes_threshold``, ``score_threshold``, ``interface``).

    Example
    -------
    >>> import tempfile, yaml
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "hyperparams.yaml"), "w").write("n_mels: 80\\n")
    >>> interface = os.path.join(tempfile.mkdtemp(), "calibrated.py")
    >>> _ = open(interface, "w").write("# the interface\\n")
    >>> values = {"method": "linear", "features": ["score"], "weights": [10.0], "offset": -5.0,
    ...           "prior": 0.01, "p_target": 0.01, "c_miss": 1.0, "c_fa": 1.0,
    ...           "sample_rate": 16000, "max_seconds": None}
    >>> fitted = {"values": values, "summary": {"fitted_on": "dev.csv", "trials": 10},
    ...           "bayes_threshold": 4.5951, "score_threshold": 0.9595, "interface": interface}
    >>> path = record_calibration(folder, fitted)
    >>> path = record_calibration(folder, dict(fitted, values=dict(values, offset=-6.0)))
    >>> loaded = yaml.safe_load(open(path))
    >>> loaded["n_mels"], loaded["calibration"]["offset"], open(path).read().count("\\ncalibration:")
    (80, -6.0, 1)
    """
    import yaml

    values, threshold = calibration["values"], calibration["bayes_threshold"]
    keys = ("method", "features", "weights", "offset", "prior", "p_target", "c_miss", "c_fa",
            "sample_rate", "max_seconds")
    plain = {k: values[k] for k in keys}
    body = "\n".join([
        "# llr = offset + sum(weights * features); features: the cosine score (and the log",
        "# seconds of enrolment and test for qmf). CalibratedSpeakerRecognition (custom.py)",
        f"# returns the LLR and accepts when llr > {threshold:.4f} (the Bayes threshold at p_target).",
        yaml.safe_dump({"calibration": plain}, sort_keys=False, default_flow_style=None).rstrip(),
    ]) + "\n"
    path = os.path.join(folder, "hyperparams.yaml")
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    if _YAML_START in text and _YAML_END in text:
        text = _replace_between(text, _YAML_START, _YAML_END, body)
    else:
        text = text.rstrip("\n") + "\n\n" + _YAML_START + "\n" + body + _YAML_END + "\n"
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(text)
    shutil.copyfile(calibration["interface"], os.path.join(folder, CUSTOM_MODULE))
    card = os.path.join(folder, MODEL_CARD)
    if os.path.isfile(card):
        with open(card, encoding="utf-8") as fin:
            text = fin.read()
        if _CALIBRATION_START in text and _CALIBRATION_END in text:
            body = _calibration_card_text(folder, plain, calibration)
            with open(card, "w", encoding="utf-8") as fout:
                fout.write(_replace_between(text, _CALIBRATION_START, _CALIBRATION_END, body))
        else:
            logger.warning("%s has no calibration section (exported by an older version); "
                           "the calibration is in hyperparams.yaml only", card)
    return path


def record_verification(folder, report):
    """Records a report of :func:`~sb_angcl.evaluation.verification.verify` in the folder it scored.

    Its ``card_row`` becomes a row of the card and its ``calibration`` (unless
    None) the folder's. Returns the card's path (None: the folder has no card).
    """
    if not os.path.isfile(os.path.join(folder, MODEL_CARD)):
        logger.warning("%s has no %s (exported by an older version); results not recorded",
                       folder, MODEL_CARD)
        return None
    path = record_model_card_results(folder, report["card_row"])
    logger.info("Recorded the results in %s", path)
    if report["calibration"] is not None:
        record_calibration(folder, report["calibration"])
        logger.info("Recorded the calibration in %s", folder)
    return path


def _calibration_card_text(folder, plain, calibration):
    """The card's "Calibrated scores" section."""
    summary, threshold = calibration["summary"], calibration["bayes_threshold"]
    names = {"score": "cosine score", "log_enrol_seconds": "log seconds of the first file",
             "log_test_seconds": "log seconds of the second file"}
    terms = " ".join(f"{'-' if w < 0 else '+'} {abs(w):.4g} * ({names[f]})"
                     for f, w in zip(plain["features"], plain["weights"]))
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
    score_threshold = calibration["score_threshold"]
    stock = (
        f"`SpeakerRecognition.from_hparams` still loads this folder and returns the cosine; "
        f"the same decision with it is `verify_batch(x, y, threshold={score_threshold:.4f})`."
        if score_threshold is not None else
        "`SpeakerRecognition.from_hparams` still loads this folder and returns the cosine; "
        "this map is not an increasing function of the cosine alone (`qmf` needs the "
        "durations), so decide with `CalibratedSpeakerRecognition`."
    )
    source = os.path.relpath(folder)
    return f"""`{plain['method']}` calibration fitted {_now()} by `verify.py` at the effective prior
{plain['prior']} on {what}, {origin}:

    llr = {plain['offset']:.4g} {terms}

{note + chr(10) if note else ""}It is stored as `calibration` in `hyperparams.yaml`. The calibrated interface
returns this log-likelihood ratio (LLR) and accepts when llr > {threshold:.4f}, the
Bayes threshold for p_target {plain['p_target']} (costs 1): no threshold to tune. The
results table above gives its Cllr and actual DCF on the test trials.

```python
from speechbrain.inference.interfaces import foreign_class

model = foreign_class(
    source="{source}", pymodule_file="{CUSTOM_MODULE}",
    classname="CalibratedSpeakerRecognition", savedir="pretrained_models/sb_angcl_calibrated",
)  # or, with sb-angcl installed: sb_angcl.evaluation.calibrated.CalibratedSpeakerRecognition.from_hparams(...)
llr, same = model.verify_files("speaker1.wav", "speaker2.wav")
```

{stock}
"""


def resolved_yaml(hparams_file, overrides):
    """The training YAML's text with the overrides applied and every ``!ref`` resolved."""
    with open(hparams_file, encoding="utf-8") as fin:
        return resolve_references(fin, overrides or {}).getvalue()
