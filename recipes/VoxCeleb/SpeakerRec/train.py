#!/usr/bin/env python3
"""Train a speaker encoder on VoxCeleb with AAM-softmax + AM-SupCon (sb-angcl).

The system of Li, Mak & Meng, "Discriminative Speaker Representation via
Contrastive Learning with Class-Aware Attention in Angular Space" (ICASSP
2023): an ECAPA-TDNN trained on speaker-balanced batches with AAM-softmax
and an angular-margin supervised contrastive loss with class-aware attention,
the two balanced by MGDA-UB. The losses, the balancing and the Brain are in
the ``sb-angcl`` package (``pip install sb-angcl``).

Usage::

    python train.py hparams/train_ecapa_angcl.yaml --data_folder=/path/to/VoxCeleb1

Any top-level YAML key can be overridden (``--margin=0.3 --balancing=fixed``);
``--skip_prep=True --train_annotation=A.csv --valid_annotation=B.csv`` trains
on manifests made elsewhere (``ID,duration,wav,start,stop,spk_id``).
Multi-GPU: ``torchrun --nproc_per_node=4 train.py hparams/... --data_folder=...``.
The trained model is exported to ``<output_folder>/inference``; ``verify.py
hparams/verification.yaml --data_folder=... --output_folder=...`` scores it.

Authors
 * sb-angcl contributors
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main
from voxceleb_prepare import prepare_voxceleb

from sb_angcl.data.dataio import speaker_datasets
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.export import export_inference_folder
from sb_angcl.recipe import (
    log_to_experiment,
    prepare_and_size,
    report_skipped,
    start_from_pretrained,
)
from sb_angcl.training.brain import AngularContrastiveBrain


def prepare(hparams):
    """Writes the manifests named in the YAML (nothing to do with ``skip_prep``).

    Arguments
    ---------
    hparams : dict
        The YAML's plain settings (nothing built yet).
    """
    train_percent, dev_percent = hparams["split_ratio"]
    prepare_voxceleb(
        data_folder=hparams["data_folder"],
        save_folder=hparams["save_folder"],
        verification_pairs_file=hparams["verification_file"],
        dev_fraction=dev_percent / (train_percent + dev_percent),
        min_duration=hparams["min_duration"],
        sample_rate=hparams["sample_rate"],
        on_wrong_sample_rate=hparams["on_wrong_sample_rate"],
        strict=hparams["strict"],
        seed=hparams["seed"],
        skip_prep=hparams["skip_prep"],
    )


def dataio_prep(hparams):
    """Creates the training and validation datasets and the training batches.

    Arguments
    ---------
    hparams : dict
        The loaded YAML.

    Returns
    -------
    train_data : DynamicItemDataset
        Random ``sentence_len`` crops of ``train_annotation``.
    valid_data : DynamicItemDataset
        Fixed crops of ``valid_annotation`` (training speakers).
    label_encoder : CategoricalEncoder
        The training speakers (``<save_folder>/label_encoder.txt``).
    batch_sampler : SpeakerBalancedBatchSampler
        P x K batches: ``speakers_per_batch`` speakers, ``utterances_per_speaker`` each.
    """
    train_data, valid_data, label_encoder = speaker_datasets(
        {
            "train_annotation": hparams["train_annotation"],
            "valid_annotation": hparams["valid_annotation"],
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["save_folder"],
            "sentence_len": hparams["sentence_len"],
            "sample_rate": hparams["sample_rate"],
            "seed": hparams["seed"],
            "epoch_counter": hparams["epoch_counter"],
            "speed_perturb_speakers": hparams["speed_perturb_speakers"],
            "label_noise": hparams["label_noise"],
        }
    )
    batch_sampler = SpeakerBalancedBatchSampler.from_dataset(
        train_data,
        key="spk_id",
        speakers_per_batch=hparams["speakers_per_batch"],
        utterances_per_speaker=hparams["utterances_per_speaker"],
        seed=hparams["seed"],
        positives_across_sessions=hparams["positives_across_sessions"],
    )
    return train_data, valid_data, label_encoder, batch_sampler


def brain_hparams(hparams):
    """The settings the Brain reads: objective, augmentation, schedule, logging.

    Arguments
    ---------
    hparams : dict
        The loaded YAML.

    Returns
    -------
    dict
        The ``hparams`` of :class:`~sb_angcl.training.brain.AngularContrastiveBrain`
        (with the run options ``max_grad_norm`` and ``ckpt_interval_minutes``).
    """
    return {
        "objective": hparams["objective"],
        "augmentation": hparams["augmentation"],
        "positive_views": hparams["positive_views"],
        "feat_augment": hparams["feat_augment"],
        "wav_augment": hparams["wav_augment"],
        "lr_annealing": hparams["lr_annealing"],
        "max_grad_norm": hparams["max_grad_norm"],
        "epoch_counter": hparams["epoch_counter"],
        "error_stats": hparams["error_stats"],
        "train_logger": hparams["train_logger"],
        "ckpt_interval_minutes": hparams["ckpt_interval_minutes"],
        "checkpoints_to_keep": hparams["checkpoints_to_keep"],
    }


def train(argv, brain_class=AngularContrastiveBrain):
    """Prepares the data, trains, exports: ``python train.py hparams.yaml --key=value``.

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
    train_data, valid_data, label_encoder, batch_sampler = dataio_prep(hparams)
    # A trained model to start from: the YAML's pretrainer (pretrained_model: null = none).
    start_from_pretrained(hparams["pretrainer"], hparams["pretrained_model"])

    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=brain_hparams(hparams),
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs={**hparams["train_dataloader_opts"], "batch_sampler": batch_sampler},
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
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
