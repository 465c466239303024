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
import math
import sys
from pathlib import Path

import pytest
import torch

from sb_angcl.training.brain import AngularContrastiveBrain
from sb_angcl.training.lr_schedule import WarmupDecayScheduler
from synthetic_corpus import generate_corpus

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


def recipe_train():
    """The VoxCeleb recipe's ``train`` (from its ``train.py``)."""
    sys.path.insert(0, str(RECIPE_DIR))
    try:
        spec = importlib.util.spec_from_file_location("vox_train_fidelity", RECIPE_DIR / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RECIPE_DIR))
    return module.train


class Stop(Exception):
    """Raised by :class:`LrBrain` to stop a run mid-epoch."""


class LrBrain(AngularContrastiveBrain):
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
    train = recipe_train()
    out = tmp_path / "out"
    argv = [
        str(FULL), f"--data_folder={corpus}", f"--output_folder={out}", *TINY,
        "--number_of_epochs=3", "--warmup_epochs=1", "--lr=0.001", "--final_lr=0.00001",
        "--ckpt_interval_minutes=0", "--ckpt_interval_steps=1",
    ]
    LrBrain.records, LrBrain.stop_at = [], (2, 3)
    with pytest.raises(Stop):
        train(argv, brain_class=LrBrain)
    first = list(LrBrain.records)
    LrBrain.records, LrBrain.stop_at = [], None
    brain, hparams = train(argv, brain_class=LrBrain)
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

    from sb_angcl.data.dataio import make_train_pipeline

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
    brain, _ = recipe_train()(argv, brain_class=IdBrain)

    bad_id = str(bad.relative_to(root / "wav"))
    with_bad = [loss for ids, loss in IdBrain.losses if bad_id in ids]
    assert len(with_bad) >= 2  # drawn in both epochs
    assert all(math.isfinite(loss) for loss in with_bad)  # its batch trained
    assert brain.skipped_nonfinite == 0
    assert list(brain.nonfinite_audio_files) == [str(bad)]
    log = (out / "log.txt").read_text()
    assert log.count(f"Audio file {bad} holds non-finite samples") == 1
    assert f"1 audio file(s) held non-finite samples (replaced by zeros): {bad}" in log


# ------------------------------------------------ 4. noise and reverberation
@pytest.fixture(scope="module")
def noise_folders(tmp_path_factory):
    from tools.noise_folders import generate_noise_folders

    return generate_noise_folders(str(tmp_path_factory.mktemp("noise")), num_files=2, seconds=3.0)


def speechlike(batch=4, seconds=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 100 + 60 * torch.rand(batch, 1, generator=gen)
    x = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))
    return 0.3 * x * (1 + torch.sin(2 * math.pi * 3 * t))  # syllable-rate envelope


def measured_snr(clean, noisy):
    """SNR (dB) of ``noisy`` w.r.t. the clean part found by least squares."""
    scale = (noisy * clean).sum(-1, keepdim=True) / (clean * clean).sum(-1, keepdim=True)
    residual = noisy - scale * clean
    return 10 * torch.log10((scale * clean).pow(2).sum(-1) / residual.pow(2).sum(-1))


def test_generated_folders_have_the_real_layouts(noise_folders, tmp_path):
    from sb_angcl.data.augment import find_musan, find_rirs, prepare_augmentation

    musan = find_musan(noise_folders["musan_folder"])
    assert {k: len(v) for k, v in musan.items()} == {"noise": 2, "speech": 2, "music": 2}
    rirs = find_rirs(noise_folders["rir_folder"])
    assert len(rirs) == 3 * 2 + 1  # 3 room sizes x 2, one real RIR; the noise file left out
    assert not any("noise" in Path(r).name for r in rirs)
    csvs = prepare_augmentation(str(tmp_path), **noise_folders, segment_seconds=1.0)
    with open(csvs["noise"]) as fin:
        assert len(fin.read().splitlines()) == 1 + 2 * 3  # 3 s files in 1 s segments
    stamp = Path(csvs["rir"]).stat().st_mtime_ns
    assert prepare_augmentation(str(tmp_path), **noise_folders, segment_seconds=1.0) == csvs
    assert Path(csvs["rir"]).stat().st_mtime_ns == stamp  # skipped when done


