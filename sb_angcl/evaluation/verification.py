"""Scoring a trained model in one line: embed, score, metrics, calibration, report.

What a recipe's ``verify.py`` runs (:func:`verify`) with its verification YAML:
load the exported model, embed and score every trial (cosine or AS-norm),
calibrate (unless ``calibration: none``), write scores, ``metrics.csv`` and
plots, and return reports that the recipe hands to
:func:`sb_angcl.model_card.record_verification`.

Authors
 * sb-angcl contributors
"""

import json
import logging
import os

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from sb_angcl.evaluation import calibrated
from sb_angcl.evaluation.calibration import (
    DECISION_PRIOR,
    METHODS,
    cross_fit_test_calibration,
    fit_score_calibration,
)
from sb_angcl.evaluation.metrics import metrics_table, operating_points, trial_conditions
from sb_angcl.evaluation.plots import plot_det, plot_score_histogram
from sb_angcl.evaluation.scoring import (
    _lookup,
    _manifest_seconds,
    embed_manifest,
    enrolment_seconds,
    score_trials,
    speaker_cohort,
    write_scores,
)
from sb_angcl.hyperparams import load_trained_hparams

logger = logging.getLogger(__name__)

#: The modules of an exported folder that embed (``hyperparams.yaml`` defines them).
EMBEDDING_MODULES = ("compute_features", "mean_var_norm", "embedding_model")


def load_model(hparams, device="cpu"):
    """The embedding modules (:data:`EMBEDDING_MODULES`) of a trained run, in eval mode.

    From the exported ``model_folder``, else (``export_folder: null``) from the
    run's ``output_folder`` and its best checkpoint.
    """
    folder, run_yaml = hparams["model_folder"], os.path.join(hparams["output_folder"], "hyperparams.yaml")
    weights = os.path.join(folder, "embedding_model.ckpt")
    if os.path.isfile(os.path.join(folder, "hyperparams.yaml")) and os.path.isfile(weights):
        with open(os.path.join(folder, "hyperparams.yaml"), encoding="utf-8") as fin:
            loaded = load_hyperpyyaml(fin)
        loaded["embedding_model"].load_state_dict(torch.load(weights, map_location="cpu"))
        logger.info("Loaded the exported model %s", folder)
    elif os.path.isfile(run_yaml):
        loaded = load_trained_hparams(run_yaml, {})
        if loaded["checkpointer"].recover_if_possible(min_key="ErrorRate") is None:
            raise FileNotFoundError(f"No checkpoint in {loaded['save_folder']}: train first.")
        logger.info("Loaded the best checkpoint of %s", hparams["output_folder"])
    else:
        raise FileNotFoundError(
            f"No trained model in {folder} (hyperparams.yaml, embedding_model.ckpt) nor a "
            f"training run in {hparams['output_folder']}: train first with train.py, and give "
            "the training run's --output_folder (or --model_folder=<exported folder>)."
        )
    model = {name: loaded[name] for name in EMBEDDING_MODULES}
    for module in model.values():
        module.to(device).eval()
    return model


