#!/usr/bin/env python3
"""Score the VoxCeleb trial list with a trained encoder (sb-angcl).

Usage (same YAML and overrides as training)::

    python verify.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/VoxCeleb1

Embeds the trial utterances with the best checkpoint, scores every trial by
cosine (``--score_norm=as-norm`` for AS-norm), writes the scores file and
prints EER and minDCF (p_target 0.01), overall and cross-language when the
corpus has languages.

Authors
 * sb-angcl contributors
"""

from sb_angcl.evaluation.verification import main

if __name__ == "__main__":
    main()
