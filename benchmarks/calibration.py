#!/usr/bin/env python3
"""How well a trained run's scores calibrate: Cllr before and after, actual against minimum DCF.

Scores a finished run folder with the recipe's ``verify`` (in-process
``run_verification``) under several calibrations and prints one Markdown
table. Give it a *copy* of the run folder: ``verify`` writes its scores,
metrics and ``calibration.json`` there.

* ``none``: the Cllr of the raw cosine scores taken as LLRs, i.e. before
  calibration.
* The recipe's default (``calibration_trials: null``), for each ``--methods``
  x ``--priors``: all test trials, each calibrated by a map fitted on the
  trials of other test speakers (``calibration_folds`` speaker folds).
* The same, linear, for ``--fold-seeds`` other seeded assignments of the
  speakers to the folds (from the raw scores, no re-embedding): the median
  and 5-95 % range, since a few confusable speaker pairs decide the actDCF.
* ``calibration_trials: dev``: trials built from ``dev.csv``, held-out
  utterances of the training speakers (a fit that fails is reported as such).
* Speaker halves: the test speakers, sorted, are split by position (even /
  odd); the calibration is fitted on the trials among one half (given as a
  list) and reported on the trials among the other, and the other way round:
  one fit, on speakers disjoint from the reported ones, both unseen in
  training (the cross-half non-target trials are in neither).

The last line is ``ratio <actDCF / minDCF>`` of the recipe's default
calibration (the first method and prior) on all test trials.

``--floor N_TAR N_NON EER`` prints instead what a *perfectly* calibrated
system shows on a trial list of that size: Gaussian target and non-target
scores of equal variance, apart by the d' of that EER, scored by their true
LLR; the median and 5-95 % range over 200 draws of actDCF / minDCF (p_target
0.01) and of Cllr - minCllr. With few trials minDCF picks its threshold on a
handful of errors, so even the true LLR loses to it.

Example::

    cp -r /work/abl/s7/runs/default/seed1986 /tmp/run
    python benchmarks/calibration.py --run /tmp/run --data_folder /path/to/vox \\
        --hparams recipes/VoxCeleb/SpeakerRec/hparams/verification.yaml --override seed=1986

Authors
 * sb-angcl contributors
"""

import argparse
import json
import os
import shlex
import sys

import numpy as np
import pandas as pd
from scipy.stats import norm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sb_angcl.evaluation.calibration import cross_fitted_llrs, speaker_folds  # noqa: E402
from sb_angcl.evaluation.metrics import act_dcf, cllr, compute_min_dcf, min_cllr  # noqa: E402
from sb_angcl.evaluation.verification import run_verification  # noqa: E402

COLUMNS = ("model", "calibration", "prior", "fitted on", "reported on", "trials (targets)",
           "EER %", "minDCF", "actDCF", "actDCF / minDCF", "Cllr", "minCllr", "Cllr - minCllr")


def speaker_halves(run, out_dir):
    """Writes the two halves' trial tables and calibration lists; returns their paths.

    Arguments
    ---------
    run : str
        The run folder (``save/trials.csv``, ``save/enrol.csv``, ``save/test.csv``).
    out_dir : str
        Where the files go.

    Returns
    -------
    dict
        ``{"A": (trials_csv, calibration_list, speakers), "B": ...}``.
    """
    save = os.path.join(run, "save")
    trials = pd.read_csv(os.path.join(save, "trials.csv"), dtype={"enrol": str, "test": str})
    speaker = {}
    for name in ("enrol.csv", "test.csv"):
        table = pd.read_csv(os.path.join(save, name), dtype={"ID": str, "spk_id": str})
        speaker.update(zip(table["ID"], table["spk_id"]))
    spk_e, spk_t = trials["enrol"].map(speaker), trials["test"].map(speaker)
    speakers = sorted(set(spk_e) | set(spk_t))
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for name, members in (("A", set(speakers[0::2])), ("B", set(speakers[1::2]))):
        inside = trials[spk_e.isin(members) & spk_t.isin(members)]
        trials_csv = os.path.join(out_dir, f"trials_{name}.csv")
        inside.to_csv(trials_csv, index=False)
        listed = os.path.join(out_dir, f"calibration_{name}.txt")
        with open(listed, "w", encoding="utf-8") as fout:
            fout.writelines(f"{r.label} {r.enrol} {r.test}\n" for r in inside.itertuples())
        out[name] = (trials_csv, listed, sorted(members))
    return out