def run_verification(argv):
    """:func:`verify` from ``argv`` (``[hparams/verification.yaml, --key=value, ...]``).

    Returns the loaded YAML and :func:`verify`'s reports.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return hparams, verify(hparams, run_opts.get("device", "cpu"))


def verify(hparams, device="cpu"):
    """Embed, score, measure, calibrate and write the results of a trained model.

    Returns one report (:func:`score_and_report`) per enrolment protocol.
    """
    method = hparams["calibration"]
    if method not in METHODS:
        raise ValueError(f"calibration must be one of {list(METHODS)}, got {method!r}")
    trials_path = hparams["trials_annotation"]
    if not os.path.isfile(trials_path):
        raise FileNotFoundError(f"{trials_path} not found: run training (data preparation) first.")
    trials = pd.read_csv(trials_path, dtype={"enrol": str, "test": str})
    model = load_model(hparams, device)
    opts = {"device": device, "batch_size": hparams["eval_batch_size"],
            "sample_rate": hparams["sample_rate"], "max_seconds": hparams["eval_max_seconds"],
            "data_root": hparams["data_folder"]}
    test = embed_manifest(hparams["test_annotation"], model, desc="Embedding test", **opts)
    cohort = None
    if hparams["score_norm"] in ("as-norm", "asnorm", "as_norm"):
        cohort = training_cohort(hparams, model, opts)
    calibration = None
    if method != "none":
        calibration = {"method": method, "prior": hparams["calibration_prior"], "fixed": None}
        if hparams["calibration_trials"] is not None:
            calibration["fixed"] = fit_score_calibration(hparams, trials, test, cohort, model, opts)
        elif int(hparams["calibration_folds"]) < 3:
            raise ValueError("calibration_folds must be at least 3 (a trial between two folds "
                             f"is calibrated on the others), got {hparams['calibration_folds']}")
    protocol = hparams["enrol_protocol"]
    protocols = ["concat", "average"] if protocol == "both" else [protocol]
    reports = {}
    for name in protocols:
        enrol = enrolment_table(name, hparams, model, test, opts)
        reports[name] = score_and_report(trials, enrol, test, cohort, hparams, name, calibration)
    return reports


def enrolment_table(protocol, hparams, model, test, opts):
    """Embeddings of the enrolment models under one protocol.

    ``concat``: one per row of ``enrol.csv`` (``test`` reused when it is the
    same manifest); ``average``: the mean of the normalised embeddings of each
    ``model``'s utterances in ``enrol_average.csv``.
    """
    if protocol == "average":
        avg_csv = hparams.get("enrol_average_annotation")
        if not avg_csv or not os.path.isfile(avg_csv):
            raise FileNotFoundError(f"enrol_protocol=average needs enrol_average_annotation "
                                    f"({avg_csv}); only the CN-Celeb recipe writes it.")
        utts = embed_manifest(avg_csv, model, desc="Embedding enrolment utterances", **opts)
        groups = pd.read_csv(avg_csv, dtype=str).groupby("model")["ID"].apply(list).to_dict()
        return utts.average(groups, normalize=True)
    if protocol == "concat":
        if os.path.abspath(hparams["enrol_annotation"]) == os.path.abspath(hparams["test_annotation"]):
            return test
        return embed_manifest(hparams["enrol_annotation"], model, desc="Embedding enrolment", **opts)
    raise ValueError(f"enrol_protocol must be concat, average or both; got {protocol!r}")


def training_cohort(hparams, model, opts):
    """The AS-norm cohort: ``cohort_size`` training speakers (seeded), speaker-averaged."""
    train = pd.read_csv(hparams["train_annotation"], dtype={"ID": str, "spk_id": str})
    speakers = sorted(train["spk_id"].unique())
    rng = np.random.default_rng(hparams["seed"])
    size = min(hparams["cohort_size"], len(speakers))
    chosen = set(rng.choice(speakers, size=size, replace=False).tolist())
    per_spk = hparams["cohort_utterances_per_speaker"]
    rows = train[train["spk_id"].isin(chosen)].groupby("spk_id").head(per_spk)
    table = embed_manifest(hparams["train_annotation"], model, desc="Embedding cohort",
                           limit_ids=set(rows["ID"]), **opts)
    return speaker_cohort(table, dict(zip(rows["ID"], rows["spk_id"])))


def score_and_report(trials, enrol, test, cohort, hparams, protocol, calibration=None):
    """Score all trials; write the scores, the calibrated scores, the metrics and the plots.

    ``protocol`` suffixes the outputs unless ``concat``; ``calibration``:
    ``method``, ``prior`` and ``fixed`` (a fit on given trials, or None: across
    speaker folds of these trials), or None (Cllr, actDCF of the raw scores).
    Returns ``table`` (as ``metrics.csv``), ``card_row`` (the model card's row)
    and ``calibration`` (for the exported model, or None).
    """
    scores = score_trials(enrol, test, trials["enrol"].tolist(), trials["test"].tolist(),
                          cohort=cohort, top_k=hparams["top_k"])
    labels = trials["label"].to_numpy().astype(int)
    scoring = "AS-norm" if cohort is not None else "cosine"
    out_dir = os.path.dirname(hparams["scores_file"]) or "."
    suffix = "" if protocol == "concat" else f"_{protocol}"
    base, ext = os.path.splitext(hparams["scores_file"])
    scores_file = f"{base}{suffix}{ext}"
    write_scores(scores_file, trials["enrol"], trials["test"], scores, labels)
    llrs, fitted = scores, None
    if calibration is not None:
        llrs, fitted = _calibrate(trials, scores, protocol, hparams, calibration, scoring)
        if fitted is None:
            calibration = None
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
    points = operating_points(scores, labels, DECISION_PRIOR)  # the EER of these scores, once
    table = metrics_table(scores, labels, trial_conditions(trials), p_target=DECISION_PRIOR,
                          llrs=llrs, overall=points)
    table.to_csv(os.path.join(out_dir, f"metrics{suffix}.csv"), index=False)
    method = calibration["method"] if calibration else "none"
    _print_table(table, protocol, len(trials), scoring, method, scores_file)
    try:
        plot_det(scores, labels, os.path.join(out_dir, f"det{suffix}.png"), points=points)
        plot_score_histogram(scores, labels, os.path.join(out_dir, f"scores_hist{suffix}.png"),
                             points=points)
    except ImportError as err:
        logger.warning("%s", err)
    return {"table": table,
            "card_row": _card_row(hparams, protocol, scoring, table.iloc[0], points, method),
            "calibration": _for_export(hparams, fitted, scoring, protocol)}


def _calibrate(trials, scores, protocol, hparams, calibration, scoring):
    """LLRs of the trials and the fit (None when the trial list cannot be calibrated)."""
    seconds = ()
    if calibration["method"] == "qmf":
        seconds = (
            _lookup(enrolment_seconds(protocol, hparams), trials["enrol"], "enrolment"),
            _lookup(_manifest_seconds(hparams["test_annotation"], hparams), trials["test"], "test"),
        )
    if calibration["fixed"] is not None:
        return calibration["fixed"]["calibration"].llr(scores, *seconds), calibration["fixed"]
    try:
        return cross_fit_test_calibration(trials, scores, protocol, hparams, calibration,
                                          seconds, scoring)
    except ValueError as err:  # the trial list's shape, not a setting: score anyway
        logger.warning("No calibration: %s", err)
        return scores, None


def _print_table(table, protocol, n_trials, scoring, method, scores_file):
    """The metrics table on standard output (EER in %), then the overall line."""
    shown = table.copy()
    shown["EER"] = (shown["EER"] * 100).round(2)
    for column in ("minDCF", "Cllr", "minCllr", "actDCF"):
        shown[column] = shown[column].round(4)
    what = f"{method} calibration" if method != "none" else "no calibration"
    print(f"\nVerification ({protocol} enrolment, {n_trials} trials, {scoring}, {what}); "
          "EER in %; Cllr and actDCF of the "
          f"{'calibrated' if method != 'none' else 'raw'} scores:")
    print(shown.to_string(index=False))
    overall = table.iloc[0]
    print(f"EER {overall['EER'] * 100:.2f}%  minDCF(0.01) {overall['minDCF']:.4f}  "
          f"actDCF(0.01) {overall['actDCF']:.4f}  Cllr {overall['Cllr']:.4f}  "
          f"minCllr {overall['minCllr']:.4f}  [{protocol}] scores: {scores_file}")


def _card_row(hparams, protocol, scoring, overall, points, method):
    """The model card's result row (trials named relative to ``data_folder`` when inside it)."""
    trials = hparams.get("verification_file") or hparams["trials_annotation"]
    data = hparams["data_folder"]
    if data and os.path.abspath(trials).startswith(os.path.abspath(data) + os.sep):
        trials = os.path.relpath(trials, data)
    return {
        "trials": trials,
        "enrolment": protocol,
        "scoring": scoring,
        "trials (targets)": f"{int(overall['n_trials'])} ({int(overall['n_target'])})",
        "EER (%)": f"{100 * overall['EER']:.2f}",
        "minDCF (p=0.01)": f"{overall['minDCF']:.4f}",
        "EER threshold": f"{points['EER_threshold']:.4f}",
        "calibration": method,
        "Cllr": f"{overall['Cllr']:.4f}",
        "minCllr": f"{overall['minCllr']:.4f}",
        "actDCF (p=0.01)": f"{overall['actDCF']:.4f}",
    }


def _for_export(hparams, fitted, scoring, protocol):
    """The calibration the exported (cosine-scoring) model takes, or None."""
    if fitted is None or protocol != "concat":
        return None
    if scoring != "cosine":
        logger.warning(
            "The calibration was fitted on %s scores; the exported model scores by cosine, so "
            "its calibration is left as it was. Run verify.py with --score_norm=null to "
            "calibrate the exported model.", scoring)
        return None
    cal = fitted["calibration"]
    values = dict(cal.to_dict(), p_target=fitted["p_target"], c_miss=1.0, c_fa=1.0,
                  sample_rate=hparams["sample_rate"], max_seconds=hparams["eval_max_seconds"])
    return {
        "values": values,
        "summary": fitted["summary"],
        "bayes_threshold": calibrated.bayes_threshold(fitted["p_target"]),
        "score_threshold": cal.score_threshold(fitted["p_target"]),
        "interface": calibrated.__file__,
    }
