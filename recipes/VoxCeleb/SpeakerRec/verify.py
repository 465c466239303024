#!/usr/bin/env python3
"""Score the VoxCeleb trial list with a trained encoder (sb-angcl).

Usage::

    python verify.py hparams/verification.yaml --data_folder=/path/to/VoxCeleb1 \
        --output_folder=results/ecapa_angcl_small/1986 [--score_norm=as-norm]

Loads the model ``train.py`` exported (``<output_folder>/inference``), embeds
the trial utterances, scores every trial by cosine (or AS-norm), writes the
scores, the calibrated scores and ``metrics.csv`` (EER, minDCF at p_target
0.01, Cllr, minCllr, actDCF; overall, cross-language and same/cross session
when the corpus tells), and records the results and the calibration in the
exported folder.

Authors
 * sb-angcl contributors
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from sb_angcl.evaluation.verification import verify
from sb_angcl.model_card import record_verification

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    reports = verify(hparams, run_opts.get("device", "cpu"))
    for report in reports.values():
        record_verification(hparams["model_folder"], report)
