"""Reliability: bad data, interrupted training, non-finite losses, seeding.

End to end through the VoxCeleb recipe (``recipes/VoxCeleb/SpeakerRec``) on
corpora from the built-in generator (:mod:`synthetic_corpus`), plus
Brain-level tests where a single batch must be controlled:

* a corpus holding several defects at once (truncated, header-only, empty and
  text-as-wav files, an 8 kHz file, a 0.3 s utterance, a one-utterance
  speaker) goes through ``train.py``'s entry (its ``train``
  with the recipe's ``prepare``): each defect has its documented outcome and
  message, and the result trains; a trial naming a missing file is a clear
  error (the unit-level rules are in ``tests/test_prepare.py``);
* one-utterance speakers (repeated K times by the sampler) and one-speaker
  batches train without NaN;
* a run killed with SIGKILL mid-epoch resumes, when the same command is run
  again, from its last intra-epoch checkpoint, continuing the same epoch plan
  of the sampler, and ends with ``number_of_epochs`` epochs; a checkpoint
  half-written by a killed run is set aside instead of breaking the resume;
* a non-finite loss or gradient is skipped without touching the weights or
  the BatchNorm statistics, and too many in a row raise NonFiniteLossError;
* the same seed gives the same first training steps.

Everything runs on CPU with one intra-op thread (two threads on a busy
two-core machine are many times slower for these tiny models).
"""

import csv
import importlib.util
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from sb_angcl.data.dataio import speaker_datasets
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.objective.balancing import make_balancer
from sb_angcl.objective.joint import JointObjective
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.training.brain import AngularContrastiveBrain, NonFiniteLossError
from synthetic_corpus import generate_corpus

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "recipes" / "VoxCeleb" / "SpeakerRec"
HPARAMS = RECIPE_DIR / "hparams" / "train_ecapa_angcl_small.yaml"
SR = 16000

#: A model and batches small enough for a test (the YAML's keys).
SMALL = [
    "--speakers_per_batch=2",
    "--utterances_per_speaker=2",
    "--channels=16",
    "--emb_dim=16",
    "--n_mels=20",
    "--attention_channels=16",
    "--sentence_len=1.0",
    "--device=cpu",
]


# ------------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures("one_thread")


def make_corpus(folder, speakers=6, utterances=4):
    """A small VoxCeleb-layout corpus; returns the VoxCeleb1 root."""
    generate_corpus(
        str(folder),
        layout="voxceleb",
        num_speakers=speakers,
        num_utterances=utterances,
        num_sessions=2,
        duration_min=1.0,
        duration_max=1.5,
        short_fraction=0.0,
        seed=0,
        progress=False,
    )
    return Path(folder) / "VoxCeleb1"


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory):
    """6 speakers (4 for training) x 4 utterances, shared by several tests."""
    return make_corpus(tmp_path_factory.mktemp("clean"))


