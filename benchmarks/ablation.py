"""Ablation and sweep of the paper's system, several seeds, paired by seed.

Trains and scores, with the real recipe (its ``train.py``'s ``train`` and
``sb_angcl.evaluation.verification.run_verification`` with command-line overrides, in
this process or in ``--jobs`` worker processes), the variants

* ``aam``: AAM-softmax alone (the reference every variant is paired with);
* ``supcon``: AAM + SupCon (fixed weight 0.5, margin 0, no attention);
* ``amsupcon``: AAM + AM-SupCon (fixed 0.5, margin 0.2, no attention);
* ``amsupcon_caa``: + class-aware attention (``T_att = 1 / aam_scale``);
* ``paper``: + MGDA-UB balancing exactly as DESIGN.md states the rule;
* ``default``: the recipe's YAML as shipped (its defaults were chosen with
  this script, see the README);

(``mgda`` and ``default_no_caa`` with ``--variants``), plus, with ``--grid
KEY=V1,V2 ...``, one variant per combination of YAML values on top of
``--grid-base``. Each runs with every seed of ``--seeds``; the seed changes
the weight initialisation, dev split, batches and augmentation, and is the
same for every variant, so variants are compared **paired by seed**: the
report gives mean ± std per variant, and the mean difference from
``--reference`` with a 95 % t-interval, for EER and minDCF (p_target 0.01)
overall, on the cross-language trials, and on every other condition of the
recipe's metrics table (e.g. same- / cross-session target trials).

By default the corpus is the built-in synthetic one (``synthetic_corpus``,
VoxCeleb1 layout, 40 speakers x 24 utterances, generated once into the work
folder; ``--corpus-seed``, ``--label-noise``, ``--confusable-pairs``) and the
recipe is ``recipes/VoxCeleb/SpeakerRec`` with its small ECAPA YAML. A sweep
that is stopped continues where it stopped when run again (finished runs with
the same settings are reused; ``--restart`` runs everything again). At full
size::

    python benchmarks/ablation.py \\
        --hparams recipes/VoxCeleb/SpeakerRec/hparams/train_ecapa_angcl.yaml \\
        --data_folder /data/VoxCeleb1 --device cuda --epochs 40 --seeds 1 2 3 4 5

Any recipe YAML works (its folder's ``../train.py`` gives the data
preparation, so the CN-Celeb recipe works too); ``--override key=value`` adds
overrides to every run. The tables are written as Markdown (with the command,
corpus and machine in a header) to ``--output`` and printed; per-run numbers go
next to it as CSV. The last line is ``ratio <EER(default) / EER(aam)>``, each
EER the mean over seeds.

Authors
 * sb-angcl contributors
"""

import argparse
import contextlib
import datetime
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time

import torch

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HPARAMS = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SpeakerRec", "hparams", "train_ecapa_angcl_small.yaml"
)
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "ablation.md")

#: Variant name -> (description, overrides of the recipe YAML). ``default``
#: is the recipe's YAML as shipped; every other variant pins every objective
#: and sampler setting it depends on (:data:`PINNED`), so that a change of the
#: YAML's defaults does not change what it runs. ``paper`` is DESIGN.md's rule
#: as written (MGDA-UB, no normalisation, bounds or smoothing; T_att = 1/s).
PINNED = {"balancing": "fixed", "contrastive_weight": 0.5, "gradient_normalization": "none",
          "alpha_min": 0.0, "alpha_max": 1.0, "alpha_smoothing": 0.0, "margin": 0.2,
          "temperature": 0.07, "attention_temperature": "!ref 1 / <aam_scale>",
          "positives_across_sessions": True, "projection_dim": 0, "positive_views": 1,
          "contrastive_fade_start": None, "speed_perturb_speakers": [], "label_noise": 0.0}
PAPER_RULE = dict(PINNED, balancing="mgda_ub")
#: The batches of the two-view variants: 8 speakers x 2 utterances (x 2 views).
VIEWS_BATCH = {"speakers_per_batch": 8, "utterances_per_speaker": 2}


def _pinned(**settings):
    """:data:`PINNED` with ``settings`` on top (a variant's full overrides)."""
    unknown = set(settings) - set(PINNED)
    if unknown:
        raise KeyError(f"not a pinned setting: {sorted(unknown)}")
    return dict(PINNED, **settings)


def variant_overrides(settings, extra):
    """A variant's settings with the sweep's ``--override`` values: those win over pins.

    A pin (a :data:`PINNED` value the variant keeps as it is) only fixes what
    the YAML would otherwise decide, so ``--override label_noise=0.2`` reaches
    every variant, the pinned AAM-softmax reference included; what defines a
    variant (a value other than the pin, e.g. AAM-softmax's
    ``contrastive_weight: 0``) wins over ``--override``.

    Example
    -------
    >>> aam = _pinned(contrastive_weight=0.0)
    >>> out = variant_overrides(aam, {"label_noise": 0.2, "contrastive_weight": 0.3})
    >>> out["label_noise"], out["contrastive_weight"]
    (0.2, 0.0)
    """
    defining = {k: v for k, v in settings.items() if k not in PINNED or PINNED[k] != v}
    return {**settings, **extra, **defining}


VARIANTS = {
    "aam": ("AAM-softmax", _pinned(contrastive_weight=0.0, attention_temperature=None)),
    "default": ("the recipe's defaults", {}),
    "default_no_caa": ("the recipe's defaults, attention off", {"attention_temperature": None}),
    "default_same_sessions": (
        "the recipe's defaults, positives from any session",
        {"positives_across_sessions": False},
    ),
    "supcon": ("AAM + SupCon (fixed 0.5, m=0, no attention)",
               _pinned(margin=0.0, attention_temperature=None)),
    "amsupcon": ("AAM + AM-SupCon (fixed 0.5, m=0.2)", _pinned(attention_temperature=None)),
    "amsupcon_caa": ("+ CAA (T_att = 1/s)", _pinned()),
    "paper": ("+ MGDA-UB as specified (paper's rule)", dict(PAPER_RULE)),
    "mgda_bounded": ("+ MGDA-UB, alpha >= 0.3, smoothed (momentum 0.9)",
                     dict(PAPER_RULE, alpha_min=0.3, alpha_smoothing=0.9)),
    "mgda_lossnorm": ("+ MGDA-UB on loss-normalised gradients",
                      dict(PAPER_RULE, gradient_normalization="loss")),
    "mgda": ("+ MGDA on parameters", dict(PAPER_RULE, balancing="mgda")),
    # The authors' positives: each crop and an augmented copy (same label), on
    # top of 2 utterances per speaker from two sessions; AAM-softmax trained on
    # the same batches and views.
    "aam_views": ("AAM-softmax, 8 x 2 x 2 views",
                  dict(_pinned(contrastive_weight=0.0, attention_temperature=None,
                               positive_views=2), **VIEWS_BATCH)),
    "default_views": ("the recipe's defaults, 8 x 2 x 2 views",
                      dict(positive_views=2, **VIEWS_BATCH)),
    "default_views_emb": ("the defaults, 8 x 2 x 2 views, AM-SupCon on the embedding",
                          dict(positive_views=2, projection_dim=0, **VIEWS_BATCH)),
    "default_views_fade": ("the defaults, 8 x 2 x 2 views, contrastive term fading from mid-run",
                           dict(positive_views=2, contrastive_fade_start="!ref <number_of_epochs> // 2",
                                **VIEWS_BATCH)),
}
DEFAULT_VARIANTS = ["aam", "supcon", "amsupcon", "amsupcon_caa", "paper", "default"]

