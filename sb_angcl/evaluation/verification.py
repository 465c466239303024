"""Speaker verification with a trained recipe: embed, score, report.

Shared by the recipes' ``verify.py``. It reloads the best checkpoint of a
training run, embeds the enrolment and test manifests written by data
preparation (``enrol.csv``, ``test.csv``; for CN-Celeb's averaged-enrolment
protocol, ``enrol_average.csv`` whose ``model`` column groups utterances),
scores ``trials.csv`` with cosine (optionally AS-norm against a
speaker-averaged cohort of training embeddings), and writes:

* the scores file (``enrol test score label`` per line);
* unless ``calibration: none``, ``scores_calibrated.txt`` beside it: the same
  trials scored as log-likelihood ratios, each by a calibration fitted on
  trials of other speakers (by default across speaker folds of the test
  trials, :func:`cross_fit_test_calibration`; or on a given list,
  :func:`fit_score_calibration`), and the parameters in ``calibration.json``;
* ``metrics.csv``: EER and minDCF (p_target 0.01, normalised), Cllr, min Cllr
  and actual DCF (of the calibrated scores; of the raw scores taken as LLRs
  with ``calibration: none``) overall and per condition found in
  ``trials.csv`` (genre, language, cross-language, enrolment genre x test
  genre);
* ``det.png`` and ``scores_hist.png`` when matplotlib is installed;
* the overall results into the results section of the model card
  (``README.md``) of the exported folder, when training exported one, and the
  calibration (of cosine scores) into that folder (:func:`sb_angcl.export.record_calibration`).

Authors
 * sb-angcl contributors
"""

import json
import logging
import os
import sys

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
from tqdm import tqdm

from sb_angcl.data.dataio import load_manifest, make_eval_pipeline
from sb_angcl.evaluation.calibration import (
    METHODS,
    bayes_threshold,
    cllr,
    cross_fitted_llrs,
    fit_calibration,
    sample_trials,
)
from sb_angcl.evaluation.metrics import compute_eer, metrics_table
from sb_angcl.evaluation.plots import plot_det, plot_score_histogram
from sb_angcl.evaluation.scoring import EmbeddingTable, score_trials, speaker_cohort, write_scores
from sb_angcl.export import MODEL_CARD, record_calibration, record_model_card_results
from sb_angcl.hyperparams import load_trained_hparams, overrides_to_dict

logger = logging.getLogger(__name__)

#: p_target of minDCF and actDCF, and of the exported model's Bayes decision.
DECISION_PRIOR = 0.01


@torch.no_grad()
def embed_manifest(csv_path, modules, device="cpu", batch_size=16, sample_rate=16000,
                   max_seconds=None, data_root=None, desc=None, limit_ids=None):
    """Embed every row of a manifest.

    Arguments
    ---------
    csv_path : str
        Manifest with ``ID,duration,wav,start,stop``.
    modules : Mapping
        ``compute_features``, ``mean_var_norm``, ``embedding_model``.
    device : str
        Torch device.
    batch_size : int
        Utterances per batch (sorted by duration to limit padding).
    sample_rate : int
        Model sample rate.
    max_seconds : float or None
        Crop longer utterances to their centre.
    data_root : str or None
        ``$data_root`` replacement.
    desc : str or None
        Progress-bar label.
    limit_ids : set or None
        Only embed these IDs.

    Returns
    -------
    EmbeddingTable
    """
    data = load_manifest(csv_path, data_root)
    key_test = {}
    if limit_ids is not None:
        key_test = {"id": lambda x: x in limit_ids}
    data = data.filtered_sorted(sort_key="duration", key_test=key_test)
    sb.dataio.dataset.add_dynamic_item([data], make_eval_pipeline(sample_rate, max_seconds))
    sb.dataio.dataset.set_output_keys([data], ["id", "sig"])
    loader = sb.dataio.dataloader.make_dataloader(data, batch_size=batch_size)
    ids, vectors = [], []
    for name in ("compute_features", "mean_var_norm", "embedding_model"):
        modules[name].eval()
    for batch in tqdm(loader, desc=desc or f"Embedding {os.path.basename(csv_path)}"):
        batch = batch.to(device)
        wavs, lens = batch.sig
        feats = modules["compute_features"](wavs)
        feats = modules["mean_var_norm"](feats, lens)
        emb = modules["embedding_model"](feats, lens)
        vectors.append(emb.reshape(emb.shape[0], -1).float().cpu().numpy())
        ids.extend(batch.id)
    if not ids:
        raise ValueError(f"{csv_path} has no rows to embed")
    return EmbeddingTable(ids, np.concatenate(vectors))


def trial_conditions(trials):
    """Condition columns of a trial table, plus derived ones.

    ``enrol_language``/``test_language`` give ``cross_language``
    (same/cross); ``enrol_genre``/``test_genre`` give ``genre_pair``;
    ``session`` (same/cross) says whether enrolment and test share a session:
    from ``enrol_session``/``test_session`` columns, else the video folder of
    VoxCeleb paths (``spk/video/file``), else the CN-Celeb genres.

    Arguments
    ---------
    trials : pandas.DataFrame
        ``trials.csv`` contents.

    Returns
    -------
    dict
        Condition name to one value per trial.

    Example
    -------
    >>> t = pd.DataFrame({"enrol": ["a"], "test": ["b"], "label": [1],
    ...                   "enrol_language": ["en"], "test_language": ["zh"]})
    >>> trial_conditions(t)["cross_language"].tolist()
    ['cross']
    >>> trial_conditions(pd.DataFrame({"enrol": ["s/v1/1.wav", "s/v1/1.wav"],
    ...     "test": ["s/v1/2.wav", "s/v2/1.wav"], "label": [1, 1]}))["session"].tolist()
    ['same', 'cross']
    """
    conditions = {}
    for column in trials.columns:
        if column in ("enrol", "test", "label"):
            continue
        values = trials[column].fillna("").astype(str)
        if (values != "").any():
            conditions[column] = values
    if "enrol_language" in conditions and "test_language" in conditions:
        same = conditions["enrol_language"] == conditions["test_language"]
        conditions["cross_language"] = np.where(same, "same", "cross")
    if "enrol_genre" in conditions and "test_genre" in conditions:
        conditions["genre_pair"] = conditions["enrol_genre"] + "->" + conditions["test_genre"]
    same_session = _same_session(trials, conditions)
    if same_session is not None:
        conditions["session"] = np.where(same_session, "same", "cross")
    return {k: np.asarray(v) for k, v in conditions.items()}


