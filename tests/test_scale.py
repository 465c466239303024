"""The scale benchmarks' code paths on a small tiny-file layout.

``benchmarks/scale.py`` writes a VoxCeleb2-dev-shaped layout of hard-linked
tiny WAVs and runs the recipe's own preparation, manifests and P x K sampler
on it; ``benchmarks/loader_speed.py`` builds the recipe's training loader.
Here the same functions run on a layout of 3/1000 of the size: what the
preparation writes, the epoch plan under DDP (disjoint ranks, equal lengths,
a speaker's K utterances from 2+ sessions where it has them), the lengths of
the loader's crops, and that both benchmarks record their command with
their output.
"""

import csv
import os
import sys
from collections import Counter, defaultdict

import pytest
import speechbrain as sb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import loader_speed  # noqa: E402
import scale  # noqa: E402

from sb_angcl.data.sampler import SpeakerBalancedBatchSampler  # noqa: E402

FRACTION, TEST_FRACTION = 0.003, 0.02  # 18 speakers, 3,276 utterances; 752 trials


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The layout, the recipe settings for it, and the prepared manifests."""
    work = str(tmp_path_factory.mktemp("scale"))
    layout = scale.write_layout(os.path.join(work, "layout"), FRACTION, TEST_FRACTION)
    settings = scale.recipe_settings(scale.DEFAULT_HPARAMS, layout["data_folder"],
                                     layout["verification_file"], os.path.join(work, "run"),
                                     {"speakers_per_batch": 2})
    result = scale.run_stage("prepare", scale.DEFAULT_HPARAMS, settings)
    return layout, settings, result


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_layout_is_voxceleb2_shaped(prepared):
    layout, _, _ = prepared
    test_root, dev_root = layout["data_folder"].split(",")
    speakers = sorted(os.listdir(os.path.join(dev_root, "wav")))
    assert len(speakers) == layout["speakers"] == round(scale.DEV["speakers"] * FRACTION)
    assert all(len(s) == 7 and s.startswith("id0") for s in speakers)
    videos = [v for s in speakers for v in os.listdir(os.path.join(dev_root, "wav", s))]
    assert len(videos) == layout["videos"] and all(len(v) == 11 for v in videos)
    files = sum(len(files) for _, _, files in os.walk(os.path.join(dev_root, "wav")))
    assert files == layout["utterances"] == round(scale.DEV["utterances"] * FRACTION)
    with open(layout["verification_file"], encoding="utf-8") as f:
        trials = [line.split() for line in f]
    assert len(trials) == layout["trials"]
    assert {t[0] for t in trials} == {"0", "1"}
    for label, enrol, test in trials:
        assert os.path.isfile(os.path.join(test_root, "wav", enrol))
        assert (enrol.split("/")[0] == test.split("/")[0]) == (label == "1")


def test_preparation_through_the_recipe(prepared):
    layout, settings, result = prepared
    save = settings["save_folder"]
    train = read_csv(os.path.join(save, "train.csv"))
    dev = read_csv(os.path.join(save, "dev.csv"))
    assert len(train) + len(dev) == layout["utterances"] == result["train_rows"] + len(dev)
    assert 0.01 < len(dev) / layout["utterances"] < 0.03  # split_ratio 98/2
    for row in train[:200]:
        spk, video, _ = row["ID"].split("/")
        assert row["spk_id"] == spk and row["session"] == video
        assert not spk.startswith("id10")  # the test speakers are left out
    trials = read_csv(os.path.join(save, "trials.csv"))
    assert len(trials) == layout["trials"]
    before = os.path.getmtime(os.path.join(save, "train.csv"))
    again = scale.run_stage("prepare again", scale.DEFAULT_HPARAMS, settings)
    assert again["train_rows"] == result["train_rows"]
    assert os.path.getmtime(os.path.join(save, "train.csv")) == before  # reused


def ddp_plans(train, across_sessions, seed, P=2, K=4, R=4, epoch=3):
    """The batches of every rank in one epoch, and the samplers."""
    samplers = [
        SpeakerBalancedBatchSampler.from_dataset(
            train, speakers_per_batch=P, utterances_per_speaker=K, seed=seed,
            num_replicas=R, rank=r, positives_across_sessions=across_sessions)
        for r in range(R)
    ]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(sampler) for sampler in samplers], samplers


def session_spread(plans, speakers, sessions, K):
    """Per non-topped-up group (its utterances used once in the epoch): speaker, sessions."""
    uses = Counter(i for plan in plans for batch in plan for i in batch)
    out = []
    for plan in plans:
        for batch in plan:
            for g in range(0, len(batch), K):
                group = batch[g:g + K]
                if all(uses[i] == 1 for i in group):  # a topped-up group re-draws used ones
                    out.append((speakers[group[0]], [sessions[i] for i in group]))
    return out


def test_epoch_plan_under_ddp(prepared):
    _, settings, _ = prepared
    module = scale.load_recipe_module(scale.DEFAULT_HPARAMS)
    from speechbrain.utils.epoch_loop import EpochCounter

    train, _, _, _ = module.dataio_prep({**settings, "epoch_counter": EpochCounter(1)})
    speakers = [train.data[i]["spk_id"] for i in train.data_ids]
    sessions = [train.data[i]["session"] for i in train.data_ids]
    P, K, R = 2, 4, 4
    plans, samplers = ddp_plans(train, True, settings["seed"], P, K, R)
    assert len({len(p) for p in plans}) == 1 and len(plans[0]) == len(samplers[0]) > 0
    for step in zip(*plans):
        assert all(len(batch) == P * K for batch in step)
        flat = [i for batch in step for i in batch]
        assert len(set(flat)) == len(flat)  # no item on two ranks (or twice) in one step
        groups = [batch[g:g + K] for batch in step for g in range(0, P * K, K)]
        assert all(len({speakers[i] for i in group}) == 1 for group in groups)
        assert len({speakers[group[0]] for group in groups}) == R * P  # no speaker on two ranks

    # A speaker's K utterances come from 2+ sessions while it has utterances left in
    # 2+ sessions: the sampler deals them round-robin over its sessions, so only the
    # s1 - s2 utterances its largest session has beyond the second largest can
    # make single-session groups.
    sizes = defaultdict(Counter)
    for spk, session in zip(speakers, sessions):
        sizes[spk][session] += 1
    spread = session_spread(plans, speakers, sessions, K)
    single = Counter(spk for spk, group in spread if len(set(group)) == 1)
    for spk, count in single.items():
        s1, s2 = (sorted(sizes[spk].values(), reverse=True) + [0])[:2]
        assert s2 > 0 and count <= -(-(s1 - s2) // K), (spk, count, s1, s2)
    assert len(single) < len(sizes)  # most speakers have no single-session group at all

    # K distinct sessions far more often than when the groups are cut at random.
    def distinct_share(spread):
        many = [group for spk, group in spread if len(sizes[spk]) >= 2 * K]
        return sum(len(set(group)) == K for group in many) / len(many)

    random_plans, _ = ddp_plans(train, False, settings["seed"], P, K, R)
    across, at_random = distinct_share(spread), distinct_share(
        session_spread(random_plans, speakers, sessions, K))
    assert across > at_random + 0.1, (across, at_random)


@pytest.mark.parametrize("sentence_len", [3.0, 0.5])
def test_loader_crop_lengths(prepared, tmp_path, sentence_len):
    # The layout's files last 0.6 to 1.2 s: 3 s crops are repeat-padded, 0.5 s ones cut.
    layout, settings, _ = prepared
    train, sampler, hparams = loader_speed.ours(
        layout["data_folder"], str(tmp_path), 8,
        overrides={"sentence_len": sentence_len})
    batches = loader_speed.plan_batches(sampler, 3)
    loader = sb.dataio.dataloader.make_dataloader(train, batch_sampler=batches, num_workers=0)
    expected = int(sentence_len * hparams["sample_rate"])
    seen = 0
    for batch in loader:
        assert tuple(batch.sig.data.shape) == (8, expected)
        assert bool((batch.sig.lengths == 1).all())
        assert float(batch.sig.data.abs().sum(dim=1).min()) > 0  # audio, not padding zeros
        seen += 1
    assert seen == 3


def recorded_command(path, script):
    text = open(path, encoding="utf-8").read()
    for needle in (f"# {script}", f"- Command: `python benchmarks/{script} ", "- Commit: ",
                   "- CPU: ", "nproc ", "- Date: "):
        assert needle in text
    printed = text.split("Printed output:\n\n```\n", 1)[1].rsplit("\n```", 1)[0]
    return text.splitlines()[2], printed.splitlines()


def test_scale_benchmark_records_its_command(tmp_path):
    out = tmp_path / "scale.md"
    argv = ["--quick", "--in-process", "--work-dir", str(tmp_path / "w"), "--output", str(out)]
    worst = scale.main(argv)
    command, printed = recorded_command(out, "scale.py")
    assert command.endswith("--quick --in-process --work-dir " + str(tmp_path / "w")
                            + " --output " + str(out) + "`")
    assert printed[-1] == f"ratio {worst:.3f}"
    rows = [line for line in printed if line.startswith("| prepare_voxceleb (scan")]
    exponent = float(rows[0].rstrip(" |").split("|")[-1])
    # The table rounds to 2 decimals, so compare at that rounding (monotone).
    assert exponent <= float(f"{worst:.2f}")
    assert not any(os.scandir(tmp_path / "w"))  # the layouts are removed after measuring


def test_loader_benchmark_records_its_command(prepared, tmp_path):
    layout, _, _ = prepared
    out = tmp_path / "loader.md"
    corpus = layout["data_folder"]  # the test root (with the trial list), then the dev root
    ratio = loader_speed.main(["--corpus", corpus, "--quick", "--workers", "0",
                               "--work-dir", str(tmp_path / "w"), "--output", str(out)])
    command, printed = recorded_command(out, "loader_speed.py")
    assert "--corpus " + corpus in command
    assert printed[-1] == f"ratio {ratio:.3f}"
    rows = [line.split("|") for line in printed if line.startswith("| ours | 0 |")]
    assert len(rows) == 1 and float(rows[0][3]) > 0
    needed = [line for line in printed if line.startswith("| assumed")]
    assert len(needed) == 8


def test_workers_needed_and_step_file(tmp_path):
    assert loader_speed.workers_needed(256, 0.5, 100.0) == 6  # 512 crops/s at 100 each
    assert loader_speed.workers_needed(128, 1.0, 1000.0) == 1
    path = tmp_path / "steps.txt"
    path.write_text("aam 250.0 200.0 1.000 1.000 AAM\nmgda_ub 260.0 210.0 1.040 1.000 x\n"
                    "device cuda:0 (0 threads), ECAPA-TDNN C=1024 (20 M params), "
                    "80 mels, 192-dim, batch 256 = 64 x 4 of 3 s\n")
    steps = loader_speed.read_step_file(str(path))
    assert [(b, s) for _, b, s in steps] == [(256, 0.25), (256, 0.26)]
    assert steps[0][0].startswith("aam, C=1024")


def test_crops_of_files_at_another_rate_read_at_their_rate(tmp_path):
    # The training pipeline assumes a file is at sample_rate until its read says
    # otherwise; the crop must be the one drawn at the file's own rate, first time or not.
    import numpy as np
    import soundfile

    from sb_angcl.data.dataio import CropRandom, crop_or_pad, load_segment, make_train_pipeline

    rng = np.random.default_rng(0)
    rows = {}
    for name, rate in (("a16", 16000), ("b8", 8000), ("c44", 44100)):
        path = str(tmp_path / f"{name}.wav")
        soundfile.write(path, rng.standard_normal(int(2.5 * rate)) * 0.1, rate)
        rows[name] = {"wav": path, "start": 0, "stop": int(2.5 * rate), "rate": rate}
    crop_seconds, seed = 1.0, 5
    data = sb.dataio.dataset.DynamicItemDataset(
        {k: {key: v[key] for key in ("wav", "start", "stop")} for k, v in rows.items()})
    sb.dataio.dataset.add_dynamic_item([data], make_train_pipeline(crop_seconds, seed=seed))
    sb.dataio.dataset.set_output_keys([data], ["id", "sig"])
    expected_draws = CropRandom(seed)
    for occurrence in range(2):  # the second time, the file's rate is known
        for index, (name, row) in enumerate(rows.items()):
            draw = expected_draws.for_item(name)
            want = int(round(crop_seconds * row["rate"]))
            start = draw.randint(0, row["stop"] - want)
            expected = crop_or_pad(load_segment(row["wav"], start, start + want), 16000, draw)
            got = data[index]["sig"]
            assert got.shape == (16000,), (name, occurrence)
            assert float((got - expected).abs().max()) < 1e-6, (name, occurrence)