def test_missing_or_empty_folders_name_them_and_the_layout(tmp_path):
    from sb_angcl.data.augment import prepare_augmentation

    with pytest.raises(FileNotFoundError) as err:
        prepare_augmentation(str(tmp_path / "s"), musan_folder=str(tmp_path / "nomusan"))
    assert str(tmp_path / "nomusan") in str(err.value)
    assert "{noise,speech,music}" in str(err.value) and "musan_folder: null" in str(err.value)
    (tmp_path / "musan" / "noise").mkdir(parents=True)
    (tmp_path / "musan" / "music").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no audio in noise, speech, music/"):
        prepare_augmentation(str(tmp_path / "s"), musan_folder=str(tmp_path / "musan"))
    (tmp_path / "rirs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"rirs holds no impulse responses.*simulated_rirs"):
        prepare_augmentation(str(tmp_path / "s"), rir_folder=str(tmp_path / "rirs"))


@pytest.mark.parametrize("category", ["noise", "speech", "music"])
def test_noise_at_requested_snr(noise_folders, tmp_path, category):
    from speechbrain.augment.time_domain import AddNoise

    from sb_angcl.data.augment import FileNoise, prepare_augmentation

    csvs = prepare_augmentation(str(tmp_path), musan_folder=noise_folders["musan_folder"])
    torch.manual_seed(0)
    clean = speechlike()
    mix = (3, 7) if category == "speech" else (1, 1)
    for target in (0.0, 10.0, 20.0):
        add = AddNoise(snr_low=target, snr_high=target,
                       noise_funct=FileNoise(csvs[category], 16000, mix))
        noisy = add(clean, torch.ones(clean.shape[0]))
        assert not torch.allclose(noisy, clean)
        snr = measured_snr(clean, noisy)
        assert torch.all((snr - target).abs() < 1.0), (category, target, snr)


def test_reverberation_lengthens_energy_decay(noise_folders, tmp_path):
    from speechbrain.augment.time_domain import AddReverb

    from sb_angcl.data.augment import prepare_augmentation

    csvs = prepare_augmentation(str(tmp_path), rir_folder=noise_folders["rir_folder"])
    # A 0.2 s tone burst then 0.8 s of silence.
    t = torch.arange(16000) / 16000
    burst = torch.where(t < 0.2, 0.5 * torch.sin(2 * math.pi * 300 * t), torch.zeros_like(t))
    reverb = AddReverb(csvs["rir"])
    torch.manual_seed(0)
    for _ in range(4):
        wet = reverb(burst.unsqueeze(0))[0]
        assert wet.shape == burst.shape
        # Energy 50-150 ms after the burst, relative to the burst's energy.
        tail = wet[int(0.25 * 16000):int(0.35 * 16000)].pow(2).sum() / wet[:3200].pow(2).sum()
        assert burst[int(0.25 * 16000):].abs().max() == 0
        assert float(tail) > 1e-3  # > -30 dB where the dry signal has nothing


def test_recipe_trains_with_generated_noise_folders(tmp_path, corpus, noise_folders, restore_logging):
    """musan_folder / rir_folder through train.py's entry on the full-size YAML."""
    import speechbrain as sb

    from sb_angcl.data.augment import ChainedAugment

    class AugBrain(LrBrain):
        changed = []

        def compute_forward(self, batch, stage):
            if stage == sb.Stage.TRAIN:
                wavs, lens = batch.sig
                out, _ = self.hparams.wav_augment(wavs.clone(), lens)
                AugBrain.changed.append(out.shape != wavs.shape or not torch.equal(out, wavs))
            return super().compute_forward(batch, stage)

    out = tmp_path / "out"
    argv = [str(FULL), f"--data_folder={corpus}", f"--output_folder={out}", *TINY,
            f"--musan_folder={noise_folders['musan_folder']}",
            f"--rir_folder={noise_folders['rir_folder']}", "--noise_augment_prob=1.0",
            "--debug", "--debug_batches=3", "--debug_epochs=1"]
    LrBrain.records, LrBrain.stop_at, AugBrain.changed = [], None, []
    brain, hparams = recipe_train()(argv, brain_class=AugBrain)
    assert isinstance(hparams["wav_augment"], ChainedAugment)
    assert len(hparams["wav_augment"].first.augmentations) == 4
    for name in ("musan_noise", "musan_speech", "musan_music", "rirs"):
        assert (out / "save" / "augment" / f"{name}.csv").is_file()
    assert len(AugBrain.changed) == 3 and all(AugBrain.changed)
    assert all(math.isfinite(lr) for _, _, lr in LrBrain.records)
    assert brain.skipped_nonfinite == 0


# ------------------------------------------------ 6. VoxCeleb2 m4a conversion
FAKE_FFMPEG = """#!{python}
# Stands in for ffmpeg: "converts" by writing a 0.1 s WAV; fails on names with 'bad'.
import sys, numpy, soundfile
src, out = sys.argv[sys.argv.index("-i") + 1], sys.argv[-1]
if "bad" in src:
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
with open({log!r}, "a") as f:
    f.write(src + "\\n")
soundfile.write(out, numpy.zeros(1600, dtype="float32"), 16000, format="WAV")
"""


def test_m4a_conversion_parallel_resumable_skips_done(tmp_path):
    from tools.convert_audio import convert_m4a_tree

    src = tmp_path / "vox2"
    names = [f"id0000{s}/vid{v}/0000{u}.m4a" for s in (1, 2) for v in (1, 2) for u in (1, 2)]
    for name in names + ["id00003/vid1/bad01.m4a"]:
        (src / "dev" / "aac" / name).parent.mkdir(parents=True, exist_ok=True)
        (src / "dev" / "aac" / name).write_bytes(b"not really aac")
    log = tmp_path / "calls.txt"
    fake = tmp_path / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    dst = tmp_path / "VoxCeleb2"
    # A finished file from an earlier, interrupted run, and a half-written one.
    done = dst / "wav" / "id00001" / "vid1" / "00001.wav"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"RIFF already done")
    (done.parent / "00002.wav.partial.wav").write_bytes(b"RIFF half")

    result = convert_m4a_tree(str(src), str(dst), jobs=3, ffmpeg=str(fake), progress=False)
    assert result["converted"] == 7 and result["skipped"] == 1
    assert len(result["failed"]) == 1 and "bad01.m4a" in result["failed"][0]
    assert "Invalid data" in result["failed"][0]
    assert done.read_bytes() == b"RIFF already done"  # not converted again
    wavs = sorted(str(p.relative_to(dst / "wav")) for p in dst.glob("wav/**/*.wav")
                  if not p.name.endswith(".partial.wav"))
    assert wavs == sorted(n[:-4] + ".wav" for n in names)
    assert not (dst / "wav" / "id00003" / "vid1" / "bad01.wav").exists()
    assert len(log.read_text().splitlines()) == 7
    # A rerun converts nothing but retries the failure.
    again = convert_m4a_tree(str(src), str(dst), jobs=2, ffmpeg=str(fake), progress=False)
    assert again["converted"] == 0 and again["skipped"] == 8 and len(again["failed"]) == 1
    assert len(log.read_text().splitlines()) == 7