def _same_session(trials, conditions):
    """Whether enrolment and test share a session, where the trial list tells.

    Order of evidence: ``enrol_session``/``test_session`` columns; VoxCeleb
    paths ``spk/video/file`` on both sides (same video); CN-Celeb genres (an
    enrolment of several genres, ``a+b``, matches any of them). None if none
    applies to every trial.
    """
    if "enrol_session" in conditions and "test_session" in conditions:
        return (conditions["enrol_session"] == conditions["test_session"]).to_numpy()
    enrol = trials["enrol"].astype(str).str.split("/")
    test = trials["test"].astype(str).str.split("/")
    if len(trials) and (enrol.str.len() >= 3).all() and (test.str.len() >= 3).all():
        return (enrol.str[-2] == test.str[-2]).to_numpy()
    if "enrol_genre" in conditions and "test_genre" in conditions:
        pairs = zip(conditions["enrol_genre"], conditions["test_genre"])
        return np.array([t in e.split("+") for e, t in pairs])
    return None


def load_trained_modules(hparams_file, overrides, run_opts):
    """Load a recipe's YAML and recover its best checkpoint.

    Arguments
    ---------
    hparams_file : str
        The training YAML.
    overrides : dict
        Same overrides as training.
    run_opts : dict
        SpeechBrain run options (``device``).

    Returns
    -------
    hparams : dict
    device : str
    """
    hparams = load_trained_hparams(hparams_file, overrides)
    device = run_opts.get("device", "cpu") if run_opts else "cpu"
    checkpointer = hparams["checkpointer"]
    ckpt = checkpointer.recover_if_possible(min_key="ErrorRate")
    if ckpt is None:
        raise FileNotFoundError(
            f"No checkpoint in {hparams['save_folder']}: train first with "
            f"train.py {hparams_file} (same overrides)."
        )
    logger.info("Loaded checkpoint %s", ckpt.path)
    for name in ("compute_features", "mean_var_norm", "embedding_model"):
        hparams[name].to(device).eval()
    return hparams, device