#: Defaults chosen from a calibration on a 2-core CPU (see benchmarks/README.md).
DEFAULTS = {
    "speakers": 40, "utterances": 24, "epochs": 8, "seeds": [1, 2, 3],
    "sessions": 3, "languages": 3, "duration_min": 1.5, "duration_max": 4.0,
}

#: ``--quick``: a tiny corpus and model, one epoch, one seed, two variants.
QUICK = {
    "speakers": 8, "utterances": 6, "sessions": 2, "languages": 2,
    "duration_min": 1.0, "duration_max": 1.5, "epochs": 1, "seeds": [1],
    "variants": ["aam", "default"],
    "overrides": {
        "channels": 16, "attention_channels": 8, "emb_dim": 16, "n_mels": 20,
        "speakers_per_batch": 3, "utterances_per_speaker": 2, "sentence_len": 1.0,
    },
}
QUICK_CNCELEB = {"speakers": 10, "duration_min": 2.0, "duration_max": 3.0}


def grid_variants(specs, base="default"):
    """Variants for every combination of ``KEY=V1,V2`` specifications.

    Each grid variant is ``base``'s overrides plus one value per key, named
    ``key=value,key=value`` (values as written in a ``--key=value`` override).

    Arguments
    ---------
    specs : list of str
        E.g. ``["alpha_min=0.2,0.5", "temperature=0.1"]``.
    base : str
        The variant whose overrides every grid point starts from.

    Returns
    -------
    dict
        ``name -> (description, overrides)``.

    Example
    -------
    >>> sorted(grid_variants(["alpha_min=0.2,0.5", "margin=0.1"]))
    ['alpha_min=0.2,margin=0.1', 'alpha_min=0.5,margin=0.1']
    >>> grid_variants(["attention_temperature=null"])["attention_temperature=null"][1]
    {'attention_temperature': None}
    """
    import itertools

    import yaml

    if not specs:
        return {}
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r}: write KEY=V1,V2,... e.g. alpha_min=0.2,0.5")
        key, values = spec.split("=", 1)
        axes.append([(key.strip(), yaml.safe_load(v)) for v in values.split(",")])
    variants = {}
    for point in itertools.product(*axes):
        overrides = dict(VARIANTS[base][1])
        overrides.update(point)
        name = ",".join(f"{k}={yaml_value(v)}" for k, v in point)
        description = f"{base} + {name}"
        if base != "default":
            name = f"{base}:{name}"
        variants[name] = (description, overrides)
    return variants


def t_quantile_975(dof):
    """Student's t 97.5 % quantile (two-sided 95 % intervals).

    Arguments
    ---------
    dof : int
        Degrees of freedom (>= 1).

    Returns
    -------
    float

    Example
    -------
    >>> round(t_quantile_975(4), 3)
    2.776
    """
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def paired_difference(values, reference):
    """Mean of ``values - reference`` over paired seeds, with a 95 % CI.

    Arguments
    ---------
    values, reference : dict
        ``seed -> metric`` of the variant and of the reference; seeds in both
        with finite values are paired.

    Returns
    -------
    dict
        ``n``, ``mean``, ``low``, ``high`` (t-interval; NaN for n < 2),
        ``ratio`` (mean of values / mean of reference over the pairs).

    Example
    -------
    >>> d = paired_difference({1: 0.10, 2: 0.12, 3: 0.08}, {1: 0.12, 2: 0.15, 3: 0.11})
    >>> d["n"], round(d["mean"], 4), round(d["low"], 4), round(d["high"], 4)
    (3, -0.0267, -0.041, -0.0123)
    """
    seeds = sorted(
        k for k in values
        if k in reference and math.isfinite(values[k]) and math.isfinite(reference[k])
    )
    diffs = [values[k] - reference[k] for k in seeds]
    out = {"n": len(diffs), "mean": math.nan, "low": math.nan, "high": math.nan,
           "ratio": math.nan}
    if not diffs:
        return out
    out["mean"] = statistics.mean(diffs)
    ref_mean = statistics.mean(reference[k] for k in seeds)
    if ref_mean:
        out["ratio"] = statistics.mean(values[k] for k in seeds) / ref_mean
    if len(diffs) >= 2:
        half = t_quantile_975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    return out


def paired_table(results, variants, reference, metrics):
    """Markdown table of paired differences from ``reference``.

    Arguments
    ---------
    results : list of dict
        From :func:`run_one`.
    variants : list of str
        Row order (``reference`` itself is skipped).
    reference : str
        The variant every other one is paired with, seed by seed.
    metrics : list of (str, str, float, int)
        ``(key, label, scale, digits)``.

    Returns
    -------
    str

    Example
    -------
    >>> r = [{"variant": v, "seed": s, "EER": e} for v, s, e in
    ...      (("aam", 1, 0.12), ("aam", 2, 0.15), ("x", 1, 0.10), ("x", 2, 0.12))]
    >>> print(paired_table(r, ["aam", "x"], "aam", [("EER", "EER %", 100, 2)]).splitlines()[-1])
    | x | 2 | -2.50 [-8.85, 3.85] | 0.815 |
    """
    head = "| variant | pairs | " + " | ".join(f"Δ {m[1]} [95 % CI]" for m in metrics)
    lines = [head + f" | {metrics[0][1]} ratio |", "|" + "---|" * (len(metrics) + 3)]
    by = {}
    for r in results:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    for variant in variants:
        if variant == reference or variant not in by:
            continue
        cells, n, ratio = [], 0, math.nan
        for key, _, scale, digits in metrics:
            d = paired_difference(
                {s: r.get(key, math.nan) for s, r in by[variant].items()},
                {s: r.get(key, math.nan) for s, r in by.get(reference, {}).items()},
            )
            if key == metrics[0][0]:
                n, ratio = d["n"], d["ratio"]
            if not math.isfinite(d["mean"]):
                cells.append("n/a")
                continue
            cells.append(f"{scale * d['mean']:+.{digits}f} "
                         f"[{scale * d['low']:+.{digits}f}, {scale * d['high']:+.{digits}f}]")
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    return "\n".join(lines).replace("+-", "-").replace("[+", "[").replace(", +", ", ")


