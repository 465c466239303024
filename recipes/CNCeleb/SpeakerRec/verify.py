#!/usr/bin/env python3
"""Score CN-Celeb1 eval with a trained encoder (sb-angcl).

Usage::

    python verify.py hparams/verification.yaml --data_folder=/path/to/cnceleb \
        --output_folder=results/ecapa_angcl_small/1986 \
        [--enrol_protocol=concat|average|both] [--score_norm=as-norm]

Scores every line of ``eval/lists/trials.lst`` (3,484,292 trials on the real
corpus) with the model ``train.py`` exported and reports EER and minDCF
(p_target 0.01, normalised) overall, per test genre, per enrolment genre and
per enrolment x test genre pair (``metrics*.csv``), with the scores file and
DET curve; the results and the calibration go into the exported folder.

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