def perfect_calibration_floor(n_tar, n_non, eer, draws=200, seed=0):
    """actDCF / minDCF and Cllr - minCllr of the true LLR of equal-variance Gaussian scores.

    Arguments
    ---------
    n_tar, n_non : int
        Trial counts.
    eer : float
        EER (a fraction) that sets d' = 2 * Phi^-1(1 - eer).
    draws : int
        Simulated trial lists.
    seed : int
        Seed.

    Returns
    -------
    dict
        ``ratio`` and ``cllr_gap``: (median, 5th, 95th percentile).

    Example
    -------
    >>> floor = perfect_calibration_floor(20000, 20000, 0.05, draws=5)
    >>> 1.0 <= floor["ratio"][0] < 1.1
    True
    """
    rng = np.random.default_rng(seed)
    d = 2 * norm.ppf(1 - eer)
    labels = np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)]
    ratio, gap = [], []
    for _ in range(draws):
        scores = np.r_[rng.normal(d, 1, n_tar), rng.normal(0, 1, n_non)]
        llrs = d * scores - d * d / 2
        ratio.append(act_dcf(llrs, labels) / compute_min_dcf(llrs, labels)[0])
        gap.append(cllr(llrs, labels) - min_cllr(llrs, labels))
    summary = {}
    for name, values in (("ratio", ratio), ("cllr_gap", gap)):
        summary[name] = tuple(float(np.percentile(values, q)) for q in (50, 5, 95))
    return summary


def fold_seed_spread(scores, labels, spk_e, spk_t, folds, prior, seeds):
    """Median and 5-95 % range of Cllr and actDCF of linear cross-fitting over fold assignments.

    Arguments
    ---------
    scores, labels : numpy.ndarray
        Raw scores and labels of all test trials.
    spk_e, spk_t : numpy.ndarray
        The speaker on each side of each trial.
    folds : int
        Speaker folds.
    prior : float
        Effective prior of the fits.
    seeds : iterable of int
        Seeds of the fold assignments.

    Returns
    -------
    dict
        ``cllr`` and ``act_dcf``: (median, 5th, 95th percentile).
    """
    values = []
    for seed in seeds:
        fold = speaker_folds(np.concatenate([spk_e, spk_t]), folds, seed)
        llrs, _ = cross_fitted_llrs(scores, labels, np.array([fold[x] for x in spk_e]),
                                    np.array([fold[x] for x in spk_t]), prior)
        values.append((cllr(llrs, labels), act_dcf(llrs, labels)))
    values = np.array(values)
    return {name: tuple(float(np.percentile(values[:, k], q)) for q in (50, 5, 95))
            for k, name in enumerate(("cllr", "act_dcf"))}


def verify(args, extra):
    """The overall metrics row and the fitted calibration of one verify run."""
    fitted = os.path.join(args.run, "calibration.json")
    if os.path.exists(fitted):
        os.remove(fitted)
    argv = [args.hparams, f"--data_folder={args.data_folder}", f"--output_folder={args.run}",
            "--device=cpu", "--noprogressbar"]
    argv += [f"--{item}" for item in args.override] + extra
    table = list(run_verification(argv)[1].values())[-1]["table"]
    info = json.load(open(fitted)) if os.path.exists(fitted) else {}
    return table.iloc[0], info


def row(name, calibration, prior, fitted_on, reported_on, overall):
    return {
        "model": name, "calibration": calibration, "prior": prior, "fitted on": fitted_on,
        "reported on": reported_on,
        "trials (targets)": f"{int(overall['n_trials'])} ({int(overall['n_target'])})",
        "EER %": f"{100 * overall['EER']:.2f}", "minDCF": f"{overall['minDCF']:.3f}",
        "actDCF": f"{overall['actDCF']:.3f}",
        "actDCF / minDCF": f"{overall['actDCF'] / overall['minDCF']:.3f}",
        "Cllr": f"{overall['Cllr']:.3f}", "minCllr": f"{overall['minCllr']:.3f}",
        "Cllr - minCllr": f"{overall['Cllr'] - overall['minCllr']:.3f}",
    }


