#!/usr/bin/env python3
"""Train a speaker encoder on VoxCeleb with AAM-softmax + AM-SupCon (sb-angcl).

Usage::

    python train.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/VoxCeleb1

Any top-level YAML key can be overridden (``--margin=0.3 --balancing=fixed``).
Multi-GPU: ``torchrun --nproc_per_node=4 train.py hparams/... --data_folder=...``.

Authors
 * sb-angcl contributors
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main
from voxceleb_prepare import prepare_voxceleb

from sb_angcl.data.dataio import speaker_datasets
from sb_angcl.export import export_inference_folder
from sb_angcl.recipe import (
    log_to_experiment,
    prepare_and_size,
    report_skipped,
    start_from_pretrained,
    train_loader_kwargs,
    valid_loader_kwargs,
)
from sb_angcl.training.brain import AngularContrastiveBrain


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


def train(argv, brain_class=AngularContrastiveBrain):
    """Prepare the data, train, export: ``python train.py hparams.yaml --key=value``.

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value, ...]``.
    brain_class : type
        The Brain to train with.

    Returns
    -------
    brain : AngularContrastiveBrain
        The trained Brain (best checkpoint loaded).
    hparams : dict
        The loaded hyperparameters.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with log_to_experiment():  # data preparation's reports go to log.txt too
        # Manifests, then the classifier size from the label encoder they give.
        overrides = prepare_and_size(hparams_file, overrides, prepare)
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
    # The MUSAN and RIR file lists of the YAML's noise augmentation (musan_folder, rir_folder).
    run_on_main(hparams["prepare_noise_lists"])
    train_data, valid_data, label_encoder = speaker_datasets(hparams)
    # A trained model to start from: the YAML's pretrainer (pretrained_model: null = none).
    start_from_pretrained(hparams["pretrainer"], hparams["pretrained_model"])

    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_loader_kwargs(hparams, train_data),
        valid_loader_kwargs=valid_loader_kwargs(hparams),
    )
    report_skipped(brain)

    brain.checkpointer.recover_if_possible(min_key="ErrorRate")
    if hparams["export_folder"] and if_main_process():
        export_inference_folder(
            hparams["export_folder"],
            hparams_file,
            brain.modules.embedding_model,
            brain.modules.classifier,
            label_encoder,
            overrides=overrides,
        )
    return brain, hparams


if __name__ == "__main__":
    train(sys.argv[1:])
