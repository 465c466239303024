#!/usr/bin/env python3
"""Train a speaker encoder on CN-Celeb with AAM-softmax + AM-SupCon (sb-angcl).

Usage::

    python train.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/cnceleb

``data_folder`` holds ``CN-Celeb_flac/`` (CN-Celeb1: dev speakers train, eval
tests) and ``CN-Celeb2_flac/`` (training). Any top-level YAML key can be
overridden (``--train_sets=[cnceleb1] --short_utterance_rule=drop``).

Authors
 * sb-angcl contributors
"""

from cnceleb_prepare import prepare_cnceleb

from sb_angcl.recipe import main


def prepare(hparams):
    """Write the manifests named in the YAML (skipped when already done)."""
    prepare_cnceleb(
        data_folder=hparams["data_folder"],
        save_folder=hparams["save_folder"],
        train_sets=hparams["train_sets"],
        dev_fraction=hparams["dev_fraction"],
        min_duration=hparams["min_duration"],
        short_utterance_rule=hparams["short_utterance_rule"],
        concat_min_duration=hparams["concat_min_duration"],
        sample_rate=hparams["sample_rate"],
        on_wrong_sample_rate=hparams["on_wrong_sample_rate"],
        strict=hparams["strict"],
        seed=hparams["seed"],
    )


if __name__ == "__main__":
    main(prepare)