def main(argv=None):
    """Run the settings and print the table (and write it to ``--output``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a copy of a finished run folder")
    parser.add_argument("--hparams", help="the recipe's hparams/verification.yaml")
    parser.add_argument("--data_folder")
    parser.add_argument("--floor", nargs=3, type=float, metavar=("N_TAR", "N_NON", "EER"),
                        help="only print the perfect-calibration floor for these trial counts")
    parser.add_argument("--override", nargs="*", default=[], help="key=value of the run")
    parser.add_argument("--name", default=None, help="model name in the table (default: run folder)")
    parser.add_argument("--methods", nargs="+", default=["linear", "qmf"])
    parser.add_argument("--priors", nargs="+", type=float, default=[0.01, 0.5])
    parser.add_argument("--fold-seeds", type=int, default=30,
                        help="fold assignments for the spread of the default calibration")
    parser.add_argument("--output", default=None, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    if args.floor:
        n_tar, n_non, eer = int(args.floor[0]), int(args.floor[1]), args.floor[2]
        floor = perfect_calibration_floor(n_tar, n_non, eer)
        print(f"perfect calibration, {n_tar} targets, {n_non} non-targets, EER {100 * eer:.2f} %:")
        for key, label in (("ratio", "actDCF / minDCF"), ("cllr_gap", "Cllr - minCllr")):
            median, low, high = floor[key]
            print(f"{label}: median {median:.3f} (5-95 %: {low:.3f}-{high:.3f})")
        print(f"ratio {floor['ratio'][0]:.3f}")
        return
    if not (args.run and args.hparams and args.data_folder):
        parser.error("--run, --hparams and --data_folder are needed (or --floor)")
    name = args.name or os.path.basename(os.path.normpath(args.run))
    rows = []
    overall, _ = verify(args, ["--calibration=none"])
    rows.append(row(name, "none (raw cosine)", "-", "-", "all test trials", overall))
    raw = pd.read_csv(os.path.join(args.run, "scores.txt"), sep=" ", header=None,
                      names=["enrol", "test", "score", "label"], dtype={"enrol": str, "test": str})
    minimum = overall
    ratio = None
    for method in args.methods:
        for prior in args.priors:
            overall, _ = verify(args, [f"--calibration={method}", f"--calibration_prior={prior}"])
            rows.append(row(name, method, prior, "other test speakers (folds)", "all test trials",
                            overall))
            if ratio is None:
                ratio = overall["actDCF"] / overall["minDCF"]
    speaker = {}
    for csv_name in ("enrol.csv", "test.csv"):
        table = pd.read_csv(os.path.join(args.run, "save", csv_name), dtype=str)
        speaker.update(zip(table["ID"], table["spk_id"]))
    folds = int(next((o.split("=", 1)[1] for o in args.override
                      if o.startswith("calibration_folds=")), 10))
    labels = raw["label"].to_numpy().astype(bool)
    for prior in args.priors:
        spread = fold_seed_spread(raw["score"].to_numpy(), labels,
                                  raw["enrol"].map(speaker).to_numpy(),
                                  raw["test"].map(speaker).to_numpy(), folds, prior,
                                  range(args.fold_seeds))
        (c, c_lo, c_hi), (a, a_lo, a_hi) = spread["cllr"], spread["act_dcf"]
        rows.append(dict(row(name, "linear", prior, f"other test speakers ({folds} folds), "
                             f"median of {args.fold_seeds} fold assignments [5-95 %]",
                             "all test trials", minimum),
                         **{"actDCF": f"{a:.3f} [{a_lo:.3f}, {a_hi:.3f}]",
                            "actDCF / minDCF": f"{a / minimum['minDCF']:.3f}",
                            "Cllr": f"{c:.3f} [{c_lo:.3f}, {c_hi:.3f}]",
                            "Cllr - minCllr": f"{c - minimum['minCllr']:.3f}"}))
    try:
        overall, _ = verify(args, [f"--calibration={args.methods[0]}",
                                   f"--calibration_prior={args.priors[0]}",
                                   "--calibration_trials=dev"])
        rows.append(row(name, args.methods[0], args.priors[0], "dev.csv (training speakers)",
                        "all test trials", overall))
    except ValueError as err:
        print(f"calibration_trials=dev: {err}")
        rows.append(dict.fromkeys(COLUMNS, "-") | {
            "model": name, "calibration": args.methods[0], "prior": args.priors[0],
            "fitted on": "dev.csv (training speakers)", "reported on": "all test trials",
            "Cllr": "no finite fit" if "separated" in str(err) else "failed"})
    halves = speaker_halves(args.run, os.path.join(args.run, "calibration_halves"))
    for fit, report in (("A", "B"), ("B", "A")):
        trials_csv, _, members = halves[report]
        _, listed, fit_members = halves[fit]
        overall, _ = verify(args, ["--calibration=none", f"--trials_annotation={trials_csv}"])
        rows.append(row(name, "none (raw cosine)", "-", "-",
                        f"test half {report} ({len(members)} speakers)", overall))
        for prior in args.priors:
            overall, _ = verify(args, [f"--calibration={args.methods[0]}",
                                       f"--calibration_prior={prior}",
                                       f"--trials_annotation={trials_csv}",
                                       f"--calibration_trials={listed}"])
            rows.append(row(name, args.methods[0], prior,
                            f"test half {fit} ({len(fit_members)} speakers)",
                            f"test half {report} ({len(members)} speakers)", overall))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fout:
            command = shlex.join(sys.argv[1:] if argv is None else argv)
            fout.write(f"`python benchmarks/calibration.py {command}`\n\n" + text)
    print(text)
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
