"""Preparing your own data: a folder of speakers, a Kaldi-style data directory (sb_angcl.data.own_data).

The corpora are made here (tones and noise written with soundfile); the
manifests must be the ones the recipes train on, nothing may be dropped
without a report, and bad input must stop with the file or line named.
"""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from sb_angcl.cli import main
from sb_angcl.data import manifests
from sb_angcl.data.own_data import (
    TRIALS_FILE,
    balanced_trials,
    prepare_kaldi_dir,
    prepare_speaker_folders,
    read_trials,
)


def write_voice(path, f0, seed, seconds=1.2, rate=16000, channels=1):
    """A harmonic tone at ``f0`` with noise: a stand-in voice."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.1
    wave = wave + 0.01 * rng.standard_normal(len(t))
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)


def speaker_tree(root, speakers=8, sessions=2, per_session=2, flat=()):
    """``root/<spk>/<session>/<n>.wav`` (``flat`` speakers: ``root/<spk>/<n>.flac``)."""
    for s in range(speakers):
        spk = f"spk{s:02d}"
        for j in range(sessions):
            for n in range(per_session):
                if spk in flat:
                    path = os.path.join(root, spk, f"{j}{n}.flac")
                else:
                    path = os.path.join(root, spk, f"sess{j}", f"{n}.wav")
                write_voice(path, 100 + 15 * s, seed=100 * s + 10 * j + n)
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def test_speaker_folders_give_the_recipe_manifests(tmp_path):
    root = speaker_tree(str(tmp_path / "data"), flat=("spk07",))
    save = tmp_path / "save"
    summary = prepare_speaker_folders(root, save, num_test_speakers=3, seed=5)
    train = read_csv(save / "train.csv")
    assert list(train[0]) == manifests.TRAIN_FIELDS
    assert list(read_csv(save / "test.csv")[0]) == manifests.ITEM_FIELDS
    test_speakers = {r["spk_id"] for r in read_csv(save / "test.csv") + read_csv(save / "enrol.csv")}
    train_speakers = {r["spk_id"] for r in train + read_csv(save / "dev.csv")}
    assert len(test_speakers) == 3 and not test_speakers & train_speakers
    assert len(train_speakers) == 5 and summary["test_speakers"] == 3
    # Session: the folder between speaker and file; none for a flat speaker.
    by_id = {r["ID"]: r for name in ("train.csv", "dev.csv", "enrol.csv", "test.csv")
             for r in read_csv(save / name)}
    assert len(by_id) == 7 * 4 + 4  # every file of the tree, once
    assert by_id["spk00/sess1/0.wav"]["session"] == "sess1"
    assert all(r["session"] == "" for r in by_id.values() if r["spk_id"] == "spk07")
    assert all(r["session"].startswith("sess") for r in by_id.values() if r["spk_id"] != "spk07")
    assert all(os.path.isabs(r["wav"]) and float(r["duration"]) > 1 for r in by_id.values())

    # The drawn list: balanced, over the held-out speakers, written out and reusable.
    trials = read_trials(save / TRIALS_FILE)
    labels = [t[2] for t in trials]
    assert sum(labels) * 2 == len(labels) == summary["trials"]["total"]
    assert len({(e, t) for e, t, _ in trials}) == len(trials)
    spk = {r["ID"]: r["spk_id"] for r in by_id.values()}
    assert all((spk[e] == spk[t]) == bool(label) for e, t, label in trials)
    rows = read_csv(save / "trials.csv")
    assert [(r["enrol"], r["test"], int(r["label"])) for r in rows] == trials

    # The same seed gives the same list; another seed another one; reuse reads it back.
    again = tmp_path / "again"
    prepare_speaker_folders(root, again, num_test_speakers=3, seed=5)
    assert read_trials(again / TRIALS_FILE) == trials
    other = tmp_path / "other"
    prepare_speaker_folders(root, other, num_test_speakers=3, seed=6)
    assert read_trials(other / TRIALS_FILE) != trials
    reused = tmp_path / "reused"
    prepare_speaker_folders(root, reused, trials=save / TRIALS_FILE, seed=5)
    assert read_csv(reused / "trials.csv") == rows
    assert read_csv(reused / "train.csv") == train
    assert not (reused / TRIALS_FILE).exists()


def test_speaker_folders_report_what_they_skip(tmp_path):
    root = speaker_tree(str(tmp_path / "data"), speakers=7)
    write_voice(os.path.join(root, "lonely", "only.wav"), 300, seed=1)  # one file
    write_voice(os.path.join(root, "loose.wav"), 300, seed=2)  # outside a speaker folder
    with open(os.path.join(root, "spk00", "sess0", "broken.wav"), "w") as fout:
        fout.write("not audio")
    with open(os.path.join(root, "spk01", "notes.txt"), "w") as fout:
        fout.write("hello")
    summary = prepare_speaker_folders(root, tmp_path / "save", num_test_speakers=2, seed=1)
    skipped = summary["skipped"]
    assert skipped["unreadable"] == 1 and skipped["outside_speaker_folder"] == 1
    assert skipped["not_audio"] == 1
    ids = {r["ID"] for name in ("train.csv", "dev.csv", "test.csv", "enrol.csv")
           for r in read_csv(tmp_path / "save" / name)}
    assert "spk00/sess0/broken.wav" not in ids
    # One file: never held out (a target trial needs two), so a training speaker, skipped.
    assert "lonely/only.wav" not in ids and skipped["few_utterances"] == 1
    assert summary["skipped_files"]["few_utterances"] == ["lonely (1 usable file(s))"]
    with open(tmp_path / "save" / "prepare_summary.json", encoding="utf-8") as fin:
        assert json.load(fin)["skipped"] == skipped
    with pytest.raises(ValueError, match="broken.wav"):
        prepare_speaker_folders(root, tmp_path / "strict", num_test_speakers=2, strict=True)


def test_speaker_folder_errors(tmp_path):
    root = speaker_tree(str(tmp_path / "data"), speakers=5)
    write_voice(os.path.join(root, "spk00", "sess0", "0.flac"), 100, seed=3)  # 0.wav exists
    with pytest.raises(ValueError, match="(?s)duplicate utterance ID.*spk00/sess0/0"):
        prepare_speaker_folders(root, tmp_path / "s1")
    os.remove(os.path.join(root, "spk00", "sess0", "0.flac"))
    trial_file = tmp_path / "trials.txt"
    trial_file.write_text("1 spk00/sess0/0.wav spk00/sess1/9.wav\n")
    with pytest.raises(ValueError, match=r"spk00/sess1/9.wav \(no such utterance"):
        prepare_speaker_folders(root, tmp_path / "s2", trials=trial_file)
    trial_file.write_text("spk00/sess0/0.wav spk00/sess1/0.wav maybe\n")
    with pytest.raises(ValueError, match="line 1"):
        prepare_speaker_folders(root, tmp_path / "s3", trials=trial_file)
    with pytest.raises(ValueError, match="cannot hold out 4 test speaker"):
        prepare_speaker_folders(root, tmp_path / "s4", num_test_speakers=4)
    with pytest.raises(FileNotFoundError, match="speaker folder not found"):
        prepare_speaker_folders(tmp_path / "nowhere", tmp_path / "s5")


def kaldi_dir(tmp_path, speakers=6, segments=False):
    """A Kaldi-style data directory whose wav.scp points at files elsewhere."""
    audio, data = tmp_path / "audio", tmp_path / "kaldi"
    data.mkdir(parents=True)
    scp, u2s, seg = [], [], []
    for s in range(speakers):
        for n in range(4):
            utt = f"S{s}-u{n}"
            if segments:  # two utterances per recording
                reco = f"S{s}-r{n // 2}"
                path = audio / f"{reco}.wav"
                if n % 2 == 0:
                    write_voice(str(path), 100 + 20 * s, seed=s * 10 + n, seconds=2.4)
                    scp.append(f"{reco} {path}")
                seg.append(f"{utt} {reco} {1.2 * (n % 2):.1f} {1.2 * (n % 2 + 1):.1f}")
            else:
                path = audio / f"{utt}.wav"
                write_voice(str(path), 100 + 20 * s, seed=s * 10 + n)
                scp.append(f"{utt} {path}")
            u2s.append(f"{utt} S{s}")
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    (data / "utt2spk").write_text("\n".join(u2s) + "\n")
    if segments:
        (data / "segments").write_text("\n".join(seg) + "\n")
    return data


def test_kaldi_dir_with_its_trials(tmp_path):
    data = kaldi_dir(tmp_path)
    (data / "trials").write_text("S0-u0 S0-u1 target\nS0-u0 S1-u2 nontarget\nS1-u0 S1-u3 target\n")
    summary = prepare_kaldi_dir(data, tmp_path / "save")
    save = tmp_path / "save"
    assert [(r["enrol"], r["test"], r["label"]) for r in read_csv(save / "trials.csv")] == [
        ("S0-u0", "S0-u1", "1"), ("S0-u0", "S1-u2", "0"), ("S1-u0", "S1-u3", "1")]
    train = read_csv(save / "train.csv") + read_csv(save / "dev.csv")
    assert {r["spk_id"] for r in train} == {"S2", "S3", "S4", "S5"}
    assert [r["ID"] for r in read_csv(save / "enrol.csv")] == ["S0-u0", "S1-u0"]
    assert summary["trial_list"] == str((data / "trials").resolve())
    assert not (save / TRIALS_FILE).exists()


def test_kaldi_dir_segments_and_skips(tmp_path):
    data = kaldi_dir(tmp_path, segments=True)
    with open(data / "segments", "a", encoding="utf-8") as fout:
        fout.write("S5-u9 S5-r1 2.0 9.0\n")  # beyond the end of its 2.4 s recording
    with open(data / "utt2spk", "a", encoding="utf-8") as fout:
        fout.write("S5-u9 S5\n")
    summary = prepare_kaldi_dir(data, tmp_path / "save", num_test_speakers=2, seed=3)
    rows = {r["ID"]: r for name in ("train.csv", "dev.csv", "enrol.csv", "test.csv")
            for r in read_csv(tmp_path / "save" / name)}
    second = next(r for u, r in rows.items() if u.endswith("-u1"))
    assert (int(second["start"]), int(second["stop"])) == (19200, 38400)
    assert second["session"].endswith("-r0") and float(second["duration"]) == pytest.approx(1.2)
    assert "S5-u9" not in rows and summary["skipped"]["bad_segment"] == 1


def test_kaldi_dir_errors(tmp_path):
    data = kaldi_dir(tmp_path)
    os.remove(tmp_path / "audio" / "S3-u1.wav")
    summary = prepare_kaldi_dir(data, tmp_path / "save", num_test_speakers=2, seed=1)
    assert summary["skipped"]["missing"] == 1
    assert any("S3-u1.wav" in f for f in summary["skipped_files"]["missing"])
    with pytest.raises(ValueError, match="S3-u1.wav"):
        prepare_kaldi_dir(data, tmp_path / "strict", num_test_speakers=2, strict=True)
    (data / "trials").write_text("S3-u0 S3-u1 target\nS3-u0 S2-u0 nontarget\n")
    with pytest.raises(ValueError, match=r"S3-u1 \(missing"):
        prepare_kaldi_dir(data, tmp_path / "s1")
    os.remove(data / "trials")
    with open(data / "utt2spk", "a", encoding="utf-8") as fout:
        fout.write("ghost S9\n")
    with pytest.raises(ValueError, match=r"(?s)1 utterance\(s\) in .*utt2spk have no audio.*ghost"):
        prepare_kaldi_dir(data, tmp_path / "s2")
    data = kaldi_dir(tmp_path / "piped")
    with open(data / "wav.scp", "a", encoding="utf-8") as fout:
        fout.write("S0-u9 sox in.flac -t wav - |\n")
    with open(data / "utt2spk", "a", encoding="utf-8") as fout:
        fout.write("S0-u9 S0\n")
    with pytest.raises(ValueError, match="S0-u9 is read through a command"):
        prepare_kaldi_dir(data, tmp_path / "s3")


def test_balanced_trials_use_every_speaker():
    from sb_angcl.data.own_data import Utterance

    utts = [Utterance(f"{s}/{i}", "", s) for s in "abcd" for i in range(5)]
    trials = balanced_trials(utts, 16, seed=2)
    targets = [e.split("/")[0] for e, _, label in trials if label]
    assert len(targets) == 8 and {targets.count(s) for s in "abcd"} == {2}
    assert all(e.split("/")[0] != t.split("/")[0] for e, t, label in trials if not label)
    # More than the speakers' pairs allow: all 40 target pairs, as many non-targets.
    assert len(balanced_trials(utts, 1000, seed=2)) == 80


def test_prepare_command(tmp_path, capsys):
    root = speaker_tree(str(tmp_path / "data"), speakers=6)
    save = tmp_path / "run" / "save"
    assert main(["prepare", "folder", root, "--save-folder", str(save),
                 "--test-speakers", "2", "--num-trials", "20"]) == 0
    out = capsys.readouterr().out
    assert "4 training speakers" in out and "20 trials (10 target)" in out
    assert f"--skip_prep=True --output_folder={save.parent}" in out
    assert main(["prepare", "kaldi", str(tmp_path / "nowhere"), "--save-folder", str(save)]) == 1
    assert "data directory not found" in capsys.readouterr().err
