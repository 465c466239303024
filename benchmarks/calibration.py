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
* ``calibration_trials: dev``: trials built from ``dev.csv``, held-out
  utterances of the training speakers (a fit that fails is reported as such).
* Speaker halves: the test speakers, sorted, are split by position (even /
  odd); the calibration is fitted on the trials among one half (given as a
  list) and reported on the trials among the other, and the other way round:
  one fit, on speakers disjoint from the reported ones, both unseen in
  training (the cross-half non-target trials are in neither).

The last line is ``ratio <actDCF / minDCF>`` of the recipe's default
calibration (the first method and prior) on all test trials.

Example::

    cp -r /work/abl/s7/runs/default/seed1986 /tmp/run
    python benchmarks/calibration.py --run /tmp/run --data_folder /path/to/vox \\
        --hparams recipes/VoxCeleb/SpeakerRec/hparams/train_ecapa_angcl_small.yaml \\
        --override seed=1986 number_of_epochs=15 export_folder=null

Authors
 * sb-angcl contributors
"""

import argparse
import json
import os
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sb_angcl.verification import run_verification  # noqa: E402

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


def verify(args, extra):
    """The overall metrics row and the fitted calibration of one verify run."""
    fitted = os.path.join(args.run, "calibration.json")
    if os.path.exists(fitted):
        os.remove(fitted)
    argv = [args.hparams, f"--data_folder={args.data_folder}", f"--output_folder={args.run}",
            "--device=cpu", "--noprogressbar"]
    argv += [f"--{item}" for item in args.override] + extra
    table = run_verification(argv)
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
    parser.add_argument("--run", required=True, help="a copy of a finished run folder")
    parser.add_argument("--hparams", required=True, help="the run's recipe YAML")
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--override", nargs="*", default=[], help="key=value of the run")
    parser.add_argument("--name", default=None, help="model name in the table (default: run folder)")
    parser.add_argument("--methods", nargs="+", default=["linear", "qmf"])
    parser.add_argument("--priors", nargs="+", type=float, default=[0.01, 0.5])
    parser.add_argument("--output", default=None, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    name = args.name or os.path.basename(os.path.normpath(args.run))
    rows = []
    overall, _ = verify(args, ["--calibration=none"])
    rows.append(row(name, "none (raw cosine)", "-", "-", "all test trials", overall))
    ratio = None
    for method in args.methods:
        for prior in args.priors:
            overall, _ = verify(args, [f"--calibration={method}", f"--calibration_prior={prior}"])
            rows.append(row(name, method, prior, "other test speakers (folds)", "all test trials",
                            overall))
            if ratio is None:
                ratio = overall["actDCF"] / overall["minDCF"]
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
            fout.write(f"`python benchmarks/calibration.py {' '.join(argv or sys.argv[1:])}`\n\n"
                       + text)
    print(text)
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
