"""Why two trained systems differ: scores, similarities and training, side by side.

Reads finished runs of ``benchmarks/ablation.py`` (or of a recipe) on a
VoxCeleb-layout corpus and prints, per run:

* **score distributions** per trial subset (the whole list and every
  ``meta/veri_test2_<name>.txt``): target and non-target mean ± std, the
  separation ``d' = (mu_t - mu_n) / sqrt((sd_t^2 + sd_n^2) / 2)``, EER and
  minDCF (p_target 0.01);
* **within-speaker similarity** by trial condition, from the corpus's
  ``meta/trials_info.tsv``: mean target score for same / cross session and
  same / cross language, mean non-target score for same / cross language, and
  per source category of the enrolment side (recorded, tts-real, ...);
* **training**: per epoch, the AAM loss, the contrastive loss, alpha and the
  validation AAM loss and error (from ``train_log.txt``);
* **test EER per epoch**, when the run kept one checkpoint per epoch
  (``--override checkpoints_to_keep=99`` in the ablation): where in training
  the gap between two systems opens.

Usage::

    python benchmarks/diagnose_runs.py --corpus DIR/vox \\
        --run aam=WORK/runs/aam/seed1986 --run default=WORK/runs/default/seed1986 \\
        [--epochs 3] [--output diagnosis.md]

Authors
 * sb-angcl contributors
"""

import argparse
import math
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation import trial_subsets  # noqa: E402


def read_scores(path):
    """A scores file (``enrol test score label``) as a DataFrame.

    Arguments
    ---------
    path : str
        Scores file.

    Returns
    -------
    pandas.DataFrame
        Columns ``enrol, test, score, label``.
    """
    return pd.read_csv(path, sep=" ", header=None, names=["enrol", "test", "score", "label"],
                       dtype={"enrol": str, "test": str})


def separation(scores, labels):
    """Target / non-target statistics, d', EER and minDCF of one score set.

    Arguments
    ---------
    scores : array-like
        Scores.
    labels : array-like
        1 = target.

    Returns
    -------
    dict

    Example
    -------
    >>> s = separation([0.9, 0.7, 0.2, 0.0], [1, 1, 0, 0])
    >>> round(s["mu_t"], 2), round(s["mu_n"], 2), round(s["d_prime"], 2), s["EER"]
    (0.8, 0.1, 4.95, 0.0)
    """
    from sb_angcl.evaluation.metrics import compute_eer, compute_min_dcf

    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    tar, non = scores[labels == 1], scores[labels == 0]
    out = {"n_t": len(tar), "n_n": len(non), "mu_t": math.nan, "sd_t": math.nan,
           "mu_n": math.nan, "sd_n": math.nan, "d_prime": math.nan,
           "EER": math.nan, "minDCF": math.nan}
    if len(tar):
        out["mu_t"], out["sd_t"] = float(tar.mean()), float(tar.std(ddof=1)) if len(tar) > 1 else 0.0
    if len(non):
        out["mu_n"], out["sd_n"] = float(non.mean()), float(non.std(ddof=1)) if len(non) > 1 else 0.0
    if len(tar) and len(non):
        pooled = math.sqrt((out["sd_t"] ** 2 + out["sd_n"] ** 2) / 2)
        out["d_prime"] = (out["mu_t"] - out["mu_n"]) / pooled if pooled else math.inf
        out["EER"] = float(compute_eer(scores, labels)[0])
        out["minDCF"] = float(compute_min_dcf(scores, labels)[0])
    return out


