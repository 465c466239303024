"""Speaker verification with a trained recipe: embed, score, report.

Shared by the recipes' ``verify.py``. It reloads the best checkpoint of a
training run, embeds the enrolment and test manifests written by data
preparation (``enrol.csv``, ``test.csv``; for CN-Celeb's averaged-enrolment
protocol, ``enrol_average.csv`` whose ``model`` column groups utterances),
scores ``trials.csv`` with cosine (optionally AS-norm against a
speaker-averaged cohort of training embeddings), and writes:

* the scores file (``enrol test score label`` per line);
* ``metrics.csv``: EER and minDCF (p_target 0.01, normalised) overall and
  per condition found in ``trials.csv`` (genre, language, cross-language,
  enrolment genre x test genre);
* ``det.png`` and ``scores_hist.png`` when matplotlib is installed;
* the overall EER / minDCF into the results section of the model card
  (``README.md``) of the exported folder, when training exported one.

Authors
 * sb-angcl contributors
"""

import logging
import os
import sys

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
from tqdm import tqdm

from sb_angcl.data.dataio import load_manifest, make_eval_pipeline
from sb_angcl.evaluation.metrics import compute_eer, metrics_table
from sb_angcl.evaluation.plots import plot_det, plot_score_histogram
from sb_angcl.evaluation.scoring import EmbeddingTable, score_trials, speaker_cohort, write_scores
from sb_angcl.export import MODEL_CARD, record_model_card_results
from sb_angcl.hyperparams import load_trained_hparams, overrides_to_dict

logger = logging.getLogger(__name__)


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
    protocol = enrol_protocol or hparams.get("enrol_protocol", "concat")
    opts = {
        "device": device,
        "batch_size": hparams.get("eval_batch_size", 16),
        "sample_rate": hparams.get("sample_rate", 16000),
        "max_seconds": hparams.get("eval_max_seconds"),
        "data_root": hparams.get("data_folder"),
    }
    trials_path = hparams["trials_annotation"]
    if not os.path.isfile(trials_path):
        raise FileNotFoundError(f"{trials_path} not found: run training (data preparation) first.")
    trials = pd.read_csv(trials_path, dtype={"enrol": str, "test": str})
    test = embed_manifest(hparams["test_annotation"], hparams, desc="Embedding test", **opts)
    cohort = None
    if hparams.get("score_norm") in ("as-norm", "asnorm", "as_norm"):
        cohort = training_cohort(hparams, opts)
    protocols = ["concat", "average"] if protocol == "both" else [protocol]
    tables = {}
    for name in protocols:
        enrol = enrolment_table(name, hparams, test, opts)
        tables[name] = score_and_report(trials, enrol, test, cohort, hparams, name)
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


def score_and_report(trials, enrol, test, cohort, hparams, protocol):
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

    Returns
    -------
    pandas.DataFrame
        The metrics table.
    """
    scores = score_trials(
        enrol, test, trials["enrol"].tolist(), trials["test"].tolist(),
        cohort=cohort, top_k=hparams.get("top_k", 300),
    )
    labels = trials["label"].to_numpy().astype(int)
    out_dir = os.path.dirname(hparams["scores_file"]) or "."
    suffix = "" if protocol == "concat" else f"_{protocol}"
    scores_file = hparams["scores_file"].replace(".txt", f"{suffix}.txt")
    write_scores(scores_file, trials["enrol"], trials["test"], scores, labels)
    table = metrics_table(scores, labels, trial_conditions(trials))
    table.to_csv(os.path.join(out_dir, f"metrics{suffix}.csv"), index=False)
    shown = table.copy()
    shown["EER"] = (shown["EER"] * 100).round(2)
    shown["minDCF"] = shown["minDCF"].round(4)
    print(f"\nVerification ({protocol} enrolment, {len(trials)} trials, "
          f"{'AS-norm' if cohort is not None else 'cosine'}); EER in %:")
    print(shown.to_string(index=False))
    overall = table.iloc[0]
    print(f"EER {overall['EER'] * 100:.2f}%  minDCF(0.01) {overall['minDCF']:.4f}  "
          f"[{protocol}] scores: {scores_file}")
    scoring = "AS-norm" if cohort is not None else "cosine"
    record_in_model_card(hparams, protocol, scoring, overall, compute_eer(scores, labels)[1])
    try:
        plot_det(scores, labels, os.path.join(out_dir, f"det{suffix}.png"))
        plot_score_histogram(scores, labels, os.path.join(out_dir, f"scores_hist{suffix}.png"))
    except ImportError as err:
        logger.warning("%s", err)
    return table


def record_in_model_card(hparams, protocol, scoring, overall, threshold):
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

    Returns
    -------
    str or None
        The card's path, or None when there is no exported card.
    """
    folder = hparams.get("export_folder")
    if not folder or not os.path.isdir(folder):
        return None
    if not os.path.isfile(os.path.join(folder, MODEL_CARD)):
        logger.warning("%s has no %s (exported by an older version); results not recorded",
                       folder, MODEL_CARD)
        return None
    trials = hparams.get("verification_file") or hparams["trials_annotation"]
    data = hparams.get("data_folder")
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
    }
    path = record_model_card_results(folder, row)
    logger.info("Recorded the results in %s", path)
    return path


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
    rng = np.random.default_rng(hparams.get("seed", 0))
    size = min(hparams.get("cohort_size", 1000), len(speakers))
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
