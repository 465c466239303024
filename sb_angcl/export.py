"""Moving trained encoders in and out of SpeechBrain's inference format.

:func:`export_inference_folder` writes a folder that
``speechbrain.inference.speaker.SpeakerRecognition.from_hparams(source=folder)``
loads with no network: ``hyperparams.yaml`` (the recipe's own feature,
normalisation, encoder and classifier definitions with every ``!ref``
resolved), ``embedding_model.ckpt``, ``classifier.ckpt`` and the label
encoder. :func:`load_pretrained_encoder` does the converse: it starts an
encoder from such a folder (ours, or a downloaded ``spkrec-ecapa-voxceleb``)
through SpeechBrain's ``Pretrainer``.

Authors
 * sb-angcl contributors
"""

import io
import logging
import os
import shutil

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


def inference_yaml(hparams_file, overrides=None, embedding_spec=None):
    """Inference ``hyperparams.yaml`` text from a training YAML.

    Arguments
    ---------
    hparams_file : str
        The training hyperparameters file.
    overrides : dict or str or None
        The overrides the training run used (so the architecture matches).
    embedding_spec : dict or None
        ``{"class": ..., "kwargs": ...}`` of the encoder (set by
        :func:`sb_angcl.encoders.build_encoder`); written as a plain
        ``!new:`` so the folder loads with SpeechBrain alone.

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
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides or {}).getvalue()
    yaml = YAML()
    tree = yaml.load(resolved)
    missing = [key for key in INFERENCE_KEYS if key not in tree]
    if missing:
        raise KeyError(
            f"{hparams_file} lacks {missing}: an exportable recipe YAML defines "
            f"{list(INFERENCE_KEYS)}."
        )
    subset = type(tree)()
    for key in INFERENCE_KEYS:
        subset[key] = tree[key]
    if embedding_spec is not None:
        from ruamel.yaml.comments import CommentedMap

        node = CommentedMap(embedding_spec["kwargs"])
        node.yaml_set_ctag(_tag("!new:" + embedding_spec["class"]))
        subset["embedding_model"] = node
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
        The folder.

    Example
    -------
    >>> callable(export_inference_folder)
    True
    """
    os.makedirs(folder, exist_ok=True)
    spec = getattr(_plain(embedding_model), "sb_angcl_spec", None)
    text = inference_yaml(hparams_file, overrides, spec)
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as fout:
        fout.write(text)
    torch.save(_plain(embedding_model).state_dict(), os.path.join(folder, "embedding_model.ckpt"))
    torch.save(_plain(classifier).state_dict(), os.path.join(folder, "classifier.ckpt"))
    label_encoder.save(os.path.join(folder, "label_encoder.ckpt"))
    shutil.copyfile(
        os.path.join(folder, "label_encoder.ckpt"), os.path.join(folder, "label_encoder.txt")
    )
    logger.info("Exported the inference model to %s", folder)
    return folder


def _tag(text):
    from ruamel.yaml.tag import Tag

    return Tag(suffix=text)


def _plain(module):
    """Unwrap DDP / DataParallel."""
    return getattr(module, "module", module)


def load_pretrained_encoder(folder, embedding_model, collect_in, classifier=None):
    """Initialise ``embedding_model`` from a local SpeechBrain model folder.

    Uses SpeechBrain's ``Pretrainer`` on ``<folder>/embedding_model.ckpt``
    (and ``classifier.ckpt`` when a classifier is given and the file exists;
    its speaker count must then match).

    Arguments
    ---------
    folder : str
        Local folder, e.g. a downloaded ``spkrec-ecapa-voxceleb`` or one written
        by :func:`export_inference_folder`.
    embedding_model : torch.nn.Module
        Encoder with the same architecture.
    collect_in : str
        Where the Pretrainer puts its links.
    classifier : torch.nn.Module or None
        Also load the classifier.

    Returns
    -------
    list of str
        Names of the loaded parts.

    Example
    -------
    >>> load_pretrained_encoder("/no/such/folder", torch.nn.Linear(1, 1), "/tmp/x")
    Traceback (most recent call last):
     ...
    FileNotFoundError: pretrained_model: /no/such/folder/embedding_model.ckpt not found. Give a local folder holding embedding_model.ckpt (e.g. a downloaded spkrec-ecapa-voxceleb), or set pretrained_model: null.
    """
    from speechbrain.utils.parameter_transfer import Pretrainer

    folder = os.path.abspath(folder)
    ckpt = os.path.join(folder, "embedding_model.ckpt")
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(
            f"pretrained_model: {ckpt} not found. Give a local folder holding "
            "embedding_model.ckpt (e.g. a downloaded spkrec-ecapa-voxceleb), or set "
            "pretrained_model: null."
        )
    loadables = {"embedding_model": _plain(embedding_model)}
    paths = {"embedding_model": ckpt}
    cls_ckpt = os.path.join(folder, "classifier.ckpt")
    if classifier is not None and os.path.isfile(cls_ckpt):
        loadables["classifier"] = _plain(classifier)
        paths["classifier"] = cls_ckpt
    os.makedirs(collect_in, exist_ok=True)
    pretrainer = Pretrainer(collect_in=collect_in, loadables=loadables, paths=paths)
    pretrainer.collect_files()
    pretrainer.load_collected()
    logger.info("Initialised %s from %s", sorted(loadables), folder)
    return sorted(loadables)
