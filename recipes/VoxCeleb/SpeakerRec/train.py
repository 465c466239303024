#!/usr/bin/env python3
"""Train a speaker encoder on VoxCeleb with AAM-softmax + AM-SupCon (sb-angcl).

Usage::

    python train.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/VoxCeleb1

Any top-level YAML key can be overridden (``--margin=0.3 --balancing=fixed``).
Multi-GPU: ``torchrun --nproc_per_node=4 train.py hparams/... --data_folder=...``.

Authors
 * sb-angcl contributors
"""

from voxceleb_prepare import prepare_voxceleb

from sb_angcl.recipe import main


def prepare(hparams):
    """Write the manifests named in the YAML (skipped when already done)."""
    prepare_voxceleb(
        data_folder=hparams["data_folder"],
        save_folder=hparams["save_folder"],
        verification_pairs_file=hparams["verification_file"],
        dev_fraction=hparams["dev_fraction"],
        min_duration=hparams["min_duration"],
        sample_rate=hparams["sample_rate"],
        on_wrong_sample_rate=hparams["on_wrong_sample_rate"],
        strict=hparams["strict"],
        seed=hparams["seed"],
    )


if __name__ == "__main__":
    main(prepare)