def load_recipe_train():
    """The VoxCeleb recipe's ``train.py`` as a module (its ``prepare``)."""
    sys.path.insert(0, str(RECIPE_DIR))
    try:
        spec = importlib.util.spec_from_file_location(
            "voxceleb_recipe_train", RECIPE_DIR / "train.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RECIPE_DIR))
    return module


class RecordingBrain(AngularContrastiveBrain):
    """The recipe's Brain, noting every training batch (ids and loss)."""

    records: ClassVar[list] = []

    def fit_batch(self, batch):
        loss = super().fit_batch(batch)
        RecordingBrain.records.append(
            {"step": self.step, "ids": list(batch.id), "loss": float(loss)}
        )
        return loss


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def trial_speakers(root):
    """Speakers named in the trial list (never trained on)."""
    lines = (root / "meta" / "veri_test2.txt").read_text().split("\n")
    return {p.split("/")[0] for line in lines if line for p in line.split()[1:]}


def train_files(root):
    """{speaker: [wav paths]} for the training speakers, sorted."""
    excluded = trial_speakers(root)
    out = {}
    for spk in sorted(os.listdir(root / "wav")):
        if spk not in excluded:
            out[spk] = sorted((root / "wav" / spk).glob("*/*.wav"))
    return out


def write_tone(path, seconds, rate=SR, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.05 * rng.standard_normal(
        t.size
    )
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")


# ---------------------------------------------------------- 1. bad data
def test_recipe_entry_on_corpus_with_several_defects(tmp_path, restore_logging):
    root = make_corpus(tmp_path / "corpus", speakers=6, utterances=6)
    files = train_files(root)
    spk = list(files)
    assert len(spk) == 4
    # One defect of each kind, all in training speakers, all at once.
    cut = files[spk[0]][0]  # WAV cut in its data: kept, with its true length
    data = cut.read_bytes()
    cut.write_bytes(data[: 44 + (len(data) - 44) * 7 // 10])
    cut_frames = sf.info(str(cut)).frames
    header_only = files[spk[0]][1]
    header_only.write_bytes(data[:30])
    empty = files[spk[1]][0]
    empty.write_bytes(b"")
    text = files[spk[1]][1]
    text.write_text("this is not audio\n")
    low_rate = files[spk[2]][0]
    write_tone(low_rate, 1.2, rate=8000)
    short = files[spk[3]][0]
    write_tone(short, 0.3)
    single = root / "wav" / "id10099" / "onlyvideo01" / "00001.wav"
    write_tone(single, 1.2, seed=3)
    unreadable = [header_only, empty, text]

    out = tmp_path / "out"
    argv = [
        str(HPARAMS),
        f"--data_folder={root}",
        f"--output_folder={out}",
        *SMALL,
        "--debug",
        "--debug_batches=2",
        "--debug_epochs=1",
    ]
    train_module = load_recipe_train()
    RecordingBrain.records = []
    brain, hparams = train_module.train(argv, brain_class=RecordingBrain)

    # The summary counts each outcome.
    summary = json.loads((out / "save" / "prepare_summary.json").read_text())
    assert summary["skipped"] == {"unreadable": 3, "too_short": 1}
    assert summary["adjusted"] == {"resampled": 1}
    listed = summary["skipped_files"]["unreadable"]
    assert sorted(entry.split(" (")[0] for entry in listed) == sorted(
        map(str, unreadable)
    )
    # One warning names every unreadable file, one the resampled file; the
    # min_duration rule is reported too (the messages a user reads in log.txt).
    log = (out / "log.txt").read_text()
    assert "Skipped 3 unreadable or empty audio file(s)" in log
    for path in unreadable:
        assert str(path) in log
    assert re.search(r"1 audio file\(s\) are not at 16000 Hz; they are kept", log)
    assert f"{low_rate} (8000 Hz)" in log
    assert "Dropped 1 training utterance(s) shorter than min_duration=0.50 s" in log
    # The manifests follow the documented rules.
    rows = {
        r["ID"]: r
        for r in read_csv(out / "save" / "train.csv")
        + read_csv(out / "save" / "dev.csv")
    }

    def rel(path):
        return str(path.relative_to(root / "wav"))

    for gone in unreadable + [short]:
        assert rel(gone) not in rows
    assert int(rows[rel(cut)]["stop"]) == cut_frames
    assert float(rows[rel(cut)]["duration"]) == pytest.approx(cut_frames / SR, abs=1e-3)
    assert int(rows[rel(low_rate)]["sample_rate"]) == 8000
    assert float(rows[rel(low_rate)]["duration"]) == pytest.approx(1.2, abs=1e-3)
    train_ids = {r["ID"] for r in read_csv(out / "save" / "train.csv")}
    assert rel(single) in train_ids  # a one-utterance speaker is kept for training
    assert hparams["out_n_neurons"] == 5  # 4 generated speakers + id10099
    # It trained, and every kept row loads at the model rate.
    assert len(RecordingBrain.records) == 2
    assert all(math.isfinite(r["loss"]) for r in RecordingBrain.records)
    train_data, _, _ = speaker_datasets(hparams)
    for i in range(len(train_data)):
        sig = train_data[i]["sig"]
        assert sig.shape == (SR,) and bool(torch.isfinite(sig).all())
    assert brain.skipped_nonfinite == 0

    # A trial naming a missing file: a clear error, before any training.
    trials = root / "meta" / "veri_test2.txt"
    first = trials.read_text().split("\n")[0].split()
    trials.write_text(
        trials.read_text()
        + f"1 {first[1]} {first[1].split('/')[0]}/gone12345ab/00009.wav\n"
    )
    RecordingBrain.records = []
    with pytest.raises(ValueError) as err:
        train_module.train(argv, brain_class=RecordingBrain)
    message = str(err.value)
    assert str(trials.resolve()) in message and "missing" in message
    assert "gone12345ab/00009.wav" in message
    assert "data_folder" in message  # says what to check
    assert RecordingBrain.records == []


# ------------------------------------------- Brain-level helpers (2, 4)
def small_brain(
    num_classes, brain_class=AngularContrastiveBrain, checkpointer=None, **hparams
):
    """A tiny ECAPA Brain with the recipe's objective (no augmentation)."""
    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(20, channels=[16, 16, 16, 16, 48], lin_neurons=8),
        "classifier": Classifier(8, out_neurons=num_classes),
    }
    hp = {
        "objective": JointObjective(
            LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30)),
            AngularSupConLoss(0.2, 0.07, attention_temperature=1.0),
            make_balancer("mgda_ub"),
        ),
        "augmentation": "none",
        "positive_views": 1,
        "lr_annealing": None,
        "error_stats": None,
        "train_logger": None,
        "checkpoints_to_keep": 1,
        **hparams,
    }
    if checkpointer is not None:
        checkpointer.add_recoverables(
            {k: modules[k] for k in ("embedding_model", "classifier")}
        )
    return brain_class(
        modules,
        lambda params: torch.optim.Adam(params, lr=0.01),
        hp,
        run_opts={"device": "cpu"},
        checkpointer=checkpointer,
    )


def waveform(seed, seconds=0.5):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * math.pi * (120 + 30 * seed) * t) + 0.05 * torch.randn(
        t.shape, generator=gen
    )