def yaml_value(value):
    """A Python value as it is written in a ``--key=value`` override.

    Arguments
    ---------
    value : object
        ``None``, bool, number or string.

    Returns
    -------
    str

    Example
    -------
    >>> [yaml_value(v) for v in (None, True, 0.5, "mgda_ub")]
    ['null', 'True', '0.5', 'mgda_ub']
    """
    if value is None:
        return "null"
    return str(value)


def verification_yaml_of(hparams_file):
    """The recipe's scoring YAML beside a training YAML (``hparams/verification.yaml``)."""
    return os.path.join(os.path.dirname(hparams_file), "verification.yaml")


def yaml_top_keys(hparams_file):
    """Top-level keys of a recipe YAML (read as text; nothing is built).

    Arguments
    ---------
    hparams_file : str
        YAML path.

    Returns
    -------
    set of str

    Example
    -------
    >>> sorted(yaml_top_keys(DEFAULT_HPARAMS) & {"balancing", "margin", "nope"})
    ['balancing', 'margin']
    """
    with open(hparams_file, encoding="utf-8") as fin:
        return {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*:", fin.read(), re.M)}


def yaml_top_values(hparams_file):
    """Top-level scalar settings of a recipe YAML, as written (no object is built).

    Arguments
    ---------
    hparams_file : str
        YAML path.

    Returns
    -------
    dict
        ``key -> value`` for every top-level key with a value on its own line
        (numbers, booleans, null and strings are parsed; ``!ref`` expressions
        are kept as text); keys that define objects (``!new:``, nested
        mappings) are left out.

    Example
    -------
    >>> v = yaml_top_values(DEFAULT_HPARAMS)
    >>> v["attention_temperature"], isinstance(v["margin"], float), "embedding_model" in v
    ('!ref 1 / <aam_scale>', True, False)
    """
    import yaml

    values = {}
    with open(hparams_file, encoding="utf-8") as fin:
        for match in re.finditer(r"^([A-Za-z_]\w*):[ \t]*([^\n#]*?)[ \t]*(?:#.*)?$",
                                 fin.read(), re.M):
            key, text = match.groups()
            if not text or text.startswith(("!new:", "!apply:", "!name:", "!PLACEHOLDER")):
                continue
            values[key] = text if text.startswith("!") else yaml.safe_load(text)
    return values


def run_settings(hparams_file, overrides):
    """Every top-level scalar setting of one run: the YAML's, then ``overrides``.

    Two runs with the same settings (and the same code) are the same
    experiment; a stored run is reused only when these match.

    Arguments
    ---------
    hparams_file : str
        YAML path.
    overrides : dict
        Command-line overrides of the run.

    Returns
    -------
    dict
        JSON-compatible.

    Example
    -------
    >>> s = run_settings(DEFAULT_HPARAMS, {"margin": 0.1, "seed": 3})
    >>> s["margin"], s["seed"], s["temperature"]
    (0.1, 3, 0.07)
    """
    settings = dict(yaml_top_values(hparams_file))
    settings.update(overrides)
    return json.loads(json.dumps(settings, sort_keys=True))


def code_version():
    """The git commit of this checkout, ``+dirty`` when tracked files differ.

    Returns
    -------
    str
        ``unknown`` outside a git checkout.

    Example
    -------
    >>> isinstance(code_version(), str)
    True
    """
    import subprocess

    def git(*cmd):
        return subprocess.run(["git", "-C", ROOT, *cmd], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sb_angcl", "recipes")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def trial_subsets(data_folder):
    """The corpus's trial subsets: every ``meta/veri_test2_<name>.txt``.

    Arguments
    ---------
    data_folder : str
        A VoxCeleb1-layout corpus (e.g. ``shared/realvoices``' ``vox/``).

    Returns
    -------
    dict
        ``name -> set of (enrol, test)`` (IDs as in the trial list:
        ``spk/session/utt.wav``); empty when the corpus has none.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "meta"))
    >>> _ = open(os.path.join(d, "meta", "veri_test2_real.txt"), "w").write("1 a/s/1.wav a/t/2.wav\\n")
    >>> trial_subsets(d)
    {'real': {('a/s/1.wav', 'a/t/2.wav')}}
    """
    subsets = {}
    meta = os.path.join(data_folder, "meta")
    if not os.path.isdir(meta):
        return subsets
    for name in sorted(os.listdir(meta)):
        match = re.fullmatch(r"veri_test2_(\w+)\.txt", name)
        if not match:
            continue
        with open(os.path.join(meta, name), encoding="utf-8") as fin:
            pairs = {tuple(line.split()[1:3]) for line in fin if line.strip()}
        subsets[match.group(1)] = pairs
    return subsets


def subset_metrics(scores_file, subsets):
    """EER and minDCF of a run's scores on each trial subset.

    Arguments
    ---------
    scores_file : str
        ``enrol test score label`` per line (the recipe's ``scores_file``).
    subsets : dict
        From :func:`trial_subsets`.

    Returns
    -------
    dict
        ``EER_subset=<name>``, ``minDCF_subset=<name>`` and
        ``n_subset=<name>`` (trials found in the scores file).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> _ = open(path, "w").write("a x 0.9 1\\na y 0.1 0\\nb y 0.2 1\\nb x 0.8 0\\n")
    >>> m = subset_metrics(path, {"s": {("a", "x"), ("a", "y")}, "t": {("b", "y"), ("b", "x")}})
    >>> m["EER_subset=s"], m["EER_subset=t"], m["n_subset=t"]
    (0.0, 1.0, 2)
    """
    from sb_angcl.evaluation.metrics import compute_eer, compute_min_dcf

    with open(scores_file, encoding="utf-8") as fin:
        rows = [line.split() for line in fin if line.strip()]
    out = {}
    for name, pairs in subsets.items():
        picked = [(float(r[2]), int(r[3])) for r in rows if (r[0], r[1]) in pairs]
        out[f"n_subset={name}"] = len(picked)
        labels = [lab for _, lab in picked]
        if 0 < sum(labels) < len(labels):
            scores = [sc for sc, _ in picked]
            out[f"EER_subset={name}"] = float(compute_eer(scores, labels)[0])
            out[f"minDCF_subset={name}"] = float(compute_min_dcf(scores, labels)[0])
        else:
            out[f"EER_subset={name}"] = out[f"minDCF_subset={name}"] = math.nan
    return out


def load_recipe_module(hparams_file):
    """The ``train.py`` module of the recipe that owns ``hparams_file``.

    The recipe folder is the YAML's ``..``; its ``train.py`` is imported with
    the folder on ``sys.path`` (recipes are not packages). Used by the other
    benchmarks too (``step_profile.py``, ``gpu_probe.py``).

    Arguments
    ---------
    hparams_file : str
        ``<recipe>/hparams/<name>.yaml``.

    Returns
    -------
    module
        With the recipe's ``train(argv)`` and ``prepare(hparams)``.

    Example
    -------
    >>> module = load_recipe_module(DEFAULT_HPARAMS)
    >>> callable(module.train), callable(module.prepare)
    (True, True)
    """
    recipe_dir = os.path.dirname(os.path.dirname(os.path.abspath(hparams_file)))
    script = os.path.join(recipe_dir, "train.py")
    if not os.path.isfile(script):
        raise FileNotFoundError(
            f"{script} not found: --hparams must be a recipe YAML in <recipe>/hparams/ "
            "next to the recipe's train.py"
        )
    if recipe_dir not in sys.path:
        sys.path.insert(0, recipe_dir)
    name = "_sb_angcl_recipe_train_" + re.sub(r"\W", "_", os.path.basename(os.path.dirname(recipe_dir)))
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_train(hparams_file):
    """The ``train(argv)`` of the recipe that owns ``hparams_file``.

    Arguments
    ---------
    hparams_file : str
        ``<recipe>/hparams/<name>.yaml``.

    Returns
    -------
    callable

    Example
    -------
    >>> callable(load_train(DEFAULT_HPARAMS))
    True
    """
    return load_recipe_module(hparams_file).train


def recipe_layout(hparams_file):
    """``"cnceleb"`` for a CN-Celeb recipe YAML, else ``"voxceleb"``.

    Arguments
    ---------
    hparams_file : str
        YAML path.

    Returns
    -------
    str

    Example
    -------
    >>> recipe_layout("recipes/CNCeleb/SpeakerRec/hparams/x.yaml")
    'cnceleb'
    """
    return "cnceleb" if "cnceleb" in os.path.abspath(hparams_file).lower() else "voxceleb"


def synthetic_corpus(work_dir, layout, args):
    """Generate (or reuse) the built-in corpus; return its ``data_folder``.

    Arguments
    ---------
    work_dir : str
        Work folder; the corpus goes to ``<work_dir>/corpus``.
    layout : str
        ``voxceleb`` or ``cnceleb``.
    args : argparse.Namespace
        ``speakers``, ``utterances``, ``sessions``, ``languages``,
        ``duration_min``, ``duration_max``, ``corpus_seed``.

    Returns
    -------
    data_folder : str
        What the recipe's ``--data_folder`` expects.
    summary : dict
        The generator's summary.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # synthetic_corpus/
    from synthetic_corpus import generate_corpus

    root = os.path.join(work_dir, "corpus")
    kwargs = dict(
        layout=layout, num_speakers=args.speakers, num_utterances=args.utterances,
        num_sessions=args.sessions, num_languages=args.languages,
        duration_min=args.duration_min, duration_max=args.duration_max,
        seed=args.corpus_seed, progress=not args.no_progress,
    )
    if args.label_noise:
        kwargs["label_noise"] = args.label_noise
    if args.confusable_pairs:
        kwargs["confusable_pairs"] = args.confusable_pairs
    if args.session_strength is not None:
        kwargs["session_strength"] = args.session_strength
    try:
        summary = generate_corpus(root, **kwargs)
    except FileExistsError:
        # A corpus made with other arguments is in the way: replace it.
        summary = generate_corpus(root, overwrite=True, **kwargs)
    folder = summary["voxceleb"]["root"] if layout == "voxceleb" else summary["root"]
    return folder, summary


@contextlib.contextmanager
def captured_output(path, enabled=True):
    """Send stdout, stderr and SpeechBrain's logging of one run to a file.

    SpeechBrain's experiment setup installs a console handler on the root
    logger for every run; the handlers are closed and removed afterwards so
    that the next run (or this script) starts clean.

    Arguments
    ---------
    path : str
        Log file.
    enabled : bool
        ``False`` leaves the output on the console.

    Yields
    ------
    None
    """
    if not enabled:
        yield
        return
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    for handler in before:
        root.removeHandler(handler)
    with open(path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            yield
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            for handler in before:
                root.addHandler(handler)
            root.setLevel(level)


def _tail(path, lines=40):
    try:
        with open(path, encoding="utf-8", errors="replace") as fin:
            return "".join(fin.readlines()[-lines:])
    except OSError:
        return ""


def run_folder_name(variant):
    """A variant's folder name: no ``=`` (SpeechBrain's command line splits
    ``--output_folder=a=b`` at it), ``,`` or ``:``.

    Example
    -------
    >>> run_folder_name("amsupcon_caa:contrastive_weight=0.1,margin=0")
    'amsupcon_caa+contrastive_weight-0.1_margin-0'
    """
    return variant.replace("=", "-").replace(",", "_").replace(":", "+")


def run_one(variant, seed, args, data_folder, train, allowed_keys):
    """Train and score one variant with one seed; return its numbers.

    Arguments
    ---------
    variant : str
        A key of :data:`VARIANTS`.
    seed : int
        The recipe's ``seed``.
    args : argparse.Namespace
        Parsed command line.
    data_folder : str
        The recipe's ``data_folder``.
    train : callable
        The recipe's ``train(argv)`` (from its ``train.py``).
    allowed_keys : set of str
        Top-level keys of the YAML (overrides of other keys are dropped).

    Returns
    -------
    dict
        ``variant, seed, EER, minDCF, EER_cross, minDCF_cross, EER_same,
        alpha, train_s, verify_s, train_cpu_s, verify_cpu_s, n_trials,
        n_cross_trials`` (wall and process CPU seconds; EER as a fraction; NaN where the corpus
        has no cross-language trials).
    """
    from sb_angcl.evaluation.verification import run_verification

    verification_yaml = verification_yaml_of(args.hparams)
    verify_keys = yaml_top_keys(verification_yaml)
    run_dir = os.path.join(args.work_dir, "runs", run_folder_name(variant), f"seed{seed}")
    result_file = os.path.join(run_dir, "result.json")
    overrides = {"data_folder": data_folder, "output_folder": run_dir, "seed": seed,
                 "number_of_epochs": args.epochs, "export_folder": None}
    overrides.update(variant_overrides(args.all_variants[variant][1], args.extra_overrides))
    missing = [k for k in args.all_variants[variant][1]
               if k not in allowed_keys and k not in verify_keys]
    if missing:
        raise KeyError(f"{args.hparams} lacks the keys {missing} that variant {variant!r} sets")
    # Pinned values the YAML already has are not passed (the same run).
    written = yaml_top_values(args.hparams)
    overrides = {k: v for k, v in overrides.items() if k not in written or written[k] != v
                 or k in ("data_folder", "output_folder", "seed", "number_of_epochs")}
    settings = run_settings(args.hparams, overrides)
    subsets = trial_subsets(data_folder)
    if not args.restart and os.path.isfile(result_file):
        # A finished run of an earlier (perhaps killed) sweep with the same
        # resolved settings is reused: a sweep continues where it stopped.
        # The report gives the commit each run ran at.
        with open(result_file, encoding="utf-8") as fin:
            done = json.load(fin)
        if done.get("settings") == settings:
            scores_file = os.path.join(run_dir, "scores.txt")
            if subsets and os.path.isfile(scores_file):
                done.update(subset_metrics(scores_file, subsets))
            return dict(done, reused=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    argv = [args.hparams, f"--device={args.device}"]
    if args.no_progress:
        argv.append("--noprogressbar")
    # Scoring keys go to the recipe's verification YAML, the rest to the training YAML.
    verify_argv = [verification_yaml] + argv[1:]
    argv += [f"--{k}={yaml_value(v)}" for k, v in overrides.items() if k in allowed_keys]
    verify_argv += [f"--{k}={yaml_value(v)}" for k, v in overrides.items() if k in verify_keys]

    log_path = os.path.join(run_dir, "ablation_run.log")
    try:
        with captured_output(log_path, enabled=not args.verbose):
            start, cpu = time.perf_counter(), time.process_time()
            brain, _ = train(argv)
            train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
            alpha = brain.epoch_train_stats()["alpha"]
            del brain
            start, cpu = time.perf_counter(), time.process_time()
            _, reports = run_verification(verify_argv)
            table = {name: report["table"] for name, report in reports.items()}
            verify_s, verify_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    except Exception:
        sys.stderr.write(f"\n{variant} seed {seed} failed; end of {log_path}:\n{_tail(log_path)}\n")
        raise
    table = list(table.values())[-1]  # enrol_protocol "both": the last

    def pick(condition, value):
        rows = table[(table["condition"] == condition) & (table["value"] == value)]
        if rows.empty:
            return math.nan, math.nan
        return float(rows["EER"].iloc[0]), float(rows["minDCF"].iloc[0])

    eer, dcf = pick("all", "all")
    eer_x, dcf_x = pick("cross_language", "cross")
    eer_s, _ = pick("cross_language", "same")
    n_trials = int(table["n_trials"].iloc[0])
    n_cross = table[(table["condition"] == "cross_language") & (table["value"] == "cross")]
    result = {
        "variant": variant, "seed": seed, "EER": eer, "minDCF": dcf,
        "EER_cross": eer_x, "minDCF_cross": dcf_x, "EER_same": eer_s,
        "alpha": alpha, "train_s": train_s, "verify_s": verify_s,
        "train_cpu_s": train_cpu_s, "verify_cpu_s": verify_cpu_s,
        "n_trials": n_trials,
        "n_cross_trials": int(n_cross["n_trials"].iloc[0]) if not n_cross.empty else 0,
    }
    # Every other condition of the metrics table (e.g. same / cross session).
    for row in table.itertuples():
        if row.condition not in ("all", "cross_language"):
            result[f"EER_{row.condition}={row.value}"] = float(row.EER)
    scores_file = os.path.join(run_dir, "scores.txt")
    if subsets and os.path.isfile(scores_file):
        result.update(subset_metrics(scores_file, subsets))
    result["commit"] = args.commit
    result["cpu"] = cpu_model()
    result["overrides"] = json.loads(json.dumps(overrides))
    result["settings"] = settings
    with open(result_file, "w", encoding="utf-8") as fout:
        json.dump(result, fout, indent=1)
    return result


def mean_std(values, scale=1.0, digits=2):
    """``"mean ± std"`` (sample std) of finite values; ``"n/a"`` if none.

    Arguments
    ---------
    values : list of float
        One number per seed.
    scale : float
        Multiplier (100 for percent).
    digits : int
        Decimals.

    Returns
    -------
    str

    Example
    -------
    >>> mean_std([0.1, 0.2, 0.3], scale=100, digits=1)
    '20.0 ± 10.0'
    >>> mean_std([0.5]), mean_std([float("nan")])
    ('0.50', 'n/a')
    """
    vals = [v * scale for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _mean(values):
    vals = [v for v in values if math.isfinite(v)]
    return statistics.mean(vals) if vals else math.nan


def results_table(results, variants, descriptions=None):
    """The Markdown table: one row per variant, mean ± std over seeds.

    Arguments
    ---------
    results : list of dict
        From :func:`run_one`.
    variants : list of str
        Row order.
    descriptions : dict, optional
        ``variant -> (description, overrides)`` (default :data:`VARIANTS`).

    Returns
    -------
    str

    Example
    -------
    >>> r = [{"variant": "aam", "seed": s, "EER": e, "minDCF": 0.5, "EER_cross": 0.2,
    ...       "minDCF_cross": 0.6, "alpha": 1.0, "train_s": 60.0, "verify_s": 6.0}
    ...      for s, e in ((1, 0.1), (2, 0.12))]
    >>> print(results_table(r, ["aam"]).splitlines()[-1])
    | aam | AAM-softmax | 2 | 11.00 ± 1.41 | 0.500 ± 0.000 | 20.00 ± 0.00 | 0.600 ± 0.000 | 1.00 ± 0.00 | 1.1 |
    """
    descriptions = descriptions or VARIANTS
    head = ("| variant | system | seeds | EER % | minDCF | EER % cross-lang | "
            "minDCF cross-lang | α (last epoch) | min/run |")
    lines = [head, "|" + "---|" * 9]
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        col = {k: [r[k] for r in rows] for k in ("EER", "minDCF", "EER_cross", "minDCF_cross", "alpha")}
        minutes = statistics.mean((r["train_s"] + r["verify_s"]) / 60.0 for r in rows)
        lines.append(
            f"| {variant} | {descriptions[variant][0]} | {len(rows)} | {mean_std(col['EER'], 100)} | "
            f"{mean_std(col['minDCF'], digits=3)} | {mean_std(col['EER_cross'], 100)} | "
            f"{mean_std(col['minDCF_cross'], digits=3)} | {mean_std(col['alpha'])} | {minutes:.1f} |"
        )
    return "\n".join(lines)


def subset_table(results, variants):
    """Mean ± std over seeds of EER and minDCF on each trial subset.

    Arguments
    ---------
    results : list of dict
        From :func:`run_one` (with ``EER_subset=<name>`` keys).
    variants : list of str
        Row order.

    Returns
    -------
    str
        A Markdown table, or ``""`` when the runs have no subsets.

    Example
    -------
    >>> r = [{"variant": "aam", "seed": s, "EER_subset=real": e, "minDCF_subset=real": 0.5,
    ...       "n_subset=real": 10} for s, e in ((1, 0.1), (2, 0.12))]
    >>> print(subset_table(r, ["aam"]).splitlines()[-1])
    | aam | 11.00 ± 1.41 / 0.500 ± 0.000 |
    """
    names = sorted({k.split("=", 1)[1] for r in results for k in r if k.startswith("EER_subset=")})
    if not names:
        return ""
    sizes = {n: next(r[f"n_subset={n}"] for r in results if f"n_subset={n}" in r) for n in names}
    lines = ["Trial subsets of the corpus (`meta/veri_test2_<name>.txt`), EER % / minDCF, "
             "mean ± std over seeds:", "",
             "| variant | " + " | ".join(f"{n} ({sizes[n]} trials)" for n in names) + " |",
             "|" + "---|" * (len(names) + 1)]
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        cells = [f"{mean_std([r.get(f'EER_subset={n}', math.nan) for r in rows], 100)} / "
                 f"{mean_std([r.get(f'minDCF_subset={n}', math.nan) for r in rows], digits=3)}"
                 for n in names]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_model():
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform``).

    Returns
    -------
    str

    Example
    -------
    >>> isinstance(cpu_model(), str)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device):
    """One line describing the machine: cores, CPU, torch, GPU.

    Arguments
    ---------
    device : str
        The torch device of the runs.

    Returns
    -------
    str

    Example
    -------
    >>> "torch" in machine_line("cpu")
    True
    """
    line = (f"nproc {os.cpu_count()}, CPU {cpu_model()}, torch {torch.__version__} "
            f"(threads per run: {torch.get_num_threads()}), python {platform.python_version()}")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return line


def read_results_csv(path):
    """The runs of an earlier report's CSV (``--csv``) as result dicts.

    Text columns stay text, counts (``n_*``) become ints, the rest floats
    (an empty cell is NaN). Each row is marked ``included`` with the path.

    Arguments
    ---------
    path : str
        A CSV written by this script.

    Returns
    -------
    list of dict

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    ...     _ = f.write("variant,seed,EER,n_trials,commit\\naam,6,0.05,3264,abc\\n")
    >>> row = read_results_csv(f.name)[0]
    >>> row["variant"], row["seed"], row["EER"], row["n_trials"], row["commit"]
    ('aam', 6, 0.05, 3264, 'abc')
    """
    import csv

    rows = []
    with open(path, encoding="utf-8", newline="") as fin:
        for row in csv.DictReader(fin):
            result = {"included": path}
            for key, text in row.items():
                if key in ("variant", "commit", "cpu"):
                    result[key] = text
                elif key == "seed" or key.startswith("n_"):
                    result[key] = int(float(text)) if text else 0
                else:
                    result[key] = float(text) if text else math.nan
            rows.append(result)
    return rows


def include_runs(results, paths, variants):
    """``results`` with the runs of earlier CSVs that this invocation did not run.

    Arguments
    ---------
    results : list of dict
        This invocation's runs.
    paths : list of str
        CSVs written by this script (``--include-csv``).
    variants : list of str
        The variants reported; rows of other variants are left out.

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        When a CSV's runs scored another number of trials than this
        invocation's (another corpus or trial list).
    """
    done = {(r["variant"], r["seed"]) for r in results}
    n_trials = {r["n_trials"] for r in results}
    merged = list(results)
    for path in paths:
        for row in read_results_csv(path):
            if row["variant"] not in variants or (row["variant"], row["seed"]) in done:
                continue
            if n_trials and row["n_trials"] not in n_trials:
                raise ValueError(
                    f"{path}: its runs scored {row['n_trials']} trials, this invocation's "
                    f"{sorted(n_trials)}: not the same trial list. Include only reports "
                    "of the same corpus (--corpus) and trials.")
            done.add((row["variant"], row["seed"]))
            merged.append(row)
    return merged


def report(results, args, corpus_line, command, wall_s):
    """The whole Markdown document.

    Arguments
    ---------
    results : list of dict
        From :func:`run_one`.
    args : argparse.Namespace
        Parsed command line.
    corpus_line : str
        Description of the corpus.
    command : str
        The command line.
    wall_s : float
        Total wall time.

    Returns
    -------
    str
    """
    first = results[0]
    reused = sum(1 for r in results if r.get("reused"))
    metrics = [("EER", "EER %", 100, 2), ("minDCF", "minDCF", 1, 3),
               ("EER_cross", "EER % cross-lang", 100, 2)]
    # Beside cross-language: the same- / cross-session conditions, where the
    # trial list has them (per-language rows stay in each run's metrics.csv).
    extra = sorted({k for r in results for k in r if k.startswith("EER_session=")})
    metrics += [(k, k[4:].replace("_", " ") + " EER %", 100, 2) for k in extra]
    # The corpus's own trial subsets (meta/veri_test2_<name>.txt), EER and minDCF.
    for name in sorted({k.split("=", 1)[1] for r in results for k in r
                        if k.startswith("EER_subset=")}):
        metrics += [(f"EER_subset={name}", f"EER % {name}", 100, 2),
                    (f"minDCF_subset={name}", f"minDCF {name}", 1, 3)]
    # Columns no run has a value for (e.g. cross-language on a corpus without
    # language labels in its manifests) are left out.
    metrics = [m for m in metrics
               if any(math.isfinite(r.get(m[0], math.nan)) for r in results)]
    commits, cpus, included = {}, {}, {}
    for r in results:
        commits.setdefault(r.get("commit", "unknown"), set()).add(r["variant"])
        cpus.setdefault(r.get("cpu") or "not recorded", set()).add(r["seed"])
        if r.get("included"):
            included.setdefault(r["included"], set()).add(r["seed"])
    cpu_line = "; ".join(f"{c}: seeds {', '.join(str(s) for s in sorted(v))}"
                         for c, v in sorted(cpus.items()))
    included_lines = [f"- Included from `{p}` (an earlier invocation, `--include-csv`): "
                      f"seeds {', '.join(str(s) for s in sorted(v))}"
                      for p, v in sorted(included.items())]
    commit_line = "; ".join(f"`{c}`: {', '.join(sorted(v))}" for c, v in sorted(commits.items()))
    corpus = [f"{args.label_noise:g} of training utterances relabelled"] if args.label_noise else []
    if args.confusable_pairs:
        corpus.append(f"{args.confusable_pairs} confusable speaker pairs")
    if args.session_strength is not None:
        corpus.append(f"session strength {args.session_strength:g}")
    return "\n".join([
        "# Ablation: AAM-softmax, SupCon, AM-SupCon, CAA, MGDA-UB",
        "",
        f"- Command: `{command}`",
        f"- Recipe: `{os.path.relpath(os.path.abspath(args.hparams), ROOT)}`, "
        f"epochs {args.epochs}, overrides `{' '.join(args.override) or '-'}`, device {args.device}",
        f"- Corpus: {corpus_line}{'; ' + ', '.join(corpus) if corpus else ''}; "
        f"{first['n_trials']} trials ({first['n_cross_trials']} cross-language)",
        f"- Machine: {machine_line(args.device)}; {len(results)} runs, {args.jobs} at a time"
        + (f" ({reused} of them reused from an earlier invocation: the wall time below is this "
           f"invocation's; the runs' own times are in the min/run column and the CSV)"
           if reused else ""),
        f"- CPU of each run: {cpu_line}",
        *included_lines,
        f"- Date: {datetime.date.today().isoformat()}; total wall time "
        f"{wall_s / 60:.1f} min" + (" (this invocation's)" if included else ""),
        f"- Code: the commit each run ran at ({'+dirty: uncommitted changes in sb_angcl/ or recipes/'}): "
        f"{commit_line}",
        "",
        "Mean ± std over seeds (sample std); EER in %, minDCF at p_target 0.01 (normalised); "
        "cross-lang: trials whose enrolment and test utterances are in different languages; "
        "α: mean weight of the AAM-softmax loss over the last epoch's batches.",
        "",
        results_table(results, args.variants, args.all_variants),
        "",
        subset_table(results, args.variants),
        "",
        f"Paired by seed with `{args.reference}` (same seed: same initialisation, data "
        "order and dev split): mean difference variant − reference with its 95 % "
        "t-interval over the seeds; a CI that excludes 0 is a difference the seeds "
        "resolve. Ratio: mean EER of the variant / mean EER of the reference.",
        "",
        paired_table(results, args.variants, args.reference, metrics),
        "",
        "Variants: " + "; ".join(
            f"`{v}` = {args.all_variants[v][0]} "
            f"(`{' '.join(f'--{k}={yaml_value(x)}' for k, x in args.all_variants[v][1].items()) or 'no overrides'}`)"
            for v in args.variants),
        "",
    ])


def parse_args(argv=None):
    """The command line, with ``--quick`` and the defaults applied.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv``).

    Returns
    -------
    argparse.Namespace

    Example
    -------
    >>> a = parse_args(["--quick"])
    >>> a.epochs, a.seeds, a.variants
    (1, [1], ['aam', 'default'])
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hparams", default=DEFAULT_HPARAMS, help="any recipe YAML")
    parser.add_argument("--data_folder", "--data-folder", "--corpus", dest="data_folder",
                        default=None,
                        help="an external corpus (the recipe's data_folder, e.g. a real-voice "
                        "corpus's vox/); its meta/veri_test2_<name>.txt trial subsets are "
                        "reported too; default: the built-in synthetic corpus")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"recipe seeds (default {DEFAULTS['seeds']})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"number_of_epochs (default {DEFAULTS['epochs']})")
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"of {list(VARIANTS)}; default {DEFAULT_VARIANTS}; the reference "
                        "(--reference) is always run")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="add a variant for every combination of these YAML values, "
                        "on top of --grid-base (e.g. --grid alpha_min=0.2,0.5 temperature=0.1,0.2)")
    parser.add_argument("--vary", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="one factor at a time: a variant for every value of every key, "
                        "the other keys as in --grid-base (e.g. --vary alpha_min=0.5,0.8 "
                        "projection_dim=96)")
    parser.add_argument("--grid-base", default="default", choices=list(VARIANTS),
                        help="the variant the grid and --vary points start from (default: default)")
    parser.add_argument("--reference", default="aam", choices=list(VARIANTS),
                        help="variant every other one is paired with by seed (default aam)")
    parser.add_argument("--label-noise", type=float, default=0.0,
                        help="built-in corpus: fraction of training utterances relabelled")
    parser.add_argument("--confusable-pairs", type=int, default=0,
                        help="built-in corpus: pairs of near-identical training voices")
    parser.add_argument("--session-strength", type=float, default=None,
                        help="built-in corpus: strength of the session nuisance "
                        "(default: the generator's)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="YAML override for every run (repeatable), e.g. channels=256")
    parser.add_argument("--speakers", type=int, default=None, help="built-in corpus: speakers")
    parser.add_argument("--utterances", type=int, default=None, help="built-in corpus: per speaker")
    parser.add_argument("--sessions", type=int, default=None, help="built-in corpus: sessions")
    parser.add_argument("--languages", type=int, default=None, help="built-in corpus: languages")
    parser.add_argument("--duration-min", type=float, default=None,
                        help="built-in corpus: shortest normal utterance (s)")
    parser.add_argument("--duration-max", type=float, default=None,
                        help="built-in corpus: longest utterance (s)")
    parser.add_argument("--corpus-seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None,
                        help="corpus and run folders (default: $TMPDIR/sb_angcl_ablation[_quick])")
    parser.add_argument("--output", default=None,
                        help=f"Markdown table (default {os.path.relpath(DEFAULT_OUTPUT, ROOT)}; "
                        "with --quick: in the work folder)")
    parser.add_argument("--include-csv", action="append", default=[], metavar="FILE.csv",
                        help="also report the runs of an earlier report's CSV (repeatable): its "
                        "(variant, seed) pairs that this invocation does not run join the "
                        "tables, e.g. more seeds run on another day or machine; it must have "
                        "scored the same trials")
    parser.add_argument("--csv", default=None,
                        help="per-run CSV (default: next to --output, <name>_runs.csv)")
    parser.add_argument("--resume", action="store_true",
                        help="(the default) reuse finished runs of an earlier, perhaps killed, "
                        "invocation with the same settings (their result.json)")
    parser.add_argument("--restart", action="store_true",
                        help="run everything again instead of reusing finished runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default 1 on CPU: see benchmarks/README.md; "
                        "0 = torch's default)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel processes (default on CPU: min(4, nproc // threads); "
                        "1 on GPU and with --quick)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny corpus and model, 1 epoch, 1 seed, aam and paper")
    parser.add_argument("--verbose", action="store_true", help="show the recipes' output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    extra = {}
    if args.quick:
        quick = dict(QUICK)
        if recipe_layout(args.hparams) == "cnceleb":
            # CN-Celeb's preparation joins short utterances: longer ones and
            # more speakers keep a dev set.
            quick.update(QUICK_CNCELEB)
        for key in ("speakers", "utterances", "epochs", "seeds", "variants", "sessions",
                    "languages", "duration_min", "duration_max"):
            if getattr(args, key) is None:
                setattr(args, key, quick[key])
        extra.update(quick["overrides"])
    for key in ("speakers", "utterances", "epochs", "seeds", "sessions", "languages",
                "duration_min", "duration_max"):
        if getattr(args, key) is None:
            setattr(args, key, DEFAULTS[key])
    cpu = not str(args.device).startswith("cuda")
    if args.threads is None:
        args.threads = 1 if cpu else 0
    if args.jobs is None:
        args.jobs = 1
        if cpu and not args.quick:
            args.jobs = max(1, min(4, (os.cpu_count() or 1) // max(args.threads, 1)))
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    args.all_variants = dict(VARIANTS)
    swept = {}
    try:
        swept.update(grid_variants(args.grid, args.grid_base))
        for spec in args.vary:
            swept.update(grid_variants([spec], args.grid_base))
    except ValueError as err:
        parser.error(str(err))
    args.all_variants.update(swept)
    chosen = list(args.variants or ([] if swept else DEFAULT_VARIANTS))
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    chosen = set(chosen) | {args.reference} | set(swept)
    if not swept and not args.variants:
        chosen |= {"default"}
    args.variants = [v for v in args.all_variants if v in chosen]
    import yaml

    for item in args.override:
        if "=" not in item:
            parser.error(f"--override {item!r}: write KEY=VALUE, e.g. --override channels=256")
        key, value = item.split("=", 1)
        extra[key.strip().lstrip("-")] = yaml.safe_load(value)
    args.extra_overrides = extra
    if args.work_dir is None:
        suffix = "_quick" if args.quick else ""
        args.work_dir = os.path.join(tempfile.gettempdir(), f"sb_angcl_ablation{suffix}")
    if args.output is None:
        args.output = (os.path.join(args.work_dir, "ablation.md") if args.quick else DEFAULT_OUTPUT)
    args.commit = code_version()
    args.hparams = os.path.abspath(args.hparams)
    if not os.path.isfile(args.hparams):
        parser.error(f"--hparams {args.hparams} not found")
    return args


def _run_line(result):
    return (
        f"{result['variant']:<13} seed {result['seed']:<4} EER {100 * result['EER']:6.2f}%  "
        f"minDCF {result['minDCF']:.3f}  cross-lang EER {100 * result['EER_cross']:6.2f}%  "
        f"alpha {result['alpha']:.2f}  train {result['train_s']:.0f} s  "
        f"verify {result['verify_s']:.0f} s"
    )


def run_parallel(jobs, args, argv, data_folder):
    """Run the jobs in ``args.jobs`` worker processes; return their results.

    Each worker is this script with ``--worker K/N`` (it runs jobs K, K+N, ...
    and writes each run's ``result.json``); the results are read back in job
    order.

    Arguments
    ---------
    jobs : list of (str, int)
        (variant, seed) pairs.
    args : argparse.Namespace
        Parsed command line.
    argv : list of str
        The command line to pass on.
    data_folder : str
        The corpus (so that workers do not generate it again).

    Returns
    -------
    list of dict
    """
    import subprocess

    from tqdm import tqdm

    procs = []
    for k in range(args.jobs):
        cmd = [sys.executable, os.path.abspath(__file__), *argv,
               f"--data_folder={data_folder}", "--no-progress", f"--worker={k}/{args.jobs}"]
        procs.append(subprocess.Popen(cmd))
    files = [os.path.join(args.work_dir, "runs", run_folder_name(v), f"seed{s}", "result.json")
             for v, s in jobs]
    with tqdm(total=len(jobs), desc="Ablation runs", disable=args.no_progress,
              file=sys.stderr) as bar:
        while any(p.poll() is None for p in procs):
            time.sleep(2.0)
            bar.update(sum(os.path.isfile(f) for f in files) - bar.n)
        bar.update(sum(os.path.isfile(f) for f in files) - bar.n)
    failed = [k for k, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(
            f"ablation workers {failed} failed (their output is above; each run's log is "
            f"ablation_run.log in {os.path.join(args.work_dir, 'runs')}/<variant>/seed<N>)"
        )
    results = []
    for path in files:
        with open(path, encoding="utf-8") as fin:
            results.append(json.load(fin))
    return results


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv``).

    Returns
    -------
    float
        Mean EER of ``paper`` over mean EER of ``aam`` (NaN in a worker).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wall = time.perf_counter()
    os.makedirs(args.work_dir, exist_ok=True)
    layout = recipe_layout(args.hparams)
    train = load_train(args.hparams)
    allowed = yaml_top_keys(args.hparams)
    verification_yaml = verification_yaml_of(args.hparams)
    unknown = sorted(set(args.extra_overrides) - allowed - yaml_top_keys(verification_yaml))
    if unknown:
        raise KeyError(f"--override keys {unknown} are top-level keys of neither "
                       f"{args.hparams} nor {verification_yaml}")
    jobs = [(v, s) for s in args.seeds for v in args.variants]

    if args.worker:
        k, n = (int(x) for x in args.worker.split("/"))
        for variant, seed in jobs[k::n]:
            result = run_one(variant, seed, args, os.path.abspath(args.data_folder), train, allowed)
            print(_run_line(result), flush=True)
        return math.nan

    if args.data_folder:
        data_folder = os.path.abspath(args.data_folder)
        corpus_line = f"`{data_folder}`"
    else:
        start = time.perf_counter()
        data_folder, _ = synthetic_corpus(args.work_dir, layout, args)
        logger.info("Corpus ready in %.0f s: %s", time.perf_counter() - start, data_folder)
        corpus_line = (
            f"built-in synthetic ({layout} layout): {args.speakers} speakers x "
            f"{args.utterances} utterances, {args.sessions} sessions, {args.languages} "
            f"languages, {args.duration_min:g}-{args.duration_max:g} s, seed {args.corpus_seed}"
        )

    if args.jobs > 1:
        results = run_parallel(jobs, args, argv, data_folder)
    else:
        from tqdm import tqdm

        results = []
        bar = tqdm(jobs, desc="Ablation runs", disable=args.no_progress, file=sys.stderr)
        for variant, seed in bar:
            bar.set_postfix_str(f"{variant} seed {seed}")
            results.append(run_one(variant, seed, args, data_folder, train, allowed))
            bar.write(_run_line(results[-1]), file=sys.stdout)
    wall_s = time.perf_counter() - wall
    results = include_runs(results, args.include_csv, args.variants)

    command = "python benchmarks/ablation.py " + " ".join(shlex.quote(a) for a in argv)
    text = report(results, args, corpus_line, command, wall_s)
    # The headline: the recipe's default system against AAM-softmax alone
    # (or, when the sweep has no default run, its first variant against the reference).
    ref = "aam" if any(r["variant"] == "aam" for r in results) else args.reference
    target = "default" if any(r["variant"] == "default" for r in results) else next(
        (v for v in args.variants if v != ref), ref)
    eer = {v: _mean([r["EER"] for r in results if r["variant"] == v]) for v in (ref, target)}
    ratio = eer[target] / eer[ref] if eer[ref] > 0 else math.nan
    text += f"\nratio {ratio:.3f}\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fout:
        fout.write(text)
    csv_path = args.csv or os.path.splitext(args.output)[0] + "_runs.csv"
    skip = ("overrides", "reused", "settings", "included")
    keys = [k for k in results[0] if k not in skip]
    keys += sorted({k for r in results for k in r if k not in keys and k not in skip})
    import csv

    with open(csv_path, "w", encoding="utf-8", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(keys)
        for r in results:
            writer.writerow([r.get(k, "") for k in keys])
    print(text.rstrip("\n").rsplit("\n", 1)[0])
    print(f"Written: {args.output} and {csv_path}")
    print(f"ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
