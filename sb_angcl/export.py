"""Exporting a trained encoder as a SpeechBrain inference folder.

:func:`export_inference_folder` writes what ``SpeakerRecognition.from_hparams``
loads offline, with the model card (:mod:`sb_angcl.model_card`);
:func:`upstream_scoring_overrides` lets upstream's VoxCeleb cosine scoring
load the encoder.

Authors
 * sb-angcl contributors
"""

import io
import logging
import os
import shutil

import torch
from ruamel.yaml import YAML

from sb_angcl.model_card import resolved_yaml, write_model_card

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
    """Inference ``hyperparams.yaml`` text: the training YAML's :data:`INFERENCE_KEYS` as written.

    References are resolved with the run's ``overrides``; a ``modules`` dict
    and a ``pretrainer`` follow.

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
    tree = yaml.load(resolved_yaml(hparams_file, overrides))
    missing = [key for key in INFERENCE_KEYS if key not in tree]
    if missing:
        raise KeyError(f"{hparams_file} lacks {missing}: an exportable recipe YAML defines "
                       f"{list(INFERENCE_KEYS)}.")
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


def export_inference_folder(
    folder, hparams_file, embedding_model, classifier, label_encoder, overrides=None
):
    """Write a SpeechBrain inference folder for a trained encoder; returns ``folder``.

    It holds ``hyperparams.yaml`` (:func:`inference_yaml`), ``embedding_model.ckpt``,
    ``classifier.ckpt``, ``label_encoder.ckpt`` (and ``.txt``),
    ``train_hyperparams.yaml`` and the model card ``README.md``.
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
    write_model_card(folder, hparams_file, overrides, len(label_encoder),
                     sections=upstream_scoring_section(folder))
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
    """``--key=value`` arguments under which upstream's VoxCeleb cosine scoring loads ``folder``.

    Upstream's ``speaker_verification_cosine.py`` with ``verification_ecapa.yaml``
    builds its own modules: these point ``pretrain_path`` at the folder and give
    them the arguments of its ``hyperparams.yaml`` (ValueError for a module of
    another class).

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


def upstream_scoring_section(folder):
    """The card's section on scoring with SpeechBrain's own VoxCeleb recipe ('' where it cannot)."""
    import shlex

    try:
        args = upstream_scoring_overrides(folder)
    except (OSError, ValueError):
        return ""
    # The card travels with the folder: its path is the reader's to fill in.
    args[0] = "--pretrain_path=/path/to/this/folder"
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
