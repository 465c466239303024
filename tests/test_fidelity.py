"""Real-data fidelity of the full-size recipes (issue 12).

* the learning-rate schedule of the full-size YAMLs is defined in epochs,
  sized from the real batches per epoch, checkpointed, and continues exactly
  after a run is stopped mid-epoch and resumed;
* crops are fresh in every DataLoader worker and epoch, and reproducible;
* audio holding NaN/inf is named once and the rest of its batch trains.

Everything runs on CPU, in-process, with a tiny encoder on the built-in
corpus and the real ``train_ecapa_angcl.yaml``.
"""

import importlib.util
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

from sb_angcl.lr_schedule import WarmupDecayScheduler, balanced_steps_per_epoch
from sb_angcl.recipe import RecipeBrain, run_training
from sb_angcl.synthetic import generate_corpus

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "recipes" / "VoxCeleb" / "SpeakerRec"
FULL = RECIPE_DIR / "hparams" / "train_ecapa_angcl.yaml"

#: The full-size YAML shrunk to a test (same scheduler, sampler, augmentation).
TINY = [
    "--speakers_per_batch=2",
    "--utterances_per_speaker=2",
    "--channels=16",
    "--emb_dim=16",
    "--n_mels=20",
    "--attention_channels=16",
    "--sentence_len=1.0",
    "--num_workers=0",
    "--device=cpu",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def restore_logging():
    """Undo the logging set-up ``run_training`` does (handlers on the root)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 speakers (4 for training) x 4 utterances in the VoxCeleb layout."""
    folder = tmp_path_factory.mktemp("fidelity_corpus")
    generate_corpus(
        str(folder), layout="voxceleb", num_speakers=6, num_utterances=4,
        num_sessions=2, duration_min=1.0, duration_max=1.5, short_fraction=0.0,
        seed=0, progress=False,
    )
    return folder / "VoxCeleb1"


def recipe_prepare():
    """The VoxCeleb recipe's ``prepare`` (from its ``train.py``)."""
    sys.path.insert(0, str(RECIPE_DIR))
    try:
        spec = importlib.util.spec_from_file_location("vox_train_fidelity", RECIPE_DIR / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RECIPE_DIR))
    return module.prepare


class Stop(Exception):
    """Raised by :class:`LrBrain` to stop a run mid-epoch."""


class LrBrain(RecipeBrain):
    """Notes (epoch, step, lr) of every batch; can stop at a given batch."""

    records = []
    stop_at = None  # (epoch, step) to stop at, before training it

    def fit_batch(self, batch):
        epoch = self.hparams.epoch_counter.current
        if LrBrain.stop_at == (epoch, self.step):
            raise Stop()
        LrBrain.records.append((epoch, self.step, self.optimizer.param_groups[0]["lr"]))
        return super().fit_batch(batch)


# -------------------------------------------------- 1 + 2. the LR schedule
def test_schedule_hand_values_and_scaling():
    # Warm-up 1 epoch from 0 to 1e-3, exponential decay to 1e-5 at epoch 3.
    sched = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, initial_lr=0.0)
    sched.set_steps_per_epoch(4)
    assert sched.lr_at(2) == pytest.approx(5e-4)
    assert sched.lr_at(4) == pytest.approx(1e-3)
    assert sched.lr_at(8) == pytest.approx(1e-4)  # halfway in log space
    assert sched.lr_at(12) == pytest.approx(1e-5)
    assert sched.lr_at(100) == pytest.approx(1e-5)  # held after the last epoch
    # The same epoch position gives the same rate whatever the steps per epoch.
    other = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, initial_lr=0.0)
    other.set_steps_per_epoch(40)
    assert other.lr_at(80) == pytest.approx(sched.lr_at(8))
    cosine = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, decay="cosine")
    cosine.set_steps_per_epoch(4)
    assert cosine.lr_at(8) == pytest.approx((1e-3 + 1e-5) / 2)
    # Balanced sampler: ceil(n / K) groups, P * R groups a global step.
    assert balanced_steps_per_epoch([9, 4, 4, 3], 2, 4, num_gpus=1) == 3
    assert balanced_steps_per_epoch([9, 4, 4, 3], 1, 4, num_gpus=2) == 3
    with pytest.raises(RuntimeError, match="set_steps_per_epoch"):
        WarmupDecayScheduler(1e-3, 1e-5, 3).lr_at(1)