def make_batch(labels, seeds=None, nan=False):
    seeds = range(len(labels)) if seeds is None else seeds
    items = []
    for i, (label, seed) in enumerate(zip(labels, seeds)):
        sig = waveform(seed)
        if nan:
            sig = torch.full_like(sig, float("nan"))
        items.append(
            {"id": f"u{i}", "sig": sig, "spk_id_encoded": torch.LongTensor([label])}
        )
    return sb.dataio.batch.PaddedBatch(items)


def state(brain):
    """Every parameter and buffer, cloned."""
    return {k: v.detach().clone() for k, v in brain.modules.state_dict().items()}


def changed(before, after):
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


class PartsBrain(AngularContrastiveBrain):
    """Notes the two losses and alpha of every optimised batch."""

    def on_fit_start(self):
        super().on_fit_start()
        self.parts, self.batch_ids = [], []

    def fit_batch(self, batch):
        self.batch_ids.append(list(batch.id))
        return super().fit_batch(batch)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        skipped = self.skips.skipping
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        if not skipped:
            parts = outputs["objective"]
            self.parts.append(
                (float(parts.loss_cls.detach()), float(parts.loss_con.detach()), float(parts.alpha))
            )


# -------------------------------------------- 2. degenerate speakers
def test_single_utterance_speakers_train_without_nan():
    # Speakers 0-3 have one utterance each, speakers 4 and 5 three: six
    # groups of K = 3, three batches of two speakers, nothing dropped.
    spk = [0, 1, 2, 3, 4, 4, 4, 5, 5, 5]
    data = {
        f"u{i}": {"spk_id": f"s{s}", "label": s, "seed": i} for i, s in enumerate(spk)
    }
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("seed", "label")
    @sb.utils.data_pipeline.provides("sig", "spk_id_encoded")
    def pipeline(seed, label):
        yield waveform(seed)
        yield torch.LongTensor([label])

    dataset.add_dynamic_item(pipeline)
    dataset.set_output_keys(["id", "sig", "spk_id_encoded"])
    sampler = SpeakerBalancedBatchSampler.from_dataset(
        dataset, speakers_per_batch=2, utterances_per_speaker=3, seed=1
    )
    brain = small_brain(6, brain_class=PartsBrain)
    classifier_before = brain.modules.classifier.weight.detach().clone()
    brain.fit(range(1, 3), dataset, train_loader_kwargs={"batch_sampler": sampler})

    assert len(sampler) == 3 and sampler.num_dropped_groups == 0
    assert len(brain.parts) == len(brain.batch_ids) == 2 * len(sampler)
    for loss_cls, loss_con, alpha in brain.parts:
        assert (
            math.isfinite(loss_cls) and math.isfinite(loss_con) and math.isfinite(alpha)
        )
    assert brain.skipped_nonfinite == 0
    # The sampler repeated each single utterance K = 3 times in its batch ...
    repeated = {i for ids in brain.batch_ids for i in ids if ids.count(i) == 3}
    assert {"u0", "u1", "u2", "u3"} <= repeated
    # ... and the classifier learnt every one-utterance speaker.
    moved = (brain.modules.classifier.weight.detach() - classifier_before).norm(dim=-1)
    assert bool((moved.reshape(-1)[:4] > 0).all())
    for p in brain.modules.parameters():
        assert bool(torch.isfinite(p).all())