def run_verification(argv, enrol_protocol=None):
    """Embed, score and report for a trained recipe.

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value, ...]`` as for ``train.py``.
    enrol_protocol : str or None
        ``"concat"`` (``enrol.csv``), ``"average"`` (``enrol_average.csv``)
        or ``"both"``; ``None`` takes the YAML's ``enrol_protocol`` or ``"concat"``.

    Returns
    -------
    pandas.DataFrame or dict
        The metrics table (also written to ``metrics.csv``); a dict of them by
        protocol for ``both``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = overrides_to_dict(overrides)
    hparams, device = load_trained_modules(hparams_file, overrides, run_opts)
    return score_trained(hparams, hparams_file, device, enrol_protocol)


def score_trained(hparams, hparams_file, device="cpu", enrol_protocol=None):
    """Embed, score and report with modules already trained and loaded.

    The part of :func:`run_verification` after the checkpoint is loaded; a
    recipe's ``train.py`` calls it at the end of training
    (``verify_after_training``) with the settings it reads from its YAML.

    Arguments
    ---------
    hparams : Mapping
        The modules ``compute_features``, ``mean_var_norm`` and
        ``embedding_model`` (trained, in eval mode, on ``device``) and the
        settings of the YAML's evaluation section, with ``data_folder``,
        ``sample_rate``, ``seed``, the manifests (``train_annotation``,
        ``valid_annotation``, ``enrol_annotation``, ``test_annotation``,
        ``trials_annotation``) and ``export_folder``.
    hparams_file : str
        The YAML (named in errors and in the calibration record).
    device : str
        Torch device of the modules.
    enrol_protocol : str or None
        As for :func:`run_verification`.

    Returns
    -------
    pandas.DataFrame or dict
        As :func:`run_verification`.
    """
    protocol = enrol_protocol or hparams.get("enrol_protocol", "concat")
    opts = {
        "device": device,
        "batch_size": hparams["eval_batch_size"],
        "sample_rate": hparams["sample_rate"],
        "max_seconds": hparams["eval_max_seconds"],
        "data_root": hparams["data_folder"],
    }
    trials_path = hparams["trials_annotation"]
    if not os.path.isfile(trials_path):
        raise FileNotFoundError(f"{trials_path} not found: run training (data preparation) first.")
    trials = pd.read_csv(trials_path, dtype={"enrol": str, "test": str})
    method = _required(hparams, "calibration", hparams_file)
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {list(METHODS)}, got {method!r} ({hparams_file})")
    test = embed_manifest(hparams["test_annotation"], hparams, desc="Embedding test", **opts)
    cohort = None
    if hparams["score_norm"] in ("as-norm", "asnorm", "as_norm"):
        cohort = training_cohort(hparams, opts)
    calibration = None
    if method != "none":
        calibration = {"method": method, "hparams_file": hparams_file,
                       "prior": _required(hparams, "calibration_prior", hparams_file), "fixed": None}
        if _required(hparams, "calibration_trials", hparams_file) is not None:
            calibration["fixed"] = fit_score_calibration(hparams, hparams_file, trials, test,
                                                         cohort, opts)
        elif int(_required(hparams, "calibration_folds", hparams_file)) < 3:
            raise ValueError(f"calibration_folds must be at least 3 (a trial between two folds "
                             f"is calibrated on the others); {hparams_file} gives "
                             f"{hparams['calibration_folds']}")
    protocols = ["concat", "average"] if protocol == "both" else [protocol]
    tables = {}
    for name in protocols:
        enrol = enrolment_table(name, hparams, test, opts)
        tables[name] = score_and_report(trials, enrol, test, cohort, hparams, name, calibration)
    return tables[protocols[-1]] if len(protocols) == 1 else tables


def enrolment_table(protocol, hparams, test, opts):
    """Embeddings of the enrolment models under one protocol.

    Arguments
    ---------
    protocol : str
        ``concat``: one embedding per row of ``enrol.csv`` (CN-Celeb's official
        concatenated enrolment files, or VoxCeleb's enrolment utterances);
        ``average``: the normalised mean of the embeddings of the utterances
        listed per ``model`` in ``enrol_average.csv``.
    hparams : dict
        Recipe hyperparameters.
    test : EmbeddingTable
        Test embeddings (reused when enrolment and test manifests coincide).
    opts : dict
        Embedding options.

    Returns
    -------
    EmbeddingTable
    """
    if protocol == "average":
        avg_csv = hparams.get("enrol_average_annotation")
        if not avg_csv or not os.path.isfile(avg_csv):
            raise FileNotFoundError(
                f"enrol_protocol=average needs enrol_average_annotation ({avg_csv}); "
                "only the CN-Celeb recipe writes it."
            )
        utts = embed_manifest(avg_csv, hparams, desc="Embedding enrolment utterances", **opts)
        groups = pd.read_csv(avg_csv, dtype=str).groupby("model")["ID"].apply(list).to_dict()
        return utts.average(groups, normalize=True)
    if protocol == "concat":
        if os.path.abspath(hparams["enrol_annotation"]) == os.path.abspath(hparams["test_annotation"]):
            return test
        return embed_manifest(hparams["enrol_annotation"], hparams, desc="Embedding enrolment", **opts)
    raise ValueError(f"enrol_protocol must be concat, average or both; got {protocol!r}")


def score_and_report(trials, enrol, test, cohort, hparams, protocol, calibration=None):
    """Score all trials, write the scores, metrics table and plots.

    Arguments
    ---------
    trials : pandas.DataFrame
        ``trials.csv`` contents.
    enrol : EmbeddingTable
        Enrolment models.
    test : EmbeddingTable
        Test utterances.
    cohort : EmbeddingTable or None
        AS-norm cohort.
    hparams : dict
        Recipe hyperparameters (``scores_file``, ``top_k``).
    protocol : str
        Enrolment protocol name (suffix of the outputs unless ``concat``).
    calibration : dict or None
        ``method``, ``prior``, ``hparams_file`` and ``fixed`` (a fit of
        :func:`fit_score_calibration`, or None: calibrate across speaker folds
        of these trials, :func:`cross_fit_test_calibration`): the scores are
        also written as LLRs (``scores_calibrated.txt``, parameters in
        ``calibration.json``) and the Cllr / actDCF are theirs. None: those of
        the raw scores taken as LLRs.

    Returns
    -------
    pandas.DataFrame
        The metrics table.
    """
    scores = score_trials(
        enrol, test, trials["enrol"].tolist(), trials["test"].tolist(),
        cohort=cohort, top_k=hparams["top_k"],
    )
    labels = trials["label"].to_numpy().astype(int)
    out_dir = os.path.dirname(hparams["scores_file"]) or "."
    suffix = "" if protocol == "concat" else f"_{protocol}"
    scores_file = hparams["scores_file"].replace(".txt", f"{suffix}.txt")
    write_scores(scores_file, trials["enrol"], trials["test"], scores, labels)
    llrs, fitted = scores, None
    if calibration is not None:
        seconds = ()
        if calibration["method"] == "qmf":
            seconds = (
                _lookup(enrolment_seconds(protocol, hparams), trials["enrol"], "enrolment"),
                _lookup(_manifest_seconds(hparams["test_annotation"], hparams), trials["test"], "test"),
            )
        if calibration["fixed"] is not None:
            fitted = calibration["fixed"]
            llrs = fitted["calibration"].llr(scores, *seconds)
        else:
            try:
                llrs, fitted = cross_fit_test_calibration(
                    trials, scores, protocol, hparams, calibration, seconds,
                    "AS-norm" if cohort is not None else "cosine")
            except ValueError as err:  # the trial list's shape, not a setting: score anyway
                logger.warning("No calibration: %s", err)
                calibration = None
    base, ext = os.path.splitext(hparams["scores_file"])
    calibrated_file = f"{base}_calibrated{suffix}{ext}"
    fitted_file = os.path.join(out_dir, f"calibration{suffix}.json")
    if calibration is not None:
        write_scores(calibrated_file, trials["enrol"], trials["test"], llrs, labels)
        with open(fitted_file, "w", encoding="utf-8") as fout:
            json.dump(dict(fitted["calibration"].to_dict(), **fitted["summary"]), fout, indent=2)
    else:  # no stale calibrated scores beside these scores
        for path in (calibrated_file, fitted_file):
            if os.path.exists(path):
                os.remove(path)
    table = metrics_table(scores, labels, trial_conditions(trials), p_target=DECISION_PRIOR,
                          llrs=llrs)
    table.to_csv(os.path.join(out_dir, f"metrics{suffix}.csv"), index=False)
    shown = table.copy()
    shown["EER"] = (shown["EER"] * 100).round(2)
    for column in ("minDCF", "Cllr", "minCllr", "actDCF"):
        shown[column] = shown[column].round(4)
    scoring = "AS-norm" if cohort is not None else "cosine"
    what = f"{calibration['method']} calibration" if calibration else "no calibration"
    print(f"\nVerification ({protocol} enrolment, {len(trials)} trials, {scoring}, {what}); "
          "EER in %; Cllr and actDCF of the "
          f"{'calibrated' if calibration else 'raw'} scores:")
    print(shown.to_string(index=False))
    overall = table.iloc[0]
    print(f"EER {overall['EER'] * 100:.2f}%  minDCF(0.01) {overall['minDCF']:.4f}  "
          f"actDCF(0.01) {overall['actDCF']:.4f}  Cllr {overall['Cllr']:.4f}  "
          f"minCllr {overall['minCllr']:.4f}  [{protocol}] scores: {scores_file}")
    record_in_model_card(hparams, protocol, scoring, overall, compute_eer(scores, labels)[1],
                         calibration["method"] if calibration else "none")
    if fitted is not None and protocol == "concat":
        export_calibration(hparams, fitted, scoring)
    try:
        plot_det(scores, labels, os.path.join(out_dir, f"det{suffix}.png"))
        plot_score_histogram(scores, labels, os.path.join(out_dir, f"scores_hist{suffix}.png"))
    except ImportError as err:
        logger.warning("%s", err)
    return table


def record_in_model_card(hparams, protocol, scoring, overall, threshold, calibration="none"):
    """Writes one result row into the card of the exported folder, if there is one.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters (``export_folder``, ``verification_file`` or
        ``trials_annotation``, ``data_folder``).
    protocol : str
        Enrolment protocol.
    scoring : str
        ``cosine`` or ``AS-norm``.
    overall : pandas.Series
        The ``all`` row of :func:`~sb_angcl.evaluation.metrics.metrics_table`.
    threshold : float
        EER threshold (accept when score > threshold).
    calibration : str
        The calibration method the Cllr and actDCF are of.

    Returns
    -------
    str or None
        The card's path, or None when there is no exported card.
    """
    folder = _export_folder(hparams)
    if folder is None:
        return None
    trials = hparams.get("verification_file") or hparams["trials_annotation"]
    data = hparams["data_folder"]
    if data and os.path.abspath(trials).startswith(os.path.abspath(data) + os.sep):
        trials = os.path.relpath(trials, data)
    row = {
        "trials": trials,
        "enrolment": protocol,
        "scoring": scoring,
        "trials (targets)": f"{int(overall['n_trials'])} ({int(overall['n_target'])})",
        "EER (%)": f"{100 * overall['EER']:.2f}",
        "minDCF (p=0.01)": f"{overall['minDCF']:.4f}",
        "EER threshold": f"{threshold:.4f}",
        "calibration": calibration,
        "Cllr": f"{overall['Cllr']:.4f}",
        "minCllr": f"{overall['minCllr']:.4f}",
        "actDCF (p=0.01)": f"{overall['actDCF']:.4f}",
    }
    path = record_model_card_results(folder, row)
    logger.info("Recorded the results in %s", path)
    return path


def _export_folder(hparams):
    """The exported inference folder with a model card, or None (with a warning for an old one)."""
    folder = hparams["export_folder"]
    if not folder or not os.path.isdir(folder):
        return None
    if not os.path.isfile(os.path.join(folder, MODEL_CARD)):
        logger.warning("%s has no %s (exported by an older version); results not recorded",
                       folder, MODEL_CARD)
        return None
    return folder


def export_calibration(hparams, calibration, scoring):
    """Puts a fitted calibration of cosine scores into the exported folder.

    The exported model scores by cosine (it carries no AS-norm cohort), so a
    calibration fitted on AS-norm scores would be wrong for it: then only a
    warning is logged.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters (``export_folder``, ``sample_rate``,
        ``eval_max_seconds``).
    calibration : dict
        ``calibration`` (the map to export), ``p_target``, ``summary``
        (:func:`fit_score_calibration`, :func:`cross_fit_test_calibration`).
    scoring : str
        ``cosine`` or ``AS-norm``.

    Returns
    -------
    str or None
        The folder, or None when nothing was written.
    """
    folder = _export_folder(hparams)
    if folder is None:
        return None
    if scoring != "cosine":
        logger.warning(
            "The calibration was fitted on %s scores; the exported model in %s scores by "
            "cosine, so its calibration is left as it was. Run verify.py with "
            "--score_norm=null to calibrate the exported model.", scoring, folder)
        return None
    values = dict(calibration["calibration"].to_dict())
    values.update({
        "p_target": calibration["p_target"], "c_miss": 1.0, "c_fa": 1.0,
        "sample_rate": hparams["sample_rate"], "max_seconds": hparams["eval_max_seconds"],
    })
    record_calibration(folder, values, calibration["summary"])
    logger.info("Recorded the calibration in %s", folder)
    return folder


# ----------------------------------------------------------------- calibration
def _required(hparams, key, hparams_file):
    """A key every scoring recipe YAML carries (no default in code)."""
    if key not in hparams:
        raise KeyError(
            f"{hparams_file} has no {key!r}: verify.py needs the calibration keys "
            "(calibration, calibration_trials, calibration_prior, calibration_folds, "
            "calibration_max_trials) "
            "that the recipes' YAMLs carry in their evaluation section; copy them from there."
        )
    return hparams[key]


def read_trial_list(path):
    """A trial list: ``label enrol test`` per line (``veri_test2.txt``), or a CSV with
    ``enrol,test,label`` columns (a ``trials.csv``).

    Arguments
    ---------
    path : str
        The list.

    Returns
    -------
    pandas.DataFrame
        ``enrol``, ``test`` (str) and ``label`` (0/1), in file order.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "cal.txt")
    >>> _ = open(path, "w").write("1 a/x/1.wav a/y/2.wav\\n0 a/x/1.wav b/z/1.wav\\n")
    >>> read_trial_list(path).values.tolist()
    [['a/x/1.wav', 'a/y/2.wav', 1], ['a/x/1.wav', 'b/z/1.wav', 0]]
    """
    fix = ("one trial per line, 'label enrol test' (label 1 = same speaker, 0 = not; "
           "utterances by their manifest ID), or a CSV with columns enrol,test,label")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration_trials: {path} not found; give a trial list: {fix}.")
    with open(path, encoding="utf-8") as fin:
        first = next((line for line in fin if line.strip()), "")
    if {"enrol", "test", "label"} & {c.strip() for c in first.split(",")}:
        table = pd.read_csv(path, dtype={"enrol": str, "test": str})
        missing = {"enrol", "test", "label"} - set(table.columns)
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}; expected {fix}.")
        table = table[["enrol", "test", "label"]]
    else:
        rows = []
        with open(path, encoding="utf-8") as fin:
            for number, line in enumerate(fin, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 3 or fields[0] not in ("0", "1"):
                    raise ValueError(f"{path}:{number}: {line.strip()!r} is not a trial; expected {fix}.")
                rows.append((fields[1], fields[2], int(fields[0])))
        table = pd.DataFrame(rows, columns=["enrol", "test", "label"])
    if not table["label"].isin((0, 1)).all():
        raise ValueError(f"{path}: labels must be 0 or 1; expected {fix}.")
    table["label"] = table["label"].astype(int)
    return table.reset_index(drop=True)


def split_trials(manifest, max_trials, seed, source="the manifest"):
    """Calibration trials among the utterances of a manifest with speaker labels.

    Every same-speaker pair is a target trial (a random ``max_trials // 2`` of
    them when there are more); non-target pairs of utterances of different
    speakers, drawn at random (all of them when they fit), fill up to
    ``max_trials``. The class balance does not matter to the prior-weighted fit.

    Arguments
    ---------
    manifest : pandas.DataFrame
        ``ID`` and ``spk_id`` columns (e.g. ``dev.csv``).
    max_trials : int
        Most trials to build.
    seed : int
        Seed of the draws.
    source : str
        Name of the manifest for the error messages.

    Returns
    -------
    pandas.DataFrame
        ``enrol``, ``test``, ``label``.

    Example
    -------
    >>> m = pd.DataFrame({"ID": ["a1", "a2", "b1", "b2"], "spk_id": ["a", "a", "b", "b"]})
    >>> t = split_trials(m, 100, seed=0)
    >>> int(t["label"].sum()), int((t["label"] == 0).sum())
    (2, 4)
    """
    ids = manifest["ID"].astype(str).to_numpy()
    speakers = manifest["spk_id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    order = np.argsort(speakers, kind="stable")
    ids, speakers = ids[order], speakers[order]
    starts = np.flatnonzero(np.r_[True, speakers[1:] != speakers[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    pairs = [(i, j) for s, n in zip(starts, sizes) for i in range(s, s + n) for j in range(i + 1, s + n)]
    if not pairs:
        raise ValueError(
            f"No target calibration trial can be built from {source}: no speaker has two "
            "utterances there. Give the validation split a larger share in split_ratio (and prepare "
            "and train again), give a "
            "trial list as calibration_trials, or set calibration: none."
        )
    n_tar = min(len(pairs), max_trials // 2)
    targets = np.asarray(pairs)[rng.choice(len(pairs), n_tar, replace=False)] if n_tar < len(pairs) \
        else np.asarray(pairs)
    n = len(ids)
    n_non_all = n * (n - 1) // 2 - len(pairs)
    n_non = min(n_non_all, max_trials - len(targets))
    if n_non <= 0:
        raise ValueError(
            f"No non-target calibration trial can be built from {source}: it holds one "
            "speaker. Give a trial list as calibration_trials, or set calibration: none."
        )
    if n_non_all <= 4 * n_non:  # few enough to list: draw without replacement
        i, j = np.triu_indices(n, 1)
        keep = speakers[i] != speakers[j]
        everything = np.stack([i[keep], j[keep]], axis=1)
        pick = np.sort(rng.choice(len(everything), n_non, replace=False))
        nontargets = everything if n_non == n_non_all else everything[pick]
    else:  # draws are rarely repeated: reject same-speaker and repeated pairs
        chosen = set()
        while len(chosen) < n_non:
            i = rng.integers(0, n, 2 * (n_non - len(chosen)))
            j = rng.integers(0, n, len(i))
            for a, b in zip(i.tolist(), j.tolist()):
                if speakers[a] != speakers[b]:
                    chosen.add((min(a, b), max(a, b)))
                    if len(chosen) == n_non:
                        break
        nontargets = np.array(sorted(chosen))
    both = np.concatenate([targets, nontargets])
    labels = np.r_[np.ones(len(targets), int), np.zeros(len(nontargets), int)]
    return pd.DataFrame({"enrol": ids[both[:, 0]], "test": ids[both[:, 1]], "label": labels})


def _read_manifest(csv_path):
    return pd.read_csv(csv_path, dtype={"ID": str, "spk_id": str})


def _manifest_seconds(csv_path, hparams):
    """Seconds of audio the embedding of each row sees (``duration`` capped at ``eval_max_seconds``)."""
    table = pd.read_csv(csv_path, dtype={"ID": str}, usecols=["ID", "duration"])
    seconds = table["duration"].astype(float)
    if hparams["eval_max_seconds"]:
        seconds = seconds.clip(upper=hparams["eval_max_seconds"])
    return pd.Series(seconds.to_numpy(), index=table["ID"])


def enrolment_seconds(protocol, hparams):
    """Seconds of audio of each enrolment model (``qmf`` calibration).

    ``concat``: the rows of ``enrol.csv``; ``average``: the sum over the
    utterances of each model of ``enrol_average.csv``.

    Arguments
    ---------
    protocol : str
        ``concat`` or ``average``.
    hparams : dict
        Recipe hyperparameters.

    Returns
    -------
    pandas.Series
        Seconds by model id.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "enrol_average.csv")
    >>> _ = open(path, "w").write("ID,duration,model\\nu1,20.0,m1\\nu2,45.0,m1\\nu3,9.0,m2\\n")
    >>> enrolment_seconds("average", {"enrol_average_annotation": path,
    ...                               "eval_max_seconds": 30.0}).to_dict()
    {'m1': 50.0, 'm2': 9.0}
    """
    if protocol == "average":
        path = hparams["enrol_average_annotation"]
        seconds = _manifest_seconds(path, hparams)
        models = pd.read_csv(path, dtype=str)["model"].to_numpy()
        return pd.Series(seconds.to_numpy()).groupby(models).sum()
    return _manifest_seconds(hparams["enrol_annotation"], hparams)


def _lookup(series, ids, side):
    idx = series.index.get_indexer(list(ids))
    if (idx < 0).any():
        raise KeyError(f"no duration for {int((idx < 0).sum())} {side} ids, e.g. "
                       f"{list(pd.unique(np.asarray(ids)[idx < 0])[:3])}")
    return series.to_numpy()[idx]


def fit_score_calibration(hparams, hparams_file, test_trials, test, cohort, opts):
    """Fit the YAML's score calibration on a given trial list (``calibration_trials``).

    ``calibration_trials`` is a path to a list (:func:`read_trial_list`) that
    may name any utterance of the run's manifests (``test``, ``enrol``,
    ``dev``, ``train``) by its ID (at most ``calibration_max_trials`` of its
    trials are used, a seeded sample), or ``dev``: the trials :func:`split_trials`
    builds from the validation manifest ``dev.csv`` (at most
    ``calibration_max_trials``, seeded by ``seed``). Data preparation fills
    ``dev.csv`` with held-out *utterances* of the *training* speakers (the test
    speakers are kept out of training): speakers disjoint from the test
    trials', but ones the encoder has learnt, so their trials are far easier
    than new speakers' (on the real-voice corpus the trained encoder separates
    them perfectly and the fit has no finite solution; README, "Calibrated
    scores"). Speakers shared with the test trials are reported (the reported
    Cllr and actDCF would then be optimistic). The calibration trials are
    scored as the test trials are (cosine, or AS-norm with the same cohort),
    and the map (``calibration``: ``linear`` or ``qmf``) is fitted at the
    effective prior ``calibration_prior``.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters.
    hparams_file : str
        The YAML (for messages).
    test_trials : pandas.DataFrame
        The test trials (for the speaker-overlap check).
    test : EmbeddingTable
        Test embeddings (reused for calibration utterances among them).
    cohort : EmbeddingTable or None
        AS-norm cohort.
    opts : dict
        Embedding options.

    Returns
    -------
    dict
        ``calibration`` (:class:`~sb_angcl.evaluation.calibration.Calibration`),
        ``p_target`` (of the decision), ``summary`` (what it was fitted on).
    """
    method = hparams["calibration"]
    prior = _required(hparams, "calibration_prior", hparams_file)
    given = _required(hparams, "calibration_trials", hparams_file)
    manifests = [hparams[key] for key in ("test_annotation", "enrol_annotation",
                                          "valid_annotation", "train_annotation")]
    if given == "dev":
        source = hparams["valid_annotation"]
        max_trials = _required(hparams, "calibration_max_trials", hparams_file)
        trials = split_trials(_read_manifest(source), int(max_trials), hparams["seed"], source)
    else:
        source = given
        trials = read_trial_list(given)
        cap = int(_required(hparams, "calibration_max_trials", hparams_file))
        keep = sample_trials(trials["label"].to_numpy(), cap, np.random.default_rng(hparams["seed"]))
        trials = trials.iloc[keep].reset_index(drop=True)
    n_tar = int(trials["label"].sum())
    if n_tar == 0 or n_tar == len(trials):
        kind = "target (label 1)" if n_tar == 0 else "non-target (label 0)"
        raise ValueError(
            f"{source} holds no {kind} trial: a calibration needs both. Add such trials to "
            "the list, or set calibration: none."
        )
    # Where each calibration utterance is listed (first manifest that has it).
    wanted = pd.unique(pd.concat([trials["enrol"], trials["test"]]).astype(str))
    found = {}
    rows = []
    for csv_path in manifests:
        if not os.path.isfile(csv_path):
            continue
        table = _read_manifest(csv_path)
        hits = table[table["ID"].isin(wanted) & ~table["ID"].isin(list(found))]
        for utt in hits["ID"]:
            found[utt] = csv_path
        rows.append(hits)
    unknown = [u for u in wanted if u not in found]
    if unknown:
        raise KeyError(
            f"{source}: {len(unknown)} utterance(s) of the calibration trials are in none of "
            f"the run's manifests ({', '.join(os.path.basename(m) for m in manifests)} in "
            f"{os.path.dirname(manifests[0])}), e.g. {unknown[:3]}. Name utterances by their "
            "manifest ID (VoxCeleb: spk/video/file.wav under wav/)."
        )
    listed = pd.concat(rows, ignore_index=True)
    _warn_shared_speakers(listed, test_trials, manifests[:2], source)
    table = _calibration_embeddings(found, test, hparams, opts)
    scores = score_trials(table, table, trials["enrol"].tolist(), trials["test"].tolist(),
                          cohort=cohort, top_k=hparams["top_k"], progress=False)
    seconds = {}
    if method == "qmf":
        lengths = pd.concat([_manifest_seconds(m, hparams) for m in set(found.values())])
        lengths = lengths[~lengths.index.duplicated()]
        seconds = {"enrol_seconds": _lookup(lengths, trials["enrol"], "calibration enrolment"),
                   "test_seconds": _lookup(lengths, trials["test"], "calibration test")}
    labels = trials["label"].to_numpy()
    try:
        cal = fit_calibration(scores, labels, prior, method, **seconds)
    except ValueError as err:
        raise ValueError(
            f"calibration on {source}: {err}"
            + (" (dev.csv holds training speakers, which the encoder separates far better than "
               "new ones: leave calibration_trials null to calibrate across speaker folds of "
               "the test trials)" if given == "dev" else "")
        ) from None
    summary = {
        "fitted_on": source,
        "source": "dev" if given == "dev" else "list",
        "trials": int(len(trials)),
        "targets": n_tar,
        "speakers": int(listed["spk_id"].nunique()) if "spk_id" in listed else None,
        "scoring": "AS-norm" if cohort is not None else "cosine",
        "cllr_on_fitted_trials": cllr(cal.llr(scores, **seconds), labels),
        "bayes_threshold": bayes_threshold(DECISION_PRIOR),
    }
    logger.info("Calibration (%s) fitted on %d trials (%d targets) of %s: %s",
                method, len(trials), n_tar, source, cal)
    return {"calibration": cal, "p_target": DECISION_PRIOR, "summary": summary}


def trial_speakers(trials, protocol, hparams):
    """The speaker on each side of each trial, from the manifests' ``spk_id``.

    Arguments
    ---------
    trials : pandas.DataFrame
        ``enrol`` and ``test`` ids.
    protocol : str
        ``concat`` (enrolment ids in ``enrol.csv``) or ``average`` (models
        of ``enrol_average.csv``).
    hparams : dict
        Recipe hyperparameters.

    Returns
    -------
    enrol, test : numpy.ndarray
        Speaker ids (str).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("enrol.csv", "test.csv"):
    ...     _ = open(os.path.join(folder, name), "w").write("ID,spk_id\\na/1.wav,a\\nb/1.wav,b\\n")
    >>> hp = {"enrol_annotation": os.path.join(folder, "enrol.csv"),
    ...       "test_annotation": os.path.join(folder, "test.csv")}
    >>> e, t = trial_speakers(pd.DataFrame({"enrol": ["a/1.wav"], "test": ["b/1.wav"]}), "concat", hp)
    >>> e.tolist(), t.tolist()
    (['a'], ['b'])
    """
    enrol_csv = hparams["enrol_average_annotation"] if protocol == "average" \
        else hparams["enrol_annotation"]
    key = "model" if protocol == "average" else "ID"
    out = []
    for csv_path, ids, column in ((enrol_csv, trials["enrol"], key),
                                  (hparams["test_annotation"], trials["test"], "ID")):
        table = pd.read_csv(csv_path, dtype=str)
        if "spk_id" not in table:
            raise KeyError(f"{csv_path} has no spk_id column: calibrating across speaker folds "
                           "needs the speakers; give calibration_trials instead.")
        speaker = table.drop_duplicates(column).set_index(column)["spk_id"]
        out.append(_lookup(speaker, ids.astype(str), f"speaker of the {os.path.basename(csv_path)}"))
    return out[0].astype(str), out[1].astype(str)


def speaker_folds(speakers, folds, seed):
    """A seeded assignment of speakers to ``folds`` groups of (nearly) equal size.

    Arguments
    ---------
    speakers : iterable of str
        Speaker ids (repeats are fine).
    folds : int
        Number of folds, at least 3.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict
        Speaker to fold (0 .. folds - 1).

    Example
    -------
    >>> f = speaker_folds(["a", "b", "c", "d", "e"], 3, seed=0)
    >>> sorted(f), sorted(list(f.values()).count(k) for k in range(3))
    (['a', 'b', 'c', 'd', 'e'], [1, 2, 2])
    """
    if int(folds) < 3:
        raise ValueError(f"calibration_folds must be at least 3 (a trial between two folds is "
                         f"calibrated on the others), got {folds}")
    names = sorted(set(speakers))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[k]: int(rank % folds) for rank, k in enumerate(order)}


def cross_fit_test_calibration(trials, scores, protocol, hparams, calibration, seconds, scoring):
    """Calibrate the test trials across speaker folds (``calibration_trials: null``).

    The test speakers are the only ones the encoder has not learnt, so they
    are what a calibration for new speakers is fitted on: the speakers are
    split into ``calibration_folds`` seeded folds and each trial's LLR comes
    from a map fitted on the trials of the other folds
    (:func:`~sb_angcl.evaluation.calibration.cross_fitted_llrs`): no trial is calibrated
    on its own speakers. The map for the exported model is fitted on all test
    trials; the cross-fitted Cllr and actDCF estimate how it does on new
    speakers. Each fit uses at most ``calibration_max_trials`` trials (a
    seeded sample, at most half targets).

    Arguments
    ---------
    trials : pandas.DataFrame
        The test trials.
    scores : numpy.ndarray
        Their raw scores.
    protocol : str
        Enrolment protocol (where the enrolment speakers are listed).
    hparams : dict
        Recipe hyperparameters (``calibration_folds``, ``calibration_max_trials``,
        ``seed``).
    calibration : dict
        ``method``, ``prior``, ``hparams_file``.
    seconds : tuple
        ``(enrol_seconds, test_seconds)`` for ``qmf``, else empty.
    scoring : str
        ``cosine`` or ``AS-norm`` (recorded).

    Returns
    -------
    llrs : numpy.ndarray
        The cross-fitted LLRs.
    fitted : dict
        ``calibration`` (the map fitted on all trials), ``p_target``, ``summary``.
    """
    folds = int(_required(hparams, "calibration_folds", calibration["hparams_file"]))
    method, prior = calibration["method"], calibration["prior"]
    labels = trials["label"].to_numpy().astype(int)
    spk_e, spk_t = trial_speakers(trials, protocol, hparams)
    fold = speaker_folds(np.concatenate([spk_e, spk_t]), folds, hparams["seed"])
    enrol_fold = np.array([fold[s] for s in spk_e])
    test_fold = np.array([fold[s] for s in spk_t])
    where = hparams["trials_annotation"]
    max_trials = int(_required(hparams, "calibration_max_trials", calibration["hparams_file"]))
    try:
        llrs, fits = cross_fitted_llrs(scores, labels, enrol_fold, test_fold, prior, method,
                                       *seconds, max_trials=max_trials, seed=hparams["seed"])
        chosen = sample_trials(labels, max_trials, np.random.default_rng(hparams["seed"]))
        cal = fit_calibration(scores[chosen], labels[chosen], prior, method,
                              *(v[chosen] for v in seconds))
    except ValueError as err:
        raise ValueError(
            f"calibration across {folds} speaker folds of {where}: {err}. Give a list of other "
            "speakers' trials as calibration_trials, fewer calibration_folds (at least 3), or "
            "set calibration: none."
        ) from None
    summary = {
        "fitted_on": where,
        "source": "test folds",
        "folds": folds,
        "trials": int(len(trials)),
        "targets": int(labels.sum()),
        "fitted_on_trials": int(len(chosen)),
        "speakers": len(fold),
        "scoring": scoring,
        "cllr_on_fitted_trials": cllr(cal.llr(scores, *seconds), labels),
        "bayes_threshold": bayes_threshold(DECISION_PRIOR),
        "fold_fits": [{"folds": [i, j], "fitted_on_trials": n, "weights": list(c.weights),
                       "offset": c.offset} for (i, j), (c, n) in sorted(fits.items())],
    }
    logger.info("Calibration (%s) of %s across %d speaker folds; for the exported model: %s",
                method, where, folds, cal)
    return llrs, {"calibration": cal, "p_target": DECISION_PRIOR, "summary": summary}


def _calibration_embeddings(found, test, hparams, opts):
    """Embeddings of the calibration utterances (test embeddings reused)."""
    ids, vectors = [], []
    by_manifest = {}
    for utt, csv_path in found.items():
        if utt in test:
            ids.append(utt)
            vectors.append(test[utt])
        else:
            by_manifest.setdefault(csv_path, set()).add(utt)
    for csv_path, utts in by_manifest.items():
        table = embed_manifest(csv_path, hparams, desc="Embedding calibration utterances",
                               limit_ids=utts, **opts)
        ids.extend(table.ids)
        vectors.extend(table.vectors)
    return EmbeddingTable(ids, np.stack(vectors))


def _warn_shared_speakers(listed, test_trials, eval_manifests, source):
    """Warn when calibration and test trials share speakers."""
    if "spk_id" not in listed:
        return
    test_ids = set(test_trials["enrol"].astype(str)) | set(test_trials["test"].astype(str))
    test_speakers = set()
    for csv_path in eval_manifests:
        if os.path.isfile(csv_path):
            table = _read_manifest(csv_path)
            if "spk_id" in table:
                test_speakers |= set(table.loc[table["ID"].isin(test_ids), "spk_id"].dropna())
    shared = sorted(set(listed["spk_id"].dropna()) & test_speakers)
    if shared:
        logger.warning(
            "The calibration trials of %s share %d speaker(s) with the test trials (e.g. %s): "
            "the Cllr and actDCF reported on the test trials are then optimistic.",
            source, len(shared), shared[:3])


def training_cohort(hparams, opts):
    """Speaker-averaged cohort from (a sample of) the training speakers.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters (``train_annotation``, ``cohort_size``, ``seed``).
    opts : dict
        Embedding options.

    Returns
    -------
    EmbeddingTable
    """
    train = pd.read_csv(hparams["train_annotation"], dtype={"ID": str, "spk_id": str})
    speakers = sorted(train["spk_id"].unique())
    rng = np.random.default_rng(hparams["seed"])
    size = min(hparams["cohort_size"], len(speakers))
    chosen = set(rng.choice(speakers, size=size, replace=False).tolist())
    per_spk = hparams.get("cohort_utterances_per_speaker", 3)
    rows = train[train["spk_id"].isin(chosen)].groupby("spk_id").head(per_spk)
    table = embed_manifest(hparams["train_annotation"], hparams, desc="Embedding cohort",
                           limit_ids=set(rows["ID"]), **opts)
    return speaker_cohort(table, dict(zip(rows["ID"], rows["spk_id"])))


def main(enrol_protocol=None):
    """Entry point of a recipe's ``verify.py``.

    Arguments
    ---------
    enrol_protocol : str or None
        See :func:`run_verification`.
    """
    run_verification(sys.argv[1:], enrol_protocol)