def test_schedule_checkpoint_rescales_to_new_steps_per_epoch(tmp_path):
    sched = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, steps_per_epoch=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for _ in range(15):
        sched.on_batch_end(opt)
    sched.save(tmp_path / "s.ckpt")
    same = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, steps_per_epoch=10)
    same.load(tmp_path / "s.ckpt")
    assert same.step == 15 and same.lr_at(same.step) == sched.lr_at(15)
    # Twice the GPUs: half the steps per epoch, the same epoch position (1.5).
    halved = WarmupDecayScheduler(1e-3, 1e-5, 3, warmup_epochs=1, steps_per_epoch=5)
    halved.load(tmp_path / "s.ckpt")
    assert halved.step == 8 and halved.epochs_at(halved.step) == pytest.approx(1.6)


def test_full_yaml_resumes_learning_rate_exactly(tmp_path, corpus, restore_logging):
    """Stop the full-size configuration mid-epoch 2, rerun: the rate goes on."""
    prepare = recipe_prepare()
    out = tmp_path / "out"
    argv = [
        str(FULL), f"--data_folder={corpus}", f"--output_folder={out}", *TINY,
        "--number_of_epochs=3", "--warmup_epochs=1", "--lr=0.001", "--final_lr=0.00001",
        "--ckpt_interval_minutes=0", "--ckpt_interval_steps=1",
    ]
    LrBrain.records, LrBrain.stop_at = [], (2, 3)
    with pytest.raises(Stop):
        run_training(argv, prepare, brain_class=LrBrain)
    first = list(LrBrain.records)
    LrBrain.records, LrBrain.stop_at = [], None
    brain, hparams = run_training(argv, prepare, brain_class=LrBrain)
    resumed = LrBrain.records

    sched = hparams["lr_annealing"]
    assert isinstance(sched, WarmupDecayScheduler)
    steps_per_epoch = sched.steps_per_epoch
    assert steps_per_epoch == len(brain.train_sampler) >= 3
    # The first run trained epoch 1 and steps 1-2 of epoch 2; the intra-epoch
    # checkpoint after step 2 is where the rerun starts (step 3 of epoch 2).
    assert [(e, s) for e, s, _ in first][-2:] == [(2, 1), (2, 2)]
    assert (resumed[0][0], resumed[0][1]) == (2, 3)
    # Every batch of both runs used the schedule's rate for its global step:
    # so the rerun continued exactly where the stopped run was.
    for epoch, step, lr in first + resumed:
        global_step = (epoch - 1) * steps_per_epoch + step - 1
        assert lr == pytest.approx(sched.lr_at(global_step), rel=1e-12), (epoch, step)
    assert first[0][2] == pytest.approx(1e-8)  # warm-up starts near zero
    assert resumed[0][2] > 1e-4  # 3.2e-4 at epoch 1.5, not restarted at 1e-8
    assert len(first) + len(resumed) == 3 * steps_per_epoch  # no batch lost or repeated
    assert sched.step == 3 * steps_per_epoch
    assert sched.lr_at(sched.step) == pytest.approx(1e-5)
    # The schedule is in the checkpoint.
    ckpts = list((out / "save").glob("CKPT+*/lr_annealing.ckpt"))
    assert ckpts