def test_one_speaker_batch_trains_with_warning(caplog):
    brain = small_brain(3, brain_class=PartsBrain)
    brain.on_fit_start()
    before = state(brain)
    with caplog.at_level(logging.WARNING, logger="sb_angcl.objective.losses"):
        loss = brain.fit_batch(make_batch([1, 1]))
    messages = [r.getMessage() for r in caplog.records if r.name == "sb_angcl.objective.losses"]
    assert any("single speaker" in m and "no negatives" in m for m in messages)
    assert bool(torch.isfinite(loss))
    # Two utterances, no negatives: each anchor's only term is its positive,
    # so the contrastive loss is exactly 0 with a zero gradient, and MGDA
    # puts all the weight on the classification loss.
    loss_cls, loss_con, alpha = brain.parts[-1]
    assert math.isfinite(loss_cls) and loss_con == pytest.approx(0.0, abs=1e-6)
    assert alpha == 1.0
    assert any(k.startswith("classifier") for k in changed(before, state(brain)))


# ------------------------------------------------ 4. non-finite values
def test_nonfinite_loss_is_skipped_and_weights_untouched(caplog):
    brain = small_brain(3)
    brain.on_fit_start()
    before = state(brain)
    with caplog.at_level(logging.WARNING, logger="sb_angcl.training.brain"):
        loss = brain.fit_batch(make_batch([0, 0, 1, 1], nan=True))
    assert not bool(torch.isfinite(loss))
    # Parameters *and* BatchNorm running statistics are as before.
    assert changed(before, state(brain)) == []
    assert brain.optimizer.state_dict()["state"] == {}  # Adam never stepped
    assert all(p.grad is None for p in brain.modules.parameters())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "Non-finite loss" in m and "batch skipped, weights untouched" in m and "u0" in m
        for m in warnings
    )
    assert brain.skipped_nonfinite == 1
    # A good batch afterwards trains normally (and resets the run of NaNs).
    brain.fit_batch(make_batch([0, 0, 1, 1]))
    after_good = state(brain)
    assert changed(before, after_good)
    assert all(bool(torch.isfinite(v.float()).all()) for v in after_good.values())


def test_nonfinite_gradient_is_skipped(caplog):
    brain = small_brain(3)
    brain.on_fit_start()
    before = state(brain)
    weight = brain.modules.classifier.weight
    hook = weight.register_hook(lambda grad: grad * float("inf"))
    try:
        with caplog.at_level(logging.WARNING, logger="sb_angcl.training.brain"):
            loss = brain.fit_batch(make_batch([0, 0, 1, 1]))
    finally:
        hook.remove()
    assert bool(torch.isfinite(loss))  # the loss was fine, its gradient not
    assert changed(before, state(brain)) == []
    assert any("Non-finite gradient" in r.getMessage() for r in caplog.records)
    assert brain.skipped_nonfinite == 1


def test_repeated_nonfinite_losses_raise_after_patience(caplog):
    brain = small_brain(3)
    brain.on_fit_start()
    assert brain.nonfinite_patience == 3  # SpeechBrain's run option default
    bad, good = make_batch([0, 0, 1, 1], nan=True), make_batch([0, 0, 1, 1])
    with caplog.at_level(logging.WARNING, logger="sb_angcl.training.brain"):
        brain.fit_batch(bad)
        brain.fit_batch(good)  # the count starts again
        for _ in range(3):
            brain.fit_batch(bad)  # 3 in a row: still within patience
        with pytest.raises(NonFiniteLossError) as err:
            brain.fit_batch(bad)
    message = str(err.value)
    assert "4 consecutive batches had a non-finite loss" in message
    assert "--precision=fp32" in message and "last checkpoint" in message
    assert brain.skipped_nonfinite == 5


