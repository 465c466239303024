#!/usr/bin/env python3
"""Score CN-Celeb1 eval with a trained encoder (sb-angcl).

Usage (same YAML and overrides as training)::

    python verify.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/cnceleb \
        [--enrol_protocol=concat|average|both] [--score_norm=as-norm]

Scores every line of ``eval/lists/trials.lst`` (3,484,292 trials on the real
corpus) and reports EER and minDCF (p_target 0.01, normalised) overall, per
test genre, per enrolment genre and per enrolment x test genre pair
(``metrics*.csv``), with the scores file and DET curve.

Authors
 * sb-angcl contributors
"""

from sb_angcl.evaluation.verification import main

if __name__ == "__main__":
    main()