def test_m4a_conversion_with_real_ffmpeg(tmp_path):
    import shutil
    import subprocess

    import soundfile as sf

    from tools.convert_audio import convert_m4a_tree

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed: the real m4a conversion cannot be tried here")
    src = tmp_path / "vox2" / "aac" / "id00001" / "vid1"
    src.mkdir(parents=True)
    for i, freq in enumerate((220, 330)):
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             f"sine=frequency={freq}:duration=1:sample_rate=44100", "-ac", "2", "-c:a", "aac",
             str(src / f"0000{i + 1}.m4a")], check=True)
    result = convert_m4a_tree(str(tmp_path / "vox2"), str(tmp_path / "out"), jobs=2, progress=False)
    assert result == {"converted": 2, "skipped": 0, "failed": []}
    info = sf.info(str(tmp_path / "out" / "wav" / "id00001" / "vid1" / "00001.wav"))
    assert info.samplerate == 16000 and info.channels == 1
    assert abs(info.duration - 1.0) < 0.1


# ------------------------------------------------ 8. GPU check script
def test_gpu_check_script_parses_and_names_its_parts():
    import subprocess

    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for part in ("step_overhead.py", "gpu_probe.py", "fp16 bf16", "--channels 1024"):
        assert part in text
    assert (ROOT / "benchmarks" / "gpu_probe.py").is_file()
