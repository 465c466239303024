"""The training options of the authors' recipe: two views, pseudo-speakers, label noise, fading.

* ``positive_views: 2``: each crop and an augmented copy of it, with the same
  label, both seen by both losses; the clean half is exactly the un-augmented
  features.
* ``speed_perturb_speakers``: every training utterance gets a copy per factor,
  a new speaker for the classifier; the crop is played that many times
  faster; enrolment and test speakers are untouched.
* ``label_noise``: a seeded fraction relabelled, the truth kept and reported.
* ``contrastive_fade_start`` / ``_end``: the contrastive share per epoch,
  continued by a resumed run.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.augment.augmenter import Augmenter
from speechbrain.augment.freq_domain import SpectrogramDrop
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization
from test_recipes import corpus  # noqa: F401  (the session's built-in corpus fixture)

from sb_angcl.data.dataio import derive_training_set, make_train_pipeline
from sb_angcl.objective.balancing import make_balancer
from sb_angcl.objective.joint import JointObjective, contrastive_share
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.training.brain import AngularContrastiveBrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOX = os.path.join(ROOT, "recipes", "VoxCeleb", "SpeakerRec")


class Recorder(torch.nn.Module):
    """An encoder that remembers the features it was given."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.seen = None

    def forward(self, feats, lens=None):
        self.seen = feats.detach().clone()
        return self.encoder(feats, lens)


def two_view_brain(views=2, augmentation="features"):
    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": Recorder(ECAPA_TDNN(20, channels=[16, 16, 16, 16, 48], lin_neurons=8)),
        "classifier": Classifier(8, out_neurons=3),
    }
    masks = Augmenter(
        min_augmentations=views - 1, max_augmentations=1,
        augmentations=[SpectrogramDrop(drop_length_low=3, drop_length_high=6,
                                       drop_count_low=2, drop_count_high=2, dim=2)],
    )
    hparams = {
        "objective": JointObjective(
            LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
            AngularSupConLoss(0.2, 0.07, attention_temperature=1 / 30),
            make_balancer("mgda_ub", alpha_min=0.3)),
        "augmentation": augmentation, "feat_augment": masks, "positive_views": views,
        "lr_annealing": None, "error_stats": None, "train_logger": None,
    }
    return AngularContrastiveBrain(
        modules, lambda p: torch.optim.SGD(p, 0.01), hparams, run_opts={"device": "cpu"}
    )


def batch_of(n=6, classes=3):
    gen = torch.Generator().manual_seed(1)
    return sb.dataio.batch.PaddedBatch([
        {"id": f"u{i}", "sig": torch.randn(4000, generator=gen),
         "spk_id_encoded": torch.LongTensor([i % classes])}
        for i in range(n)
    ])


def test_two_views_stack_a_clean_and_an_augmented_copy_with_the_same_labels():
    brain = two_view_brain()
    brain.on_fit_start()
    batch = batch_of()
    outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert outputs["embeddings"].shape[0] == 12
    labels = brain._labels(batch, sb.Stage.TRAIN)
    assert labels.reshape(-1).tolist() == [0, 1, 2, 0, 1, 2] * 2
    seen = brain.modules.embedding_model.seen
    wavs, lens = batch.sig
    clean = brain.modules.mean_var_norm(brain.modules.compute_features(wavs), lens)
    torch.testing.assert_close(seen[:6], clean)
    # The second view is masked: some bins differ in every sample, the rest are equal.
    differs = (seen[6:] != clean).flatten(1).any(dim=1)
    assert bool(differs.all())
    # Validation sees one view, unaugmented.
    assert brain.compute_forward(batch, sb.Stage.VALID)["embeddings"].shape[0] == 6
    loss = brain.fit_batch(batch)
    assert torch.isfinite(loss)


def test_one_view_keeps_the_batch():
    brain = two_view_brain(views=1)
    brain.on_fit_start()
    batch = batch_of()
    assert brain.compute_forward(batch, sb.Stage.TRAIN)["embeddings"].shape[0] == 6
    assert brain._labels(batch, sb.Stage.TRAIN).numel() == 6


@pytest.mark.parametrize("views,augmentation,message", [
    (2, "none", "augmentation is none"), (3, "features", "must be 1 or 2")])
def test_views_refused_without_augmentation_or_out_of_range(views, augmentation, message):
    brain = two_view_brain(views=2, augmentation=augmentation)
    brain.hparams.positive_views = views
    with pytest.raises(ValueError, match=message):
        brain.on_fit_start()


def rows(n=40, speakers=4):
    return sb.dataio.dataset.DynamicItemDataset({
        f"s{i % speakers}--v{i % 3}--{i:05d}": {
            "spk_id": f"s{i % speakers}", "duration": 3.0, "true_spk_id": f"s{i % speakers}",
            "label_noise": "0"}
        for i in range(n)
    })


def test_pseudo_speakers_are_new_classes_with_shorter_copies():
    data = rows()
    out = derive_training_set(data, [0.9, 1.1])
    assert len(out) == 3 * len(data)
    speakers = {r["spk_id"] for r in out.data.values()}
    assert speakers == {f"s{k}{suffix}" for k in range(4) for suffix in ("", "@sp0.9", "@sp1.1")}
    copy = out.data["s1--v1--00001@sp1.1"]
    assert copy["speed"] == 1.1 and copy["duration"] == pytest.approx(3.0 / 1.1)
    assert out.data["s1--v1--00001"]["speed"] == 1.0
    # The session is still the video part of the ID (positives across sessions).
    from sb_angcl.data.epoch_plan import session_from_id
    assert session_from_id("s1--v1--00001@sp1.1") == "v1"
    assert derive_training_set(data, []) is data