def test_skipped_batch_leaves_epoch_loss_finite():
    """Through Brain.fit: the logged train loss is the mean of the good batches."""
    brain = small_brain(3, brain_class=PartsBrain)
    batches = [
        make_batch([0, 0, 1, 1]),
        make_batch([0, 0, 1, 1], nan=True),
        make_batch([1, 1, 2, 2]),
    ]
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, collate_fn=lambda b: b
    )
    brain.fit(range(1, 2), loader)
    assert brain.skipped_nonfinite == 1 and len(brain.parts) == 2
    stats = brain.train_stats
    assert math.isfinite(stats["loss"]) and math.isfinite(stats["loss_cls"])
    expected_cls = sum(p[0] for p in brain.parts) / 2
    assert stats["loss_cls"] == pytest.approx(expected_cls, rel=1e-6)


# ------------------------------------------ 3. interruption and resume
def test_half_written_checkpoint_is_set_aside(tmp_path, caplog):
    """A run killed while saving leaves CKPT.yaml and a partial file set."""
    save = tmp_path / "save"
    brain = small_brain(3, checkpointer=Checkpointer(save))
    brain.on_fit_start()
    brain.fit_batch(make_batch([0, 0, 1, 1]))
    good = brain.checkpointer.save_checkpoint(end_of_epoch=False, name="good")
    good_weights = state(brain)
    brain.fit_batch(make_batch([1, 1, 2, 2]))
    time.sleep(0.01)
    broken = brain.checkpointer.save_checkpoint(end_of_epoch=False, name="newer")
    blob = broken.paramfiles["embedding_model"].read_bytes()
    broken.paramfiles["embedding_model"].write_bytes(blob[: len(blob) // 3])
    broken.paramfiles["optimizer"].unlink()

    # Plain SpeechBrain picks the newest folder and fails on it.
    plain = Checkpointer(save, dict(brain.checkpointer.recoverables))
    with pytest.raises(RuntimeError):
        plain.recover_if_possible()

    resumed = small_brain(3, checkpointer=Checkpointer(save))
    torch.nn.init.zeros_(resumed.modules.classifier.weight)
    with caplog.at_level(logging.WARNING, logger="sb_angcl.training.brain"):
        resumed.on_fit_start()
    assert changed(good_weights, state(resumed)) == []
    assert not (save / "CKPT+newer").exists()
    assert (save / "INCOMPLETE-CKPT+newer").is_dir()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "CKPT+newer is incomplete" in message
    assert (
        "embedding_model.ckpt truncated" in message
        and "optimizer.ckpt missing" in message
    )
    assert [c.path.name for c in resumed.checkpointer.list_checkpoints()] == [
        good.path.name
    ]


RECORD_SCRIPT = """
import json, os, sys, time
sys.path.insert(0, {recipe!r})
import train as recipe_train
from sb_angcl.training.brain import AngularContrastiveBrain

class RecordingBrain(AngularContrastiveBrain):
    def fit_batch(self, batch):
        loss = super().fit_batch(batch)
        with open({log!r}, "a") as f:
            f.write(json.dumps({{"pid": os.getpid(),
                                "epoch": self.hparams.epoch_counter.current,
                                "step": self.step, "ids": list(batch.id),
                                "loss": float(loss)}}) + "\\n")
        time.sleep(0.25)  # leaves the test time to kill us between two steps
        return loss

if __name__ == "__main__":
    recipe_train.train(sys.argv[1:], brain_class=RecordingBrain)
"""


def read_records(path):
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return out


def intra_epoch_checkpoints(save):
    """(epoch, steps done) of every complete intra-epoch checkpoint."""
    found = []
    for ckpt in save.glob("CKPT+*"):
        try:
            meta = (ckpt / "CKPT.yaml").read_text()
            steps = int((ckpt / "dataloader-TRAIN.ckpt").read_text())
            epoch = int((ckpt / "counter.ckpt").read_text())
        except (OSError, ValueError):
            continue
        if "brain_intra_epoch_ckpt" in meta:
            found.append((epoch, steps))
    return found


def test_sigkill_mid_epoch_then_rerun_resumes(tmp_path, clean_corpus):
    script = tmp_path / "train_recording.py"
    batch_log = tmp_path / "batches.jsonl"
    script.write_text(RECORD_SCRIPT.format(recipe=str(RECIPE_DIR), log=str(batch_log)))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(script),
        str(HPARAMS),
        f"--data_folder={clean_corpus}",
        f"--output_folder={out}",
        *SMALL,
        "--number_of_epochs=2",
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))

    with open(tmp_path / "first_run.err", "w") as stderr:
        first = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        deadline = time.time() + 150
        try:
            while time.time() < deadline and first.poll() is None:
                records = read_records(batch_log)
                if any(r["epoch"] == 2 and r["step"] >= 2 for r in records):
                    break
                time.sleep(0.02)
            else:
                pytest.fail(
                    "the first run never reached step 2 of epoch 2: "
                    + (tmp_path / "first_run.err").read_text()[-3000:]
                )
            # Step 2 of epoch 2 is running, so step 1's checkpoint is on disk.
            saved = intra_epoch_checkpoints(out / "save")
            assert any(epoch == 2 and steps >= 1 for epoch, steps in saved), saved
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == -signal.SIGKILL
    killed = read_records(batch_log)

    second = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = [r for r in read_records(batch_log) if r["pid"] != first.pid]

    # The rerun went on with epoch 2 where the checkpoint left it ...
    assert resumed and all(r["epoch"] == 2 for r in resumed)
    resumed_from = resumed[0]["step"] - 1
    assert resumed_from >= 1
    log = (out / "log.txt").read_text()  # both runs append to it
    assert log.count("Would load a checkpoint here, but none found yet") == 1
    assert (
        len(re.findall(r"Loading a checkpoint from .*CKPT\+", log)) == 2
    )  # resume, best
    # ... following the sampler's plan for epoch 2 (no batch lost, none twice).
    train = sb.dataio.dataset.DynamicItemDataset.from_csv(
        str(out / "save" / "train.csv")
    )
    # the same sampler options as the recipe YAML the run used
    plan = SpeakerBalancedBatchSampler.from_dataset(
        train, speakers_per_batch=2, utterances_per_speaker=2, seed=1986,
        positives_across_sessions=True,
    ).global_plan(epoch=2)
    ids = [[train.data_ids[i] for i in step] for step in plan]
    first_epoch2 = [r["ids"] for r in killed if r["epoch"] == 2]
    assert first_epoch2 == ids[: len(first_epoch2)]
    assert [r["ids"] for r in resumed] == ids[resumed_from:]
    assert [r["step"] for r in resumed] == list(range(resumed_from + 1, len(ids) + 1))
    # ... and the run has number_of_epochs epochs, epoch 1 logged once.
    epochs = re.findall(
        r"^epoch: (\d+)", (out / "train_log.txt").read_text(), re.MULTILINE
    )
    assert epochs == ["1", "2"]
    assert (out / "inference" / "embedding_model.ckpt").is_file()


# ------------------------------------------------------ 5. same seed
def test_same_seed_same_first_steps(tmp_path, clean_corpus, restore_logging):
    train_module = load_recipe_train()

    def first_steps(name, *extra):
        RecordingBrain.records = []
        argv = [
            str(HPARAMS),
            f"--data_folder={clean_corpus}",
            f"--output_folder={tmp_path / name}",
            *SMALL,
            "--debug",
            "--debug_batches=3",
            "--debug_epochs=1",
            *extra,
        ]
        train_module.train(argv, brain_class=RecordingBrain)
        return [(r["ids"], r["loss"]) for r in RecordingBrain.records]

    one = first_steps("a")
    two = first_steps("b")
    assert len(one) == 3
    assert one == two  # same batches, bit-identical losses
    other = first_steps("c", "--seed=7")
    assert [loss for _, loss in other] != [loss for _, loss in one]
