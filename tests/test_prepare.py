"""Tests of the data preparation: sb_angcl.data.preparation (and the modules it
brings together) and both recipes' scripts.

Every test writes its own tiny corpus (short sine/noise files) in tmp_path,
in the real VoxCeleb or CN-Celeb layout.
"""

import csv
import importlib.util
import json
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sb_angcl.data import audio_probe, manifests, preparation

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _load(name, rel):
    """A recipe module, with its folder on ``sys.path`` (as when train.py runs)."""
    folder = str((ROOT / rel).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vox = _load("voxceleb_prepare", "recipes/VoxCeleb/SpeakerRec/voxceleb_prepare.py")
cn = _load("cnceleb_prepare", "recipes/CNCeleb/SpeakerRec/cnceleb_prepare.py")
short = _load(
    "cnceleb_short_utterances", "recipes/CNCeleb/SpeakerRec/cnceleb_short_utterances.py"
)


# --------------------------------------------------------------- helpers
def write_audio(path, seconds, sr=SR, seed=0):
    """Writes a 16-bit sine + noise file; returns its int16 samples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * sr)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)
    samples = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    sf.write(str(path), samples, sr, subtype="PCM_16")
    return samples


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def header(path):
    with open(path, encoding="utf-8") as f:
        return f.readline().strip().split(",")


def make_vox(root, speakers, videos=2, utts=3, seconds=0.6):
    """VoxCeleb layout; returns {rel: num_samples}."""
    written = {}
    for s, spk in enumerate(speakers):
        for v in range(videos):
            for u in range(utts):
                rel = f"{spk}/vid{v}/{u + 1:05d}.wav"
                dur = seconds + 0.1 * u
                written[rel] = len(write_audio(root / "wav" / rel, dur, seed=s * 7 + u))
    return written


VOX1_TRAIN = ["id10001", "id10002"]
VOX1_TEST = ["id10270", "id10271"]
VOX2_TRAIN = ["id00012", "id00015"]
TRIALS = [
    ("1", "id10270/vid0/00001.wav", "id10270/vid1/00002.wav"),
    ("0", "id10270/vid0/00001.wav", "id10271/vid0/00001.wav"),
    ("1", "id10271/vid1/00003.wav", "id10271/vid0/00002.wav"),
    ("0", "id10271/vid1/00003.wav", "id10270/vid1/00002.wav"),
]


@pytest.fixture
def voxcorpus(tmp_path):
    vox1, vox2 = tmp_path / "vox1", tmp_path / "vox2"
    files1 = make_vox(vox1, VOX1_TRAIN + VOX1_TEST)
    files2 = make_vox(vox2, VOX2_TRAIN)
    trial_file = tmp_path / "veri_test2.txt"
    trial_file.write_text("\n".join(" ".join(t) for t in TRIALS) + "\n")
    return {
        "vox1": vox1,
        "vox2": vox2,
        "files1": files1,
        "files2": files2,
        "trials": trial_file,
        "save": tmp_path / "save",
    }


def run_vox(c, **kwargs):
    kwargs.setdefault("data_folder", [c["vox1"], c["vox2"]])
    return vox.prepare_voxceleb(
        save_folder=c["save"], verification_pairs_file=c["trials"], **kwargs
    )


# ---------------------------------------------------- preparation units
def test_probe_audio_classifies_damaged_files(tmp_path):
    write_audio(tmp_path / "ok.wav", 1.0)
    write_audio(tmp_path / "ok.flac", 1.0)
    good = (tmp_path / "ok.wav").read_bytes()
    flac = (tmp_path / "ok.flac").read_bytes()
    (tmp_path / "text.wav").write_text("this is not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "header.wav").write_bytes(good[:20])
    (tmp_path / "short_data.wav").write_bytes(good[: len(good) // 2])
    (tmp_path / "short_data.flac").write_bytes(flac[: len(flac) // 2])
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.int16), SR)
    info = {p.name: audio_probe.probe_audio(p) for p in tmp_path.iterdir()}
    assert info["ok.wav"].ok and info["ok.wav"].frames == SR
    assert info["ok.flac"].ok and info["ok.flac"].frames == SR
    for bad in ["text.wav", "empty.wav", "header.wav", "zero.wav"]:
        assert not info[bad].ok, bad
    assert "0 samples" in info["zero.wav"].error
    # Documented: a WAV cut in its data is usable, with its true length ...
    assert info["short_data.wav"].ok
    assert 0 < info["short_data.wav"].frames < SR
    # ... while a FLAC cut in its data is caught by the tail read.
    assert not info["short_data.flac"].ok
    # probe_files keeps the order of its input, whatever the threads do.
    paths = sorted(tmp_path.iterdir()) * 3
    assert [i.path for i in audio_probe.probe_files(paths, num_threads=3)] == [
        str(p) for p in paths
    ]


def test_format_file_list_truncates_and_counts():
    text = manifests.format_file_list([f"f{i}" for i in range(25)])
    assert text.count("\n") == 10
    assert "f9" in text and "f10" not in text
    assert "15 more (25 in all)" in text


def test_split_dev_properties():
    rows = []
    sizes = {"a": 1, "b": 2, "c": 3, "d": 40, "e": 100}
    for spk, n in sizes.items():
        rows += [{"ID": f"{spk}{i:03d}", "spk_id": spk} for i in range(n)]
    train, dev = manifests.split_dev(rows, 0.05, seed=7)
    train_ids, dev_ids = {r["ID"] for r in train}, {r["ID"] for r in dev}
    assert not train_ids & dev_ids
    assert train_ids | dev_ids == {r["ID"] for r in rows}
    per_spk = {s: sum(r["spk_id"] == s for r in dev) for s in sizes}
    assert per_spk == {"a": 0, "b": 0, "c": 1, "d": 2, "e": 5}
    # Seeded, and independent of the order of the rows.
    _, dev_rev = manifests.split_dev(rows[::-1], 0.05, seed=7)
    assert {r["ID"] for r in dev_rev} == dev_ids
    _, dev_other = manifests.split_dev(rows, 0.05, seed=8)
    assert {r["ID"] for r in dev_other} != dev_ids
    # Never all of a speaker, and nothing at fraction 0.
    _, dev_big = manifests.split_dev(rows, 0.9, seed=7)
    assert sum(r["spk_id"] == "c" for r in dev_big) == 2
    assert manifests.split_dev(rows, 0.0)[1] == []
    with pytest.raises(ValueError, match="dev_fraction"):
        manifests.split_dev(rows, 1.0)


def test_group_consecutive_follows_its_specification():
    target = 2.0

    def proper(item):  # a run that stopped as soon as it reached the target
        d = [r["duration"] for r in item]
        return sum(d) >= target and (
            len(d) == 1 or all(sum(d[:k]) < target for k in range(1, len(d)))
        )

    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = {"x": int(rng.integers(1, 12)), "y": int(rng.integers(1, 4))}
        rows = [
            {"ID": f"{g}-{i:02d}", "g": g, "duration": float(rng.uniform(0.1, 3.0))}
            for g, n in sizes.items()
            for i in range(n)
        ]
        groups = short.group_consecutive(rows[::-1], target, key=lambda r: r["g"])
        flat = [r["ID"] for g in groups for r in g]
        assert flat == sorted(r["ID"] for r in rows)  # each once, in ID order
        for g in "xy":
            items = [item for item in groups if item[0]["g"] == g]
            assert all(r["g"] == g for item in items for r in item)
            assert all(proper(item) for item in items[:-1])
            last = items[-1]
            whole = len(items) == 1 and sum(r["duration"] for r in last) < target
            leftover = any(
                proper(last[:k]) and sum(r["duration"] for r in last[k:]) < target
                for k in range(1, len(last) + 1)
            )
            assert whole or leftover
    rows = [
        {"ID": i, "duration": d, "g": 0}
        for i, d in zip("abcdef", [0.8, 0.7, 0.9, 3.0, 0.5, 2.5])
    ]
    groups = short.group_consecutive(rows, target, key=lambda r: r["g"])
    assert [[r["ID"] for r in g] for g in groups] == [
        ["a", "b", "c"],
        ["d"],
        ["e", "f"],
    ]


def test_concatenate_audio_is_exact_and_resamples(tmp_path):
    a = write_audio(tmp_path / "a.wav", 0.3, seed=1)
    b = write_audio(tmp_path / "b.flac", 0.2, seed=2)
    n = short.concatenate_audio(
        [tmp_path / "a.wav", tmp_path / "b.flac"], tmp_path / "o" / "ab.wav", SR
    )
    out, rate = sf.read(str(tmp_path / "o" / "ab.wav"), dtype="int16")
    assert rate == SR and n == len(a) + len(b)
    np.testing.assert_array_equal(out, np.concatenate([a, b]))
    write_audio(tmp_path / "c8k.wav", 0.5, sr=8000)
    n = short.concatenate_audio(
        [tmp_path / "a.wav", tmp_path / "c8k.wav"], tmp_path / "ac.wav", SR
    )
    assert n == len(a) + SR // 2
    assert sf.info(str(tmp_path / "ac.wav")).samplerate == SR


def test_parse_data_folders_and_require_path(tmp_path):
    roots = preparation.parse_data_folders(f"{tmp_path}/a , {tmp_path}/b,")
    assert roots == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError):
        preparation.parse_data_folders(" , ")
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        preparation.require_path(tmp_path / "nope", "thing", "<layout>")


# ------------------------------------------------------------- VoxCeleb
def test_voxceleb_outputs(voxcorpus):
    c = voxcorpus
    summary = run_vox(c)
    save = c["save"]
    train = read_csv(save / "train.csv")
    dev = read_csv(save / "dev.csv")
    for name in ["enrol", "test"]:
        assert header(save / f"{name}.csv") == manifests.ITEM_FIELDS
    for name in ["train", "dev"]:
        assert header(save / f"{name}.csv") == manifests.TRAIN_FIELDS
    # Test speakers are not trained on; all other utterances are used once.
    expected = {
        rel: n
        for rel, n in {**c["files1"], **c["files2"]}.items()
        if rel.split("/")[0] not in VOX1_TEST
    }
    rows = train + dev
    assert sorted(r["ID"] for r in rows) == sorted(expected)
    assert not {r["ID"] for r in train} & {r["ID"] for r in dev}
    for r in rows:
        n = expected[r["ID"]]
        assert int(r["start"]) == 0 and int(r["stop"]) == n
        assert float(r["duration"]) == pytest.approx(n / SR, abs=1e-4)
        assert r["spk_id"] == r["ID"].split("/")[0]
        assert Path(r["wav"]).is_file() and r["wav"].endswith(r["ID"])
        assert r["genre"] == "" and r["language"] == ""
    # Each training speaker has 6 utterances: one goes to dev.
    assert sorted(r["spk_id"] for r in dev) == sorted(VOX1_TRAIN + VOX2_TRAIN)
    # Enrol/test: the trial paths, in order of first use, under vox1/wav.
    enrol = read_csv(save / "enrol.csv")
    test = read_csv(save / "test.csv")
    assert [r["ID"] for r in enrol] == [
        "id10270/vid0/00001.wav",
        "id10271/vid1/00003.wav",
    ]
    assert [r["ID"] for r in test] == [
        "id10270/vid1/00002.wav",
        "id10271/vid0/00001.wav",
        "id10271/vid0/00002.wav",
    ]
    for r in enrol + test:
        assert r["wav"] == str(c["vox1"] / "wav" / r["ID"])
        assert int(r["stop"]) == c["files1"][r["ID"]]
    trials = read_csv(save / "trials.csv")
    assert header(save / "trials.csv") == ["enrol", "test", "label"]
    assert [(t["label"], t["enrol"], t["test"]) for t in trials] == TRIALS
    # Summary: returned, stored, consistent with the files.
    stored = json.loads((save / "prepare_summary.json").read_text())
    assert stored == summary
    assert summary["splits"]["train"]["utterances"] == len(train)
    assert summary["splits"]["dev"]["speakers"] == 4
    assert summary["trials"] == {"total": 4, "target": 2, "nontarget": 2}
    hours = sum(expected.values()) / SR / 3600
    got = summary["splits"]["train"]["hours"] + summary["splits"]["dev"]["hours"]
    assert got == pytest.approx(hours, abs=1e-3)


def test_voxceleb_comma_string_equals_list(voxcorpus):
    c = voxcorpus
    run_vox(c, data_folder=f"{c['vox1']},{c['vox2']}")
    first = (c["save"] / "train.csv").read_text()
    c["save"] = c["save"].parent / "save2"
    run_vox(c)
    assert (c["save"] / "train.csv").read_text() == first


def test_voxceleb_languages(voxcorpus):
    c = voxcorpus
    meta = c["vox1"] / "meta"
    meta.mkdir()
    lang = {rel: ("en" if i % 2 else "de") for i, rel in enumerate(c["files1"])}
    meta.joinpath("languages.csv").write_text(
        "path,language\n" + "".join(f"{k},{v}\n" for k, v in lang.items())
    )
    run_vox(c)
    save = c["save"]
    for r in read_csv(save / "train.csv") + read_csv(save / "dev.csv"):
        assert r["language"] == lang.get(r["ID"], "")  # vox2 has none
    assert header(save / "trials.csv") == [
        "enrol",
        "test",
        "label",
        "enrol_language",
        "test_language",
    ]
    for t in read_csv(save / "trials.csv"):
        assert t["enrol_language"] == lang[t["enrol"]]
        assert t["test_language"] == lang[t["test"]]
    for r in read_csv(save / "test.csv"):
        assert r["language"] == lang[r["ID"]]


def test_voxceleb_skips_done_work(voxcorpus, monkeypatch):
    c = voxcorpus
    first = run_vox(c)

    def no_probe(*args, **kwargs):
        raise AssertionError("rescanned")

    monkeypatch.setattr(audio_probe, "probe_files", no_probe)
    assert run_vox(c) == first  # same options: nothing rescanned
    with pytest.raises(AssertionError, match="rescanned"):
        run_vox(c, seed=99)  # other options: prepared again
    assert run_vox(c, skip_prep=True) == first
    monkeypatch.undo()
    run_vox(c, seed=99)
    (c["save"] / "dev.csv").unlink()  # an output missing: prepared again
    monkeypatch.setattr(audio_probe, "probe_files", no_probe)
    with pytest.raises(AssertionError, match="rescanned"):
        run_vox(c, seed=99)


def test_voxceleb_missing_folders(voxcorpus, tmp_path):
    c = voxcorpus
    with pytest.raises(FileNotFoundError) as err:
        run_vox(c, data_folder=[c["vox1"], tmp_path / "nothing"])
    assert str(tmp_path / "nothing") in str(err.value)
    assert "<root>/wav/" in str(err.value)
    (tmp_path / "nowav").mkdir()
    with pytest.raises(FileNotFoundError, match="wav/ folder not found") as err:
        run_vox(c, data_folder=[c["vox1"], tmp_path / "nowav"])
    assert str(tmp_path / "nowav" / "wav") in str(err.value)
    with pytest.raises(FileNotFoundError, match="trial list"):
        vox.prepare_voxceleb(c["vox1"], c["save"], tmp_path / "none.txt")


def test_voxceleb_unreadable_files(voxcorpus, caplog):
    c = voxcorpus
    spk = c["vox2"] / "wav" / "id00012" / "vid0"
    good = (spk / "00001.wav").read_bytes()
    bad = {
        "text": spk / "00011.wav",
        "header": spk / "00012.wav",
        "empty": spk / "00013.wav",
        "zero": spk / "00014.wav",
    }
    bad["text"].write_text("hello")
    bad["header"].write_bytes(good[:30])
    bad["empty"].write_bytes(b"")
    sf.write(str(bad["zero"]), np.zeros(0, np.int16), SR)
    with caplog.at_level(logging.WARNING):
        summary = run_vox(c)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    for path in bad.values():
        assert str(path) in warnings[0].getMessage()
    assert summary["skipped"]["unreadable"] == 4
    assert len(summary["skipped_files"]["unreadable"]) == 4
    ids = {r["ID"] for r in read_csv(c["save"] / "train.csv")}
    ids |= {r["ID"] for r in read_csv(c["save"] / "dev.csv")}
    assert not any(i.startswith("id00012/vid0/0001") for i in ids)
    assert "id00012/vid0/00001.wav" in ids
    with pytest.raises(ValueError, match="4 unreadable or empty") as err:
        run_vox(c, strict=True)
    for path in bad.values():
        assert str(path) in str(err.value)


def test_voxceleb_sample_rate_policies(voxcorpus):
    c = voxcorpus
    odd = c["vox2"] / "wav" / "id00015" / "vid1" / "00009.wav"
    n = len(write_audio(odd, 0.8, sr=8000))
    rel = "id00015/vid1/00009.wav"

    def rows():
        save = c["save"]
        return {
            r["ID"]: r
            for r in read_csv(save / "train.csv") + read_csv(save / "dev.csv")
        }

    summary = run_vox(c)  # default: resample
    row = rows()[rel]
    assert int(row["sample_rate"]) == 8000 and int(row["stop"]) == n
    assert float(row["duration"]) == pytest.approx(0.8, abs=1e-4)
    assert summary["adjusted"]["resampled"] == 1
    summary = run_vox(c, on_wrong_sample_rate="skip")
    assert rel not in rows()
    assert summary["skipped"]["wrong_sample_rate"] == 1
    with pytest.raises(ValueError, match="on_wrong_sample_rate") as err:
        run_vox(c, on_wrong_sample_rate="error")
    assert str(odd) in str(err.value) and "8000 Hz" in str(err.value)
    with pytest.raises(ValueError, match="on_wrong_sample_rate"):
        run_vox(c, on_wrong_sample_rate="ignore")


def test_voxceleb_min_duration(voxcorpus):
    c = voxcorpus
    write_audio(c["vox2"] / "wav" / "id00012" / "vid0" / "00020.wav", 0.3)
    summary = run_vox(c)
    ids = {r["ID"] for r in read_csv(c["save"] / "train.csv")}
    ids |= {r["ID"] for r in read_csv(c["save"] / "dev.csv")}
    assert "id00012/vid0/00020.wav" not in ids
    assert summary["skipped"]["too_short"] == 1
    # Shorter than any training crop (0.6 s) but above min_duration: kept.
    assert "id00012/vid0/00001.wav" in ids
    summary = run_vox(c, min_duration=0.2)
    ids = {r["ID"] for r in read_csv(c["save"] / "train.csv")}
    ids |= {r["ID"] for r in read_csv(c["save"] / "dev.csv")}
    assert "id00012/vid0/00020.wav" in ids
    assert "too_short" not in summary["skipped"]


def test_voxceleb_m4a(voxcorpus, tmp_path):
    c = voxcorpus
    # m4a next to the wav files, with no wav counterpart.
    m4a = c["vox2"] / "wav" / "id00015" / "vid0" / "00007.m4a"
    m4a.write_bytes(b"\0\0\0 ftypM4A ")
    with pytest.raises(ValueError, match="ffmpeg") as err:
        run_vox(c)
    assert str(m4a) in str(err.value)
    # Converted: the m4a has a wav, so all is well.
    write_audio(m4a.with_suffix(".wav"), 0.7)
    run_vox(c)
    # An aac/ tree and no wav/ at all.
    aac_root = tmp_path / "vox2aac"
    (aac_root / "aac" / "id00020" / "v").mkdir(parents=True)
    (aac_root / "aac" / "id00020" / "v" / "00001.m4a").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="ffmpeg"):
        run_vox(c, data_folder=[c["vox1"], aac_root])
    # aac/ beside a partly converted wav/.
    (aac_root / "wav" / "id00020" / "v").mkdir(parents=True)
    with pytest.raises(ValueError, match="1 .m4a file"):
        run_vox(c, data_folder=[c["vox1"], aac_root])


def test_voxceleb_trial_names_missing_or_unreadable(voxcorpus):
    c = voxcorpus
    lines = [" ".join(t) for t in TRIALS]
    lines.append("1 id10270/vid0/00001.wav id10270/gone/00001.wav")
    lines.append("0 id10270/vid0/00001.wav id10999/gone/00002.wav")
    c["trials"].write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        run_vox(c)
    message = str(err.value)
    assert "2 utterance(s)" in message
    assert "id10270/gone/00001.wav" in message
    assert "id10999/gone/00002.wav" in message
    c["trials"].write_text("\n".join(lines[:4]) + "\n")
    (c["vox1"] / "wav" / "id10271" / "vid0" / "00002.wav").write_text("junk")
    with pytest.raises(ValueError, match="unreadable") as err:
        run_vox(c)
    assert "id10271/vid0/00002.wav" in str(err.value)
    c["trials"].write_text("1 id10270/vid0/00001.wav\n")
    with pytest.raises(ValueError, match="line 1"):
        run_vox(c)


def test_voxceleb_duplicate_ids(voxcorpus):
    c = voxcorpus
    with pytest.raises(ValueError, match="duplicate") as err:
        run_vox(c, data_folder=[c["vox1"], c["vox2"], c["vox2"]])
    assert "id00012/vid0/00001.wav" in str(err.value)


# ------------------------------------------------------------- CN-Celeb
CN1_DEV = {
    "id00000": ["singing-01-001", "singing-01-002", "speech-01-001", "vlog-01-001"],
    "id00001": ["interview-01-001", "interview-02-001", "movie-01-001"],
}
CN1_EVAL = {
    "id00800": ["singing-01-002", "singing-01-003", "vlog-01-001"],
    "id00801": ["drama-01-001", "drama-01-002", "live_broadcast-01-001"],
}
CN2 = {
    "id10000": ["recitation-01-001", "recitation-01-002", "play-01-001"],
    "id10001": ["advertisement-01-001", "entertainment-01-001", "vlog-03-001"],
}
ENROLL_MAP = {
    "id00800-enroll": ["id00800/singing-01-002.wav", "id00800/singing-01-003.wav"],
    "id00801-enroll": ["id00801/drama-01-001.wav"],
}
TEST_FILES = [
    "id00800-vlog-02-001",
    "id00801-live_broadcast-02-003",
    "id00800-singing-03-001",
]
CN_TRIALS = [
    ("id00800-enroll", "test/id00800-vlog-02-001.wav", "1"),
    ("id00800-enroll", "test/id00801-live_broadcast-02-003.wav", "0"),
    ("id00801-enroll", "test/id00801-live_broadcast-02-003.wav", "1"),
    ("id00801-enroll", "test/id00800-singing-03-001.wav", "0"),
]


@pytest.fixture
def cncorpus(tmp_path):
    root = tmp_path / "cn"
    c1, c2 = root / "CN-Celeb_flac", root / "CN-Celeb2_flac"
    samples = {}
    seed = 0
    for base, speakers in [(c1, CN1_DEV), (c1, CN1_EVAL), (c2, CN2)]:
        for spk, stems in speakers.items():
            for stem in stems:
                seed += 1
                samples[f"{spk}/{stem}.wav"] = write_audio(
                    base / "data" / spk / f"{stem}.flac",
                    2.1 + 0.1 * (seed % 3),
                    seed=seed,
                )
    for model in ENROLL_MAP:
        samples[model] = write_audio(c1 / "eval" / "enroll" / f"{model}.flac", 3.0)
    for stem in TEST_FILES:
        samples[f"test/{stem}.wav"] = write_audio(
            c1 / "eval" / "test" / f"{stem}.flac", 2.5
        )
    (c1 / "dev").mkdir()
    (c1 / "dev" / "dev.lst").write_text("\n".join(CN1_DEV) + "\n")
    (c2 / "spk.lst").write_text("\n".join(CN2) + "\n")
    lists = c1 / "eval" / "lists"
    lists.mkdir(parents=True)
    (lists / "enroll.lst").write_text(
        "".join(f"{m} enroll/{m}.wav\n" for m in ENROLL_MAP)
    )
    (lists / "enroll.map").write_text(
        "".join(f"{m} {' '.join(u)}\n" for m, u in ENROLL_MAP.items())
    )
    (lists / "test.lst").write_text("".join(f"test/{s}.wav\n" for s in TEST_FILES))
    (lists / "trials.lst").write_text("".join(" ".join(t) + "\n" for t in CN_TRIALS))
    return {
        "root": root,
        "cn1": c1,
        "cn2": c2,
        "samples": samples,
        "save": tmp_path / "save",
    }


def run_cn(c, **kwargs):
    kwargs.setdefault("data_folder", c["root"])
    return cn.prepare_cnceleb(save_folder=c["save"], **kwargs)


def test_cnceleb_outputs(cncorpus):
    c = cncorpus
    summary = run_cn(c)
    save = c["save"]
    train = read_csv(save / "train.csv") + read_csv(save / "dev.csv")
    expected = {
        f"{spk}/{stem}.wav"
        for group in (CN1_DEV, CN2)
        for spk, stems in group.items()
        for stem in stems
    }
    assert {r["ID"] for r in train} == expected  # all >= 2 s: none joined
    for r in train:
        n = len(c["samples"][r["ID"]])
        assert int(r["stop"]) == n and float(r["duration"]) == pytest.approx(
            n / SR, abs=1e-4
        )
        assert r["genre"] == r["ID"].split("/")[1].split("-")[0]
        assert r["wav"].endswith(".flac") and Path(r["wav"]).is_file()
    assert summary["splits"]["dev"]["speakers"] == 4  # every 3+ speaker
    enrol = read_csv(save / "enrol.csv")
    assert [r["ID"] for r in enrol] == ["id00800-enroll", "id00801-enroll"]
    assert [r["spk_id"] for r in enrol] == ["id00800", "id00801"]
    assert [r["genre"] for r in enrol] == ["singing", "drama"]
    assert all(r["wav"].endswith("eval/enroll/" + r["ID"] + ".flac") for r in enrol)
    average = read_csv(save / "enrol_average.csv")
    assert header(save / "enrol_average.csv")[:8] == [
        "ID",
        "duration",
        "wav",
        "start",
        "stop",
        "spk_id",
        "model",
        "genre",
    ]
    assert [(r["model"], r["ID"]) for r in average] == [
        (m, u) for m, utts in ENROLL_MAP.items() for u in utts
    ]
    for r in average:
        assert int(r["stop"]) == len(c["samples"][r["ID"]])
        assert r["wav"] == str(c["cn1"] / "data" / r["ID"].replace(".wav", ".flac"))
    test = read_csv(save / "test.csv")
    assert [r["ID"] for r in test] == [
        "test/id00800-vlog-02-001.wav",
        "test/id00801-live_broadcast-02-003.wav",
        "test/id00800-singing-03-001.wav",
    ]
    assert [(r["spk_id"], r["genre"]) for r in test] == [
        ("id00800", "vlog"),
        ("id00801", "live_broadcast"),
        ("id00800", "singing"),
    ]
    trials = read_csv(save / "trials.csv")
    assert header(save / "trials.csv") == [
        "enrol",
        "test",
        "label",
        "enrol_genre",
        "test_genre",
    ]
    assert [(t["enrol"], t["test"], t["label"]) for t in trials] == CN_TRIALS
    assert [(t["enrol_genre"], t["test_genre"]) for t in trials] == [
        ("singing", "vlog"),
        ("singing", "live_broadcast"),
        ("drama", "live_broadcast"),
        ("drama", "singing"),
    ]
    assert summary["trials"]["target"] == 2
    assert json.loads((save / "prepare_summary.json").read_text()) == summary


def test_cnceleb_train_sets(cncorpus):
    c = cncorpus
    run_cn(c, train_sets=("cnceleb1",))
    spks = {r["spk_id"] for r in read_csv(c["save"] / "train.csv")}
    assert spks == set(CN1_DEV)
    run_cn(c, train_sets="cnceleb2")
    spks = {r["spk_id"] for r in read_csv(c["save"] / "train.csv")}
    assert spks == set(CN2)
    other = c["root"].parent / "other"
    other.mkdir()
    os.rename(c["cn2"], other / "CN-Celeb2_flac")
    run_cn(c, train_sets=["cnceleb1"])  # CN-Celeb2 not needed
    with pytest.raises(FileNotFoundError, match="CN-Celeb2_flac"):
        run_cn(c)
    # Several roots are searched in order.
    summary = run_cn(c, data_folder=[c["root"], other])
    assert summary["splits"]["train"]["speakers"] == len(CN1_DEV) + len(CN2)
    with pytest.raises(ValueError, match="train_sets"):
        run_cn(c, train_sets=("cnceleb3",))
    # A listed evaluation speaker is not trained on; a listed speaker
    # without a folder is skipped with a warning (an error if strict).
    dev_lst = c["cn1"] / "dev" / "dev.lst"
    dev_lst.write_text(dev_lst.read_text() + "id00800\nid00777\n")
    summary = run_cn(c, train_sets=("cnceleb1",))
    spks = {r["spk_id"] for r in read_csv(c["save"] / "train.csv")}
    assert spks == set(CN1_DEV)
    assert summary["adjusted"]["eval_speakers_excluded_from_training"] == 1
    assert summary["skipped"]["missing_speaker_folder"] == 1
    with pytest.raises(ValueError, match="id00777"):
        run_cn(c, train_sets=("cnceleb1",), strict=True)


def test_cnceleb_missing_layout(cncorpus):
    c = cncorpus
    os.rename(c["cn1"] / "eval" / "lists", c["cn1"] / "eval" / "lists_")
    with pytest.raises(FileNotFoundError) as err:
        run_cn(c)
    assert str(c["cn1"] / "eval" / "lists") in str(err.value)
    assert "Expected layout" in str(err.value)
    with pytest.raises(FileNotFoundError, match="CN-Celeb_flac"):
        run_cn(c, data_folder=c["save"].parent / "nothing")


def test_cnceleb_short_utterance_rules(cncorpus):
    c = cncorpus
    data = c["cn1"] / "data" / "id00000"
    for f in data.iterdir():
        f.unlink()
    durs = {  # singing: 0.8+0.7+0.9 | 3.0 (+0.5 left over) ; speech: alone
        "singing-01-001": 0.8,
        "singing-01-002": 0.7,
        "singing-01-003": 0.9,
        "singing-02-001": 3.0,
        "singing-02-002": 0.5,
        "speech-01-001": 0.6,
        "vlog-01-001": 2.5,
    }
    audio = {
        s: write_audio(data / f"{s}.flac", d, seed=i)
        for i, (s, d) in enumerate(durs.items())
    }
    summary = run_cn(c, train_sets=("cnceleb1",), dev_fraction=0.0)
    rows = {
        r["ID"]: r
        for r in read_csv(c["save"] / "train.csv")
        if r["spk_id"] == "id00000"
    }
    assert set(rows) == {
        "id00000/singing-01-001+singing-01-002+singing-01-003.wav",
        "id00000/singing-02-001+singing-02-002.wav",
        "id00000/speech-01-001.wav",
        "id00000/vlog-01-001.wav",
    }
    for rid, parts in [
        (
            "id00000/singing-01-001+singing-01-002+singing-01-003.wav",
            ["singing-01-001", "singing-01-002", "singing-01-003"],
        ),
        (
            "id00000/singing-02-001+singing-02-002.wav",
            ["singing-02-001", "singing-02-002"],
        ),
    ]:
        row = rows[rid]
        wav = Path(row["wav"])
        assert wav.parent == c["save"] / "concatenated" / "cnceleb1" / "id00000"
        out, rate = sf.read(str(wav), dtype="int16")
        oracle = np.concatenate([audio[p] for p in parts])
        np.testing.assert_array_equal(out, oracle)
        assert int(row["stop"]) == len(oracle) and rate == SR
        assert row["genre"] == "singing"
    assert rows["id00000/speech-01-001.wav"]["wav"].endswith("speech-01-001.flac")
    assert summary["adjusted"]["concatenated_sources"] == 5
    assert summary["adjusted"]["concatenated_outputs"] == 2

    summary = run_cn(c, train_sets=("cnceleb1",), short_utterance_rule="drop")
    ids = {
        r["ID"]
        for r in read_csv(c["save"] / "train.csv") + read_csv(c["save"] / "dev.csv")
    }
    assert {i for i in ids if i.startswith("id00000")} == {
        "id00000/singing-02-001.wav",
        "id00000/vlog-01-001.wav",
    }
    assert summary["skipped"]["short_dropped"] == 5

    summary = run_cn(
        c, train_sets=("cnceleb1",), short_utterance_rule="keep", min_duration=0.65
    )
    ids = {
        r["ID"]
        for r in read_csv(c["save"] / "train.csv") + read_csv(c["save"] / "dev.csv")
    }
    assert {i for i in ids if i.startswith("id00000")} == {
        f"id00000/{s}.wav" for s, d in durs.items() if d >= 0.65
    }
    assert summary["skipped"]["too_short"] == 2
    with pytest.raises(ValueError, match="short_utterance_rule"):
        run_cn(c, short_utterance_rule="merge")


def test_cnceleb_bad_lists_and_files(cncorpus, caplog):
    c = cncorpus
    lists = c["cn1"] / "eval" / "lists"
    trials = (lists / "trials.lst").read_text()
    (lists / "trials.lst").write_text(
        trials + "id00800-enroll test/id00800-gone-01-001.wav 0\n"
    )
    with pytest.raises(ValueError, match="test/id00800-gone-01-001.wav"):
        run_cn(c)
    (lists / "trials.lst").write_text(
        trials + "id00999-enroll test/id00800-vlog-02-001.wav 0\n"
    )
    with pytest.raises(ValueError, match="id00999-enroll .not in enroll.lst"):
        run_cn(c)
    (lists / "trials.lst").write_text(trials)
    (c["cn1"] / "data" / "id00801" / "drama-01-001.flac").unlink()
    with pytest.raises(ValueError, match="id00801/drama-01-001.wav"):
        run_cn(c)
    write_audio(c["cn1"] / "data" / "id00801" / "drama-01-001.flac", 2.0)
    # Unreadable training file: one warning; strict: an error.
    bad = c["cn2"] / "data" / "id10000" / "play-02-001.flac"
    bad.write_text("not flac")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = run_cn(c)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0]
    assert summary["skipped"]["unreadable"] == 1
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        run_cn(c, strict=True)
    bad.unlink()
    # The same utterance as .flac and .wav: duplicate IDs.
    write_audio(c["cn2"] / "data" / "id10000" / "play-01-001.wav", 2.0)
    with pytest.raises(ValueError, match="duplicate.*\n.*id10000/play-01-001.wav"):
        run_cn(c)


def test_cnceleb_skips_done_work(cncorpus, monkeypatch):
    c = cncorpus
    first = run_cn(c, train_sets=("cnceleb1",))
    monkeypatch.setattr(audio_probe, "probe_files", lambda *a, **k: 1 / 0)
    assert run_cn(c, train_sets=["cnceleb1"]) == first
    with pytest.raises(ZeroDivisionError):
        run_cn(c, train_sets=["cnceleb1"], concat_min_duration=3.0)
    # An edited list is noticed too.
    lists = c["cn1"] / "eval" / "lists" / "trials.lst"
    lists.write_text(lists.read_text() + "\n")
    with pytest.raises(ZeroDivisionError):
        run_cn(c, train_sets=("cnceleb1",))


# ------------------------------------------- sessions and label noise
@pytest.fixture(scope="module")
def noisy_corpus(tmp_path_factory):
    import synthetic_corpus as synthetic

    root = tmp_path_factory.mktemp("noisy")
    synthetic.generate_corpus(
        str(root), layout="both", num_speakers=8, num_utterances=5, num_sessions=2,
        duration_min=0.6, duration_max=0.8, short_fraction=0.0, test_speakers=2,
        seed=11, label_noise=0.3, progress=False,
    )
    return root


def test_session_parsers():
    assert vox._video("id10001/1zcIwhmdeo4/00001.wav") == "1zcIwhmdeo4"
    assert cn._session("id00012/live_broadcast-03-017.wav") == "live_broadcast-03"
    assert cn._test_session("test/id00800-singing-01-001.wav") == "singing-01"


def test_voxceleb_label_noise_and_sessions(noisy_corpus, tmp_path):
    vroot = noisy_corpus / "VoxCeleb1"
    listed = {r["path"]: r["true_speaker"] for r in read_csv(vroot / "meta" / "label_noise.csv")}
    assert len(listed) == 9  # round(0.3 * 6 training speakers * 5)
    vox.prepare_voxceleb(vroot, tmp_path / "a", vroot / "meta" / "veri_test2.txt", dev_fraction=0.2)
    rows = read_csv(tmp_path / "a" / "train.csv") + read_csv(tmp_path / "a" / "dev.csv")
    marked = {r["ID"]: r["true_spk_id"] for r in rows if r["label_noise"] == "1"}
    assert marked == listed
    for r in rows:
        assert r["session"] == r["ID"].split("/")[1]
        if r["label_noise"] == "0":
            assert r["true_spk_id"] == r["spk_id"]
        else:
            assert r["true_spk_id"] != r["spk_id"]
    for name in ("enrol", "test"):
        assert all(r["session"] == r["ID"].split("/")[1] for r in read_csv(tmp_path / "a" / f"{name}.csv"))
    # without the list: columns present, nothing marked
    (vroot / "meta" / "label_noise.csv").rename(vroot / "meta" / "hidden.csv")
    try:
        summary = vox.prepare_voxceleb(vroot, tmp_path / "b", vroot / "meta" / "veri_test2.txt")
    finally:
        (vroot / "meta" / "hidden.csv").rename(vroot / "meta" / "label_noise.csv")
    rows = read_csv(tmp_path / "b" / "train.csv")
    assert summary["label_noise"] == 0
    assert all(r["label_noise"] == "0" and r["true_spk_id"] == r["spk_id"] for r in rows)


def test_cnceleb_label_noise_and_sessions(noisy_corpus, tmp_path):
    listed = {}
    for sub in ("CN-Celeb_flac", "CN-Celeb2_flac"):
        listed.update(
            {r["path"]: r["true_speaker"] for r in read_csv(noisy_corpus / sub / "meta" / "label_noise.csv")}
        )
    assert len(listed) == 9
    summary = cn.prepare_cnceleb(noisy_corpus, tmp_path / "keep", short_utterance_rule="keep")
    rows = read_csv(tmp_path / "keep" / "train.csv") + read_csv(tmp_path / "keep" / "dev.csv")
    assert summary["label_noise"] == 9
    assert {r["ID"]: r["true_spk_id"] for r in rows if r["label_noise"] == "1"} == listed
    utts = {r["path"]: r for r in read_csv(noisy_corpus / "utterances.csv")}
    for r in rows:
        stem = r["ID"].split("/")[1][: -len(".wav")]
        assert r["session"] == stem.rsplit("-", 1)[0] and r["genre"] in r["session"]
        assert (r["label_noise"] == "1") == (r["true_spk_id"] != r["spk_id"])
    # the generator's own record of the sessions agrees with the file names
    for r in rows:
        for sub in ("CN-Celeb_flac", "CN-Celeb2_flac"):
            u = utts.get(f"{sub}/data/{r['ID'][: -len('.wav')]}.flac")
            if u is not None:
                assert u["session"] == r["session"]
    test = read_csv(tmp_path / "keep" / "test.csv")
    assert all(r["session"] == "-".join(r["ID"].split("-")[1:3]) for r in test)
    enrol = read_csv(tmp_path / "keep" / "enrol.csv")
    assert all(r["session"] and r["genre"] in r["session"] for r in enrol)
    # concatenation never joins a mislabelled file with correctly labelled ones
    cn.prepare_cnceleb(noisy_corpus, tmp_path / "concat", concat_min_duration=3.0, dev_fraction=0.0)
    for r in read_csv(tmp_path / "concat" / "train.csv"):
        spk, names = r["ID"].split("/")
        sources = [f"{spk}/{stem}.wav" for stem in names[: -len(".wav")].split("+")]
        flags = {s in listed for s in sources}
        assert len(flags) == 1 and (r["label_noise"] == "1") == flags.pop()
        assert set(r["session"].split("+")) == {cn._session(s) for s in sources}