def test_lr_curve_script_reads_the_yaml(tmp_path, capsys):
    """benchmarks/lr_curve.py: VoxCeleb1+2 on 4 GPUs, from the YAML's schedule."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import lr_curve
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    log = tmp_path / "train_log.txt"
    log.write_text("epoch: 1, lr: 5.00e-04 - train loss: 1\nepoch: 2, lr: 1.00e-03 - x\n")
    assert lr_curve.logged_rates(log) == [(1, 5e-4), (2, 1e-3)]
    out = tmp_path / "curve.png"
    lr_curve.main(["--out", str(out), "--train_log", str(log)])
    printed = capsys.readouterr().out
    # 1,240,651 utterances over 7,205 speakers: 1,391 of 173 (44 groups of K = 4)
    # and 5,814 of 172 (43 groups): 311,206 groups, 256 a global step (64 x 4 GPUs).
    assert "steps_per_epoch 1215" in printed
    assert "total_steps 48600" in printed  # 40 epochs
    assert out.stat().st_size > 10000


# ------------------------------------------------ 3. crops in every worker
def ramp_rows(tmp_path, n_items=8, seconds=3.0):
    """A manifest of ``n_items`` rows on one float WAV whose sample i is i / 2**20."""
    import soundfile as sf

    wav = tmp_path / "ramp.wav"
    length = int(seconds * 16000)
    sf.write(str(wav), (torch.arange(length) / 2**20).numpy(), 16000, subtype="FLOAT")
    data = {
        f"u{i}": {"wav": str(wav), "start": 0, "stop": length, "spk_id": f"s{i % 2}"}
        for i in range(n_items)
    }
    return data


def crop_offsets(data, seed, epoch, batches, num_workers):
    """Offset (in samples) of each crop, batch by batch, through a real DataLoader."""
    from types import SimpleNamespace

    import speechbrain as sb

    from sb_angcl.dataio import make_train_pipeline

    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    dataset.add_dynamic_item(
        make_train_pipeline(1.0, 16000, seed=seed, epoch_source=SimpleNamespace(current=epoch))
    )
    dataset.set_output_keys(["id", "sig"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers,
        collate_fn=sb.dataio.batch.PaddedBatch,
    )
    out = []
    for batch in loader:
        out.append([round(float(s[0]) * 2**20) for s in batch.sig.data])
    return out


def test_crops_fresh_per_worker_and_epoch_and_reproducible(tmp_path):
    data = ramp_rows(tmp_path)
    # Batches 0 and 2 go to worker 0, 1 and 3 to worker 1; batch 0 repeats u0.
    batches = [["u0", "u0"], ["u1", "u2"], ["u3", "u4"], ["u5", "u6"]]
    batches = [[list(data).index(i) for i in b] for b in batches]
    one = crop_offsets(data, seed=5, epoch=1, batches=batches, num_workers=2)
    flat = [o for b in one for o in b]
    assert all(0 <= o <= 32000 for o in flat)
    # The old pipeline gave worker 1 the same draws as worker 0 (batch 1 ==
    # batch 0, batch 3 == batch 2): now all 8 crops differ, the repeat too.
    assert len(set(flat)) == len(flat)
    # Reproducible: the same seed and epoch give the same crops.
    assert crop_offsets(data, seed=5, epoch=1, batches=batches, num_workers=2) == one
    # A new epoch or another seed gives new crops for every item.
    for other in (
        crop_offsets(data, seed=5, epoch=2, batches=batches, num_workers=2),
        crop_offsets(data, seed=6, epoch=1, batches=batches, num_workers=2),
    ):
        assert all(a != b for a, b in zip(flat, [o for b in other for o in b]))


# ------------------------------------------------ 7. non-finite audio
def test_nonfinite_file_named_once_rest_of_batch_trains(tmp_path, corpus, restore_logging):
    import shutil

    import numpy as np
    import soundfile as sf

    root = tmp_path / "VoxCeleb1"
    shutil.copytree(corpus, root)
    trial_spk = {
        p.split("/")[0]
        for line in (root / "meta" / "veri_test2.txt").read_text().splitlines() if line
        for p in line.split()[1:]
    }
    spk = sorted(s for s in (p.name for p in (root / "wav").iterdir()) if s not in trial_spk)[0]
    bad = sorted((root / "wav" / spk).glob("*/*.wav"))[0]
    audio, rate = sf.read(str(bad), dtype="float32")
    audio[::7] = np.nan  # every 7th sample, so every crop of it holds some
    audio[3] = np.inf
    sf.write(str(bad), audio, rate, subtype="FLOAT")

    class IdBrain(LrBrain):
        losses = []

        def fit_batch(self, batch):
            loss = super().fit_batch(batch)
            IdBrain.losses.append((list(batch.id), float(loss)))
            return loss

    out = tmp_path / "out"
    argv = [str(FULL), f"--data_folder={root}", f"--output_folder={out}", *TINY,
            "--number_of_epochs=2", "--warmup_epochs=1"]
    LrBrain.records, LrBrain.stop_at, IdBrain.losses = [], None, []
    brain, _ = run_training(argv, recipe_prepare(), brain_class=IdBrain)

    bad_id = str(bad.relative_to(root / "wav"))
    with_bad = [loss for ids, loss in IdBrain.losses if bad_id in ids]
    assert len(with_bad) >= 2  # drawn in both epochs
    assert all(math.isfinite(loss) for loss in with_bad)  # its batch trained
    assert brain.skipped_nonfinite == 0
    assert list(brain.nonfinite_audio_files) == [str(bad)]
    log = (out / "log.txt").read_text()
    assert log.count(f"Audio file {bad} holds non-finite samples") == 1
    assert f"1 audio file(s) held non-finite samples (replaced by zeros): {bad}" in log