def distribution_table(runs, scores, subsets):
    """Markdown: score distributions of every run on every subset."""
    lines = ["| run | subset | targets | μ_t ± sd | non-targets | μ_n ± sd | d' | EER % | minDCF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in runs:
        df = scores[name]
        pairs = list(zip(df["enrol"], df["test"]))
        for subset in ["all", *sorted(subsets)]:
            mask = (np.ones(len(df), bool) if subset == "all"
                    else np.array([p in subsets[subset] for p in pairs]))
            s = separation(df["score"][mask], df["label"][mask])
            lines.append(
                f"| {name} | {subset} | {s['n_t']} | {s['mu_t']:.3f} ± {s['sd_t']:.3f} | "
                f"{s['n_n']} | {s['mu_n']:.3f} ± {s['sd_n']:.3f} | {s['d_prime']:.2f} | "
                f"{100 * s['EER']:.2f} | {s['minDCF']:.3f} |")
    return "\n".join(lines)


def condition_table(runs, scores, info):
    """Markdown: mean target / non-target score per trial condition.

    Arguments
    ---------
    runs : list of str
        Run names.
    scores : dict
        ``name -> DataFrame`` from :func:`read_scores`.
    info : pandas.DataFrame
        ``meta/trials_info.tsv`` (``enrol, test, enrol_lang, test_lang,
        enrol_category, same_session``).

    Returns
    -------
    str
    """
    conditions = []
    lang_same = info["enrol_lang"] == info["test_lang"]
    tar = info["label"] == 1
    conditions.append(("target, same session", tar & (info["same_session"] == 1)))
    conditions.append(("target, cross session", tar & (info["same_session"] == 0)))
    conditions.append(("target, same language", tar & lang_same))
    conditions.append(("target, cross language", tar & ~lang_same))
    conditions.append(("non-target, same language", ~tar & lang_same))
    conditions.append(("non-target, cross language", ~tar & ~lang_same))
    for category in sorted(info["enrol_category"].unique()):
        cat = info["enrol_category"] == category
        conditions.append((f"target, {category}", tar & cat))
        conditions.append((f"non-target, enrol {category}", ~tar & cat))
    lines = ["| condition | trials | " + " | ".join(f"{r} mean ± sd" for r in runs) + " |",
             "|" + "---|" * (len(runs) + 2)]
    keyed = {r: scores[r].set_index(["enrol", "test"])["score"] for r in runs}
    index = pd.MultiIndex.from_arrays([info["enrol"], info["test"]])
    for label, mask in conditions:
        cells = []
        for r in runs:
            values = keyed[r].reindex(index[mask.to_numpy()]).dropna().to_numpy()
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1
                         else "n/a")
        lines.append(f"| {label} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(runs, folders):
    """Markdown: per-epoch losses, alpha and validation of every run."""
    from train_log import read_train_log

    logs = {r: read_train_log(os.path.join(folders[r], "train_log.txt")) for r in runs}
    epochs = sorted({int(e["epoch"]) for r in runs for e in logs[r]})
    cols = [("train loss_cls", "AAM"), ("train loss_con", "con"), ("train alpha", "α"),
            ("valid loss", "valid AAM"), ("valid ErrorRate", "valid err")]
    head = "| epoch | " + " | ".join(f"{r} {c[1]}" for r in runs for c in cols) + " |"
    lines = [head, "|" + "---|" * (1 + len(runs) * len(cols))]
    for epoch in epochs:
        cells = []
        for r in runs:
            row = next((e for e in logs[r] if int(e["epoch"]) == epoch), {})
            cells += [f"{row[k]:.3g}" if k in row else "" for k, _ in cols]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epoch_eers(folder, subsets, every=1, device="cpu"):
    """Test EER (whole list and subsets) at every end-of-epoch checkpoint of a run.

    Arguments
    ---------
    folder : str
        A finished run (its ``hyperparams.yaml`` and ``save/CKPT+*``).
    subsets : dict
        From :func:`ablation.trial_subsets`.
    every : int
        Score epoch 1, every ``every``-th epoch and the last.
    device : str
        Torch device.

    Returns
    -------
    dict
        ``epoch -> {"all": EER, subset: EER, ...}``.
    """
    from sb_angcl.evaluation.scoring import EmbeddingTable, embed_manifest, score_trials
    from sb_angcl.hyperparams import load_trained_hparams

    hparams = load_trained_hparams(os.path.join(folder, "hyperparams.yaml"), {})
    checkpointer = hparams["checkpointer"]
    save = hparams["save_folder"]  # the manifests data preparation wrote
    trials = pd.read_csv(os.path.join(save, "trials.csv"), dtype={"enrol": str, "test": str})
    labels = trials["label"].to_numpy().astype(int)
    pairs = list(zip(trials["enrol"], trials["test"]))
    masks = {"all": np.ones(len(trials), bool)}
    masks.update({n: np.array([p in s for p in pairs]) for n, s in subsets.items()})
    out = {}
    for ckpt in checkpointer.list_checkpoints():
        if not ckpt.meta.get("end-of-epoch", False):
            continue
        checkpointer.load_checkpoint(ckpt)
        epoch = int(hparams["epoch_counter"].current)
        if epoch != 1 and epoch % every and epoch != hparams["number_of_epochs"]:
            continue
        for name in ("compute_features", "mean_var_norm", "embedding_model"):
            hparams[name].to(device).eval()
        # Each utterance once: the test manifest, then enrolment-only utterances.
        wanted, ids, vectors = set(trials["enrol"]) | set(trials["test"]), [], []
        for name in ("test.csv", "enrol.csv"):
            if not wanted - set(ids):
                break
            table = embed_manifest(os.path.join(save, name), hparams, device=device,
                                   batch_size=hparams["eval_batch_size"],
                                   max_seconds=30.0,  # verification.yaml's eval_max_seconds
                                   limit_ids=wanted - set(ids), desc=f"epoch {epoch}")
            ids += list(table.ids)
            vectors.append(table.vectors)
        table = EmbeddingTable(ids, np.concatenate(vectors))
        scores = score_trials(table, table, trials["enrol"].tolist(), trials["test"].tolist(),
                              progress=False)
        out[epoch] = {n: separation(scores[m], labels[m])["EER"] for n, m in masks.items()}
    return dict(sorted(out.items()))


def main(argv=None):
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="VoxCeleb-layout corpus (with meta/)")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER",
                        help="a finished run folder (scores.txt, train_log.txt); repeatable")
    parser.add_argument("--epochs", type=int, default=0, metavar="EVERY",
                        help="test EER at the end-of-epoch checkpoints the runs kept: epoch 1, "
                        "every EVERY-th and the last")
    parser.add_argument("--output", default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    folders = dict(item.split("=", 1) for item in args.run)
    runs = list(folders)
    subsets = trial_subsets(args.corpus)
    scores = {r: read_scores(os.path.join(folders[r], "scores.txt")) for r in runs}
    parts = [f"# Diagnosis: {', '.join(runs)}", "",
             "Runs: " + "; ".join(f"`{r}` = `{folders[r]}`" for r in runs), "",
             "## Score distributions (cosine)", "", distribution_table(runs, scores, subsets)]
    info_path = os.path.join(args.corpus, "meta", "trials_info.tsv")
    if os.path.isfile(info_path):
        info = pd.read_csv(info_path, sep="\t", dtype={"enrol": str, "test": str})
        parts += ["", "## Mean score by trial condition", "", condition_table(runs, scores, info)]
    parts += ["", "## Training, per epoch", "", training_table(runs, folders)]
    if args.epochs:
        eers = {r: epoch_eers(folders[r], subsets, every=args.epochs) for r in runs}
        names = ["all", *sorted(subsets)]
        epochs = sorted({e for r in runs for e in eers[r]})
        parts += ["", "## Test EER % per epoch (end-of-epoch checkpoints)", "",
                  "| epoch | " + " | ".join(f"{r} {n}" for r in runs for n in names) + " |",
                  "|" + "---|" * (1 + len(runs) * len(names))]
        for e in epochs:
            cells = [f"{100 * eers[r][e][n]:.2f}" if e in eers[r] else "" for r in runs
                     for n in names]
            parts.append(f"| {e} | " + " | ".join(cells) + " |")
    text = "\n".join(parts) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fout:
            fout.write(text)
    print(text)


if __name__ == "__main__":
    main()
