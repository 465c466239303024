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

import sys

import speechbrain as sb
from cnceleb_prepare import prepare_cnceleb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

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