def test_label_noise_is_seeded_exact_and_keeps_the_truth():
    data = rows(n=200, speakers=5)
    a = derive_training_set(data, label_noise=0.2, seed=4)
    b = derive_training_set(data, label_noise=0.2, seed=4)
    c = derive_training_set(data, label_noise=0.2, seed=5)
    noisy = {uid for uid, r in a.data.items() if r["label_noise"] == 1}
    assert len(noisy) == 40
    assert noisy == {uid for uid, r in b.data.items() if r["label_noise"] == 1}
    assert noisy != {uid for uid, r in c.data.items() if r["label_noise"] == 1}
    for uid, row in a.data.items():
        assert row["true_spk_id"] == data.data[uid]["spk_id"]
        assert (row["spk_id"] != row["true_spk_id"]) == (uid in noisy)
    # Noise first, then the copies: a mislabelled utterance's copies are mislabelled too.
    both = derive_training_set(data, [0.9], label_noise=0.2, seed=4)
    assert sum(r["label_noise"] for r in both.data.values()) == 80


@pytest.mark.parametrize("factors,noise,message", [
    ([1.0], 0.0, "other than 1"), ([0.9, 0.9], 0.0, "distinct"), ([-1], 0.0, "positive"),
    ([], 1.0, r"\[0, 1\)")])
def test_bad_derivation_settings_are_refused(factors, noise, message):
    with pytest.raises(ValueError, match=message):
        derive_training_set(rows(), factors, label_noise=noise)


def test_speed_copy_is_played_faster(tmp_path):
    rate, seconds, tone = 16000, 3.0, 400.0
    t = np.arange(int(rate * seconds)) / rate
    path = tmp_path / "tone.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * tone * t)).astype("float32"), rate)
    pipeline = make_train_pipeline(1.0, rate, seed=0, with_speed=True)
    assert pipeline.takes == ("id", "wav", "start", "stop", "speed")
    for speed in (1.0, 1.25, 0.8):
        sig, bad = pipeline.func("u", str(path), 0, len(t), speed)
        assert sig.shape == (rate,) and bad == 0
        peak = np.argmax(np.abs(np.fft.rfft(sig.numpy()))) * rate / len(sig)
        assert peak == pytest.approx(tone * speed, abs=3.0)


def test_contrastive_share_schedule():
    assert [contrastive_share(e, 2, 4) for e in range(1, 6)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="after contrastive_fade_start"):
        contrastive_share(1, 4, 4)


def train_vox(corpus_root, out, *flags):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=VOX + os.pathsep + ROOT)
    cmd = [sys.executable, os.path.join(VOX, "train.py"),
           os.path.join(VOX, "hparams", "train_ecapa_angcl_small.yaml"),
           f"--data_folder={os.path.join(corpus_root, 'VoxCeleb1')}", f"--output_folder={out}",
           "--speakers_per_batch=2", "--utterances_per_speaker=2", "--sentence_len=1.0",
           "--channels=16", "--attention_channels=8", "--emb_dim=16", "--projection_dim=16",
           "--n_mels=20", "--device=cpu", "--noprogressbar", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def epoch_shares(train_log):
    shares = {}
    with open(train_log, encoding="utf-8") as fin:
        for line in fin:
            epoch = int(line.split("epoch: ")[1].split(",")[0])
            shares[epoch] = float(line.split("con_share: ")[1].split(",")[0])
    return shares


def test_recipe_pseudo_speakers_noise_views_and_a_resumed_fade(corpus, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    # A tagged override (--key='!ref ...'): 2 // 2 = 3 // 2 = 1, the last full epoch.
    fade = ["--contrastive_fade_start=!ref <number_of_epochs> // 2", "--contrastive_fade_end=3",
            "--positive_views=2", "--speed_perturb_speakers=[0.9,1.1]", "--label_noise=0.25"]
    proc = train_vox(corpus, out, "--number_of_epochs=2", *fade)
    save = os.path.join(out, "save")
    train = read_csv(os.path.join(save, "train.csv"))
    derived = read_csv(os.path.join(save, "train_derived.csv"))
    assert len(derived) == 3 * len(train)
    originals = [r for r in derived if r["speed"] == "1.0"]
    assert sum(r["label_noise"] == "1" for r in originals) == round(0.25 * len(train))
    with open(os.path.join(save, "label_encoder.txt"), encoding="utf-8") as fin:
        classes = [line for line in fin if line.startswith("'") and "starting_index" not in line]
    assert len(classes) == 3 * len({r["spk_id"] for r in train})
    for name in ("enrol.csv", "test.csv"):
        assert not any("@sp" in r["spk_id"] or "@sp" in r["ID"]
                       for r in read_csv(os.path.join(save, name)))
    assert "x 2 view(s)" in proc.stderr + proc.stdout + open(
        os.path.join(out, "log.txt"), encoding="utf-8").read()
    train_log = os.path.join(out, "train_log.txt")
    assert epoch_shares(train_log) == {1: 1.0, 2: 0.5}
    # Resumed for a third epoch: the schedule continues from the epoch counter.
    train_vox(corpus, out, "--number_of_epochs=3", *fade)
    assert epoch_shares(train_log) == {1: 1.0, 2: 0.5, 3: 0.0}
