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

from sb_angcl.evaluation.verification import run_verification
from sb_angcl.model_card import record_verification

if __name__ == "__main__":
    hparams, reports = run_verification(sys.argv[1:])
    for report in reports.values():  # the results and the calibration go into the model's folder
        record_verification(hparams["model_folder"], report)
