"""Reading a recipe's YAML: helpers that training and verification share.

:func:`plain_hparams` gives its plain settings with nothing built (for data
preparation); the classifier's size comes from the run's label encoder
(:func:`classifier_size`, :func:`load_trained_hparams`).

Authors
 * sb-angcl contributors
"""

import io
import os

import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML

#: Name of the label encoder in a run's ``save_folder``.
LABEL_ENCODER_FILE = "label_encoder.txt"


def overrides_to_dict(overrides):
    """SpeechBrain's overrides (a string from ``sb.parse_arguments``, a dict or None) as a dict.

    A value with a tag (``--contrastive_fade_start='!ref <number_of_epochs> // 2'``)
    stays a YAML node, which hyperpyyaml resolves as it would in the file.

    Example
    -------
    >>> overrides_to_dict("margin: 0.3\\nbalancing: fixed")
    {'margin': 0.3, 'balancing': 'fixed'}
    >>> fade = overrides_to_dict("fade: !ref <epochs> // 2")["fade"]
    >>> override_text(fade)
    '!ref <epochs> // 2'
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    try:
        return yaml.safe_load(overrides) or {}
    except yaml.constructor.ConstructorError:  # a tag: the round-trip loader keeps it
        return dict(YAML().load(overrides) or {})


def override_text(value):
    """An override's value as typed after ``--key=`` (a tagged node with its tag).

    Example
    -------
    >>> override_text(0.3), override_text([0.9, 1.1])
    ('0.3', '[0.9, 1.1]')
    """
    tag = getattr(getattr(value, "tag", None), "value", None)
    return f"{tag} {value.value}" if tag else str(value)


def load_hparams(hparams_file, overrides):
    """Load a recipe YAML with overrides, building every object in it."""
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def _has_tag(node):
    """Whether a round-trip YAML node (or anything inside it) carries a ``!tag``."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag:
        return True
    if isinstance(node, dict):
        return any(_has_tag(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_tag(v) for v in node)
    return False


def plain_hparams(hparams_file, overrides=None):
    """The plain settings of a recipe YAML (overrides applied, references resolved), nothing built.

    Keys whose value holds a tag (``!new:``, ``!apply:``, ...) are left out.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(path, "w").write(
    ...     "seed: 1\\nout: !ref results/<seed>\\nscale: 30\\nt: !ref 1 / <scale>\\n"
    ...     "__set_seed: !apply:speechbrain.utils.seed_everything [!ref <seed>]\\n"
    ...     "model: !new:torch.nn.Linear [2, 2]\\n")
    >>> plain_hparams(path, {"seed": 4})
    {'seed': 4, 'out': 'results/4', 'scale': 30, 't': 0.03333333333333333}
    """
    with open(hparams_file, encoding="utf-8") as fin:
        text = resolve_references(fin, overrides or {}).getvalue()
    loader = YAML()
    tree = loader.load(text) or {}
    plain = type(tree)()
    for key, value in tree.items():
        if not _has_tag(value):
            plain[key] = value
    out = io.StringIO()
    loader.dump(plain, out)
    return dict(load_hyperpyyaml(out.getvalue()) or {})


def classifier_size(save_folder):
    """Number of classifier outputs: the speakers of ``<save_folder>/label_encoder.txt``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> folder = tempfile.mkdtemp()
    >>> enc = CategoricalEncoder()
    >>> enc.update_from_iterable(["s1", "s2", "s1"])
    >>> enc.save(os.path.join(folder, LABEL_ENCODER_FILE))
    >>> classifier_size(folder)
    2
    """
    from speechbrain.dataio.encoder import CategoricalEncoder

    path = os.path.join(save_folder, LABEL_ENCODER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: the classifier is sized from the training run's "
            "label encoder, written by train.py after data preparation. Train first "
            "(same YAML and overrides), or give --out_n_neurons=<number of speakers>."
        )
    encoder = CategoricalEncoder()
    encoder.load(path)
    return len(encoder)


def load_trained_hparams(hparams_file, overrides):
    """A trained run's YAML, loaded, its classifier sized from the label encoder (or ``overrides``)."""
    overrides = dict(overrides)
    if not overrides.get("out_n_neurons"):
        save_folder = plain_hparams(hparams_file, overrides)["save_folder"]
        overrides["out_n_neurons"] = classifier_size(save_folder)
    return load_hparams(hparams_file, overrides)
