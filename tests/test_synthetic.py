"""Tests of the built-in synthetic corpus (synthetic_corpus).

The corpora here are tiny (a few speakers, sub-second utterances) so the whole
file runs in well under a minute. Layout checks compare against the real
VoxCeleb1 / CN-Celeb v2 file formats; the discriminability check uses its own
log-mel front end and EER so it does not depend on the project's scoring code.
"""

import csv
import filecmp
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

import synthetic_corpus as syn

SMALL = {
    "num_speakers": 6,
    "num_utterances": 4,
    "num_sessions": 2,
    "num_languages": 2,
    "duration_min": 0.6,
    "duration_max": 1.0,
    "short_fraction": 0.25,
    "progress": False,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    summary = syn.generate_corpus(str(root), layout="both", seed=3, **SMALL)
    return str(root), summary


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _all_files(root):
    out = []
    for d, _, files in os.walk(root):
        for name in files:
            out.append(os.path.relpath(os.path.join(d, name), root))
    return sorted(out)


# ---------------------------------------------------------------------------
# independent oracle: log-mel front end and EER
# ---------------------------------------------------------------------------


def _mel_filterbank(n_fft=512, n_mels=40, sr=16000):
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel2hz(np.linspace(hz2mel(20.0), hz2mel(sr / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, c, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return fb


_FB = _mel_filterbank()


def mean_log_mel(x):
    """Trivial embedding: mean over 25 ms / 10 ms frames of log mel energies."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160] * np.hamming(400)
    power = np.abs(np.fft.rfft(frames, 512)) ** 2
    return np.log(power @ _FB.T + 1e-8).mean(axis=0)


def eer(scores, labels):
    """EER by sweeping the threshold over the sorted scores."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    order = np.argsort(-scores)
    lab = labels[order]
    frr = 1.0 - np.cumsum(lab) / lab.sum()
    far = np.cumsum(1 - lab) / (1 - lab).sum()
    i = np.argmin(np.abs(frr - far))
    return float((frr[i] + far[i]) / 2)


def trivial_eer(vox_root):
    """Cosine of mean log-mel embeddings on the VoxCeleb trial list."""
    trials = [line.split() for line in _lines(os.path.join(vox_root, "meta", "veri_test2.txt"))]
    paths = sorted({p for t in trials for p in t[1:]})
    emb = {}
    for p in paths:
        x, _ = sf.read(os.path.join(vox_root, "wav", p))
        e = mean_log_mel(x)
        emb[p] = e / np.linalg.norm(e)
    scores = [emb[a] @ emb[b] for _, a, b in trials]
    return eer(scores, [int(t[0]) for t in trials])


def test_eer_oracle():
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    assert eer([0.9, 0.5, 0.6, 0.1], [1, 1, 0, 0]) == 0.5


# ---------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------


def test_voxceleb_layout(corpus):
    root, summary = corpus
    vox = os.path.join(root, "VoxCeleb1")
    wavs = _all_files(os.path.join(vox, "wav"))
    assert len(wavs) == 6 * 4
    pat = re.compile(r"^id1\d{4}/[A-Za-z0-9_-]{11}/\d{5}\.wav$")
    assert all(pat.match(p) for p in wavs), wavs[:3]
    spk_ids = sorted({p.split("/")[0] for p in wavs})
    assert spk_ids == [f"id{10001 + i}" for i in range(6)]
    # one video per session, utterances numbered from 00001 inside each video
    videos = {}
    for p in wavs:
        spk, vid, name = p.split("/")
        videos.setdefault((spk, vid), []).append(int(name[:5]))
    assert len(videos) == 6 * 2
    for nums in videos.values():
        assert sorted(nums) == list(range(1, len(nums) + 1))
    lines = _lines(os.path.join(vox, "meta", "veri_test2.txt"))
    assert lines and all(re.match(r"^[01] \S+\.wav \S+\.wav$", line) for line in lines)
    lang = _read_csv(os.path.join(vox, "meta", "languages.csv"))
    assert sorted(r["path"] for r in lang) == sorted(wavs)
    assert {r["language"] for r in lang} <= {"lang0", "lang1"}
    assert summary["voxceleb"]["num_trials"] == len(lines)


def test_cnceleb_layout(corpus):
    root, summary = corpus
    cn = os.path.join(root, "CN-Celeb_flac")
    cn2 = os.path.join(root, "CN-Celeb2_flac")
    genres = "|".join(syn.GENRES)
    dev = _lines(os.path.join(cn, "dev", "dev.lst"))
    spk2 = _lines(os.path.join(cn2, "spk.lst"))
    # 6 speakers: 2 eval, 4 train = 3 CN-Celeb1 dev + 1 CN-Celeb2
    assert dev == ["id00000", "id00001", "id00002"]
    assert spk2 == ["id10000"]
    data_pat = re.compile(rf"^id\d{{5}}/({genres})-\d\d-\d\d\d\.flac$")
    data = _all_files(os.path.join(cn, "data"))
    assert data and all(data_pat.match(p) for p in data), data[:3]
    for spk in dev:
        assert len([p for p in data if p.startswith(spk + "/")]) == 4
    data2 = _all_files(os.path.join(cn2, "data"))
    assert len(data2) == 4 and all(data_pat.match(p) and p.startswith("id10000/") for p in data2)

    lists = os.path.join(cn, "eval", "lists")
    enroll = [line.split() for line in _lines(os.path.join(lists, "enroll.lst"))]
    assert [e[0] for e in enroll] == ["id00003-enroll", "id00004-enroll"]
    assert all(e[1] == f"enroll/{e[0]}.wav" for e in enroll)
    assert _all_files(os.path.join(cn, "eval", "enroll")) == [
        "id00003-enroll.flac",
        "id00004-enroll.flac",
    ]
    test_lst = _lines(os.path.join(lists, "test.lst"))
    test_pat = re.compile(rf"^test/id0000[34]-({genres})-\d\d-\d\d\d\.wav$")
    assert test_lst and all(test_pat.match(t) for t in test_lst)
    assert sorted(_all_files(os.path.join(cn, "eval", "test"))) == sorted(
        t[len("test/") : -len(".wav")] + ".flac" for t in test_lst
    )
    trials = [line.split() for line in _lines(os.path.join(lists, "trials.lst"))]
    assert all(len(t) == 3 and t[0].endswith("-enroll") and t[2] in "01" for t in trials)
    # like the real list: every enrolment against every test utterance
    assert len(trials) == len(enroll) * len(test_lst)
    assert summary["cnceleb"]["num_trials"] == len(trials)


def test_cnceleb_enrolment_is_concatenation(corpus):
    root, _ = corpus
    cn = os.path.join(root, "CN-Celeb_flac")
    maps = [line.split() for line in _lines(os.path.join(cn, "eval", "lists", "enroll.map"))]
    assert [m[0] for m in maps] == ["id00003-enroll", "id00004-enroll"]
    for m in maps:
        spk = m[0].split("-")[0]
        parts = []
        genres = set()
        for rel in m[1:]:
            assert rel.startswith(spk + "/") and rel.endswith(".wav")
            path = os.path.join(cn, "data", rel[: -len(".wav")] + ".flac")
            assert os.path.isfile(path), path
            parts.append(sf.read(path, dtype="int16")[0])
            genres.add(os.path.basename(rel).rsplit("-", 2)[0])
        assert len(genres) == 1  # one genre (session) per enrolment
        enrol, sr = sf.read(os.path.join(cn, "eval", "enroll", f"{m[0]}.flac"), dtype="int16")
        assert sr == 16000
        np.testing.assert_array_equal(enrol, np.concatenate(parts))


def test_metadata_csvs(corpus):
    root, summary = corpus
    spk = _read_csv(os.path.join(root, "speakers.csv"))
    assert len(spk) == 6
    assert {r["pitch_class"] for r in spk} <= {"low", "high"}
    assert [r["split"] for r in spk] == ["train"] * 4 + ["test"] * 2
    assert [r["cnceleb_subset"] for r in spk] == ["CN-Celeb1-dev"] * 3 + ["CN-Celeb2"] + [
        "CN-Celeb1-eval"
    ] * 2
    for r in spk:
        assert 1 <= len(r["languages"].split(";")) <= 2
    utts = _read_csv(os.path.join(root, "utterances.csv"))
    # every written audio file is described, and nothing else
    listed = sorted(r["path"] for r in utts)
    on_disk = sorted(p for p in _all_files(root) if p.endswith((".wav", ".flac")))
    assert listed == on_disk
    assert {r["genre"] for r in utts} <= set(syn.GENRES)
    assert summary["num_utterances"] == 24


# ---------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------


def test_audio_format_and_durations(corpus):
    root, _ = corpus
    utts = _read_csv(os.path.join(root, "utterances.csv"))
    for r in utts:
        info = sf.info(os.path.join(root, r["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        dur = info.frames / info.samplerate
        assert abs(dur - float(r["duration"])) < 1e-3
        if r["role"] != "enroll":
            short = 0.5 - 1e-3 <= dur <= 1.9 + 1e-3
            normal = 0.6 - 1e-3 <= dur <= 1.0 + 1e-3
            assert short or normal, (r["path"], dur)
    # both layouts hold the same samples for the same utterance
    by_key = {}
    for r in utts:
        if r["role"] != "enroll":
            by_key.setdefault(r["utt"], []).append(r)
    assert len(by_key) == 24 and all(len(v) == 2 for v in by_key.values())
    for rows in list(by_key.values())[::5]:
        a, b = (sf.read(os.path.join(root, r["path"]), dtype="int16")[0] for r in rows)
        assert a.std() > 50  # not silence
        np.testing.assert_array_equal(a, b)
        assert rows[0]["language"] == rows[1]["language"] and rows[0]["genre"] == rows[1]["genre"]


def test_short_fraction(tmp_path):
    s = syn.generate_corpus(
        str(tmp_path),
        layout="voxceleb",
        num_speakers=3,
        num_utterances=2,
        num_sessions=2,
        duration_min=3.0,
        duration_max=3.5,
        short_fraction=1.0,
        progress=False,
    )
    for r in _read_csv(s["utterances_csv"]):
        assert 0.5 <= float(r["duration"]) <= 1.9


# ---------------------------------------------------------------------------
# trials
# ---------------------------------------------------------------------------


def test_voxceleb_trials(corpus):
    root, _ = corpus
    vox = os.path.join(root, "VoxCeleb1")
    trials = [line.split() for line in _lines(os.path.join(vox, "meta", "veri_test2.txt"))]
    lang = {r["path"]: r["language"] for r in _read_csv(os.path.join(vox, "meta", "languages.csv"))}
    spk_rows = _read_csv(os.path.join(root, "speakers.csv"))
    train = {r["voxceleb_id"] for r in spk_rows if r["split"] == "train"}
    test = {r["voxceleb_id"] for r in spk_rows if r["split"] == "test"}
    used = set()
    n_cross = 0
    for lab, a, b in trials:
        assert os.path.isfile(os.path.join(vox, "wav", a)) and os.path.isfile(
            os.path.join(vox, "wav", b)
        )
        sa, va = a.split("/")[:2]
        sb, vb = b.split("/")[:2]
        assert int(lab) == int(sa == sb)
        if lab == "1":
            assert va != vb  # enrol and test from different sessions (videos)
            n_cross += lang[a] != lang[b]
        used |= {sa, sb}
    # only test speakers in the trials, every one of them, disjoint from training
    assert used == test and not (used & train)
    n_target = sum(t[0] == "1" for t in trials)
    assert 0.25 < n_target / len(trials) < 0.75
    assert n_cross > 0
    assert len({tuple(sorted(t[1:])) for t in trials}) == len(trials)  # no duplicate pairs


def test_cnceleb_trials(corpus):
    root, summary = corpus
    cn = os.path.join(root, "CN-Celeb_flac")
    utts = {r["path"]: r for r in _read_csv(os.path.join(root, "utterances.csv"))}
    enroll = dict(line.split() for line in _lines(os.path.join(cn, "eval", "lists", "enroll.lst")))
    dev = set(_lines(os.path.join(cn, "dev", "dev.lst")))
    spk2 = set(_lines(os.path.join(root, "CN-Celeb2_flac", "spk.lst")))
    n_cross = 0
    per_spk = {}
    for e, t, lab in (
        line.split() for line in _lines(os.path.join(cn, "eval", "lists", "trials.lst"))
    ):
        e_path = os.path.join(cn, "eval", enroll[e][: -len(".wav")] + ".flac")
        t_rel = "CN-Celeb_flac/eval/" + t[: -len(".wav")] + ".flac"
        assert os.path.isfile(e_path) and os.path.isfile(os.path.join(root, t_rel))
        e_spk = e.split("-")[0]
        t_row = utts[t_rel]
        assert t_row["speaker"] == os.path.basename(t).split("-")[0]
        assert int(lab) == int(t_row["speaker"] == e_spk)
        e_row = utts[f"CN-Celeb_flac/eval/enroll/{e}.flac"]
        if lab == "1":
            n_cross += e_row["language"] != t_row["language"]
        per_spk[e_spk] = per_spk.get(e_spk, 0) + int(lab)
        assert e_spk not in dev and e_spk not in spk2
    assert n_cross > 0 and n_cross == summary["cnceleb"]["num_cross_language_target_trials"]
    assert set(per_spk) == {"id00003", "id00004"} and min(per_spk.values()) > 0
    assert not dev & spk2


# ---------------------------------------------------------------------------
# determinism, reuse, CLI, errors
# ---------------------------------------------------------------------------

TINY = {
    "num_speakers": 4,
    "num_utterances": 2,
    "num_sessions": 2,
    "duration_min": 0.5,
    "duration_max": 0.7,
    "progress": False,
}


def test_deterministic_by_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    syn.generate_corpus(a, layout="both", seed=7, **TINY)
    syn.generate_corpus(b, layout="both", seed=7, **TINY)
    syn.generate_corpus(c, layout="both", seed=8, **TINY)
    files = [f for f in _all_files(a) if f != "synthetic_corpus.json"]
    assert files == [f for f in _all_files(b) if f != "synthetic_corpus.json"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    # another seed: other speakers, other video ids, other audio
    wav_a = sorted(p for p in files if p.endswith(".flac"))
    wav_c = sorted(p for p in _all_files(c) if p.endswith(".flac"))
    assert wav_a and len(wav_a) == len(wav_c)
    for pa, pc in zip(wav_a, wav_c):
        assert not filecmp.cmp(os.path.join(a, pa), os.path.join(c, pc), shallow=False)
    assert _lines(os.path.join(a, "VoxCeleb1", "meta", "veri_test2.txt")) != _lines(
        os.path.join(c, "VoxCeleb1", "meta", "veri_test2.txt")
    )


def test_layout_choice_shares_audio(tmp_path):
    both, vox = str(tmp_path / "both"), str(tmp_path / "vox")
    syn.generate_corpus(both, layout="both", seed=1, **TINY)
    syn.generate_corpus(vox, layout="voxceleb", seed=1, **TINY)
    assert not os.path.exists(os.path.join(vox, "CN-Celeb_flac"))
    files = _all_files(os.path.join(vox, "VoxCeleb1"))
    match, mismatch, errors = filecmp.cmpfiles(
        os.path.join(vox, "VoxCeleb1"),
        os.path.join(both, "VoxCeleb1"),
        files,
        shallow=False,
    )
    assert len(match) == len(files) and not mismatch and not errors


def test_reuse_and_overwrite(tmp_path):
    out = str(tmp_path)
    first = syn.generate_corpus(out, layout="voxceleb", seed=0, **TINY)
    assert not first.get("reused")
    again = syn.generate_corpus(out, layout="voxceleb", seed=0, **TINY)
    assert again["reused"] and again["num_utterances"] == first["num_utterances"]
    # a file deleted from a complete corpus: regenerated, same bytes as before
    victim = os.path.join(out, _read_csv(first["utterances_csv"])[0]["path"])
    with open(victim, "rb") as f:
        original = f.read()
    os.remove(victim)
    again = syn.generate_corpus(out, layout="voxceleb", seed=0, **TINY)
    assert not again.get("reused")
    with open(victim, "rb") as f:
        assert f.read() == original
    with pytest.raises(FileExistsError, match="overwrite"):
        syn.generate_corpus(out, layout="voxceleb", seed=1, **TINY)
    third = syn.generate_corpus(out, layout="cnceleb", seed=1, overwrite=True, **TINY)
    assert not third.get("reused")
    assert not os.path.exists(os.path.join(out, "VoxCeleb1"))  # replaced, not mixed
    assert os.path.isdir(os.path.join(out, "CN-Celeb_flac"))


def test_replace_stale_reuses_a_match_and_replaces_the_rest(tmp_path):
    """``make demo``'s folders: never FileExistsError, reuse when the settings match."""
    out = str(tmp_path)
    first = syn.generate_corpus(out, layout="voxceleb", seed=0, replace_stale=True, **TINY)
    marker = os.path.join(out, "synthetic_corpus.json")
    stamp = os.stat(marker).st_mtime_ns
    again = syn.generate_corpus(out, layout="voxceleb", seed=0, replace_stale=True, **TINY)
    assert again["reused"] and os.stat(marker).st_mtime_ns == stamp
    assert again["num_utterances"] == first["num_utterances"]
    # other settings: replaced (the plain call would raise FileExistsError)
    other = syn.generate_corpus(out, layout="cnceleb", seed=1, replace_stale=True, **TINY)
    assert not other.get("reused")
    assert not os.path.exists(os.path.join(out, "VoxCeleb1"))
    assert os.path.isdir(os.path.join(out, "CN-Celeb_flac"))
    # an unfinished run (marker not complete): replaced as well
    with open(marker, encoding="utf-8") as f:
        record = json.load(f)
    record["complete"] = False
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(record, f)
    with pytest.raises(FileExistsError):
        syn.generate_corpus(out, layout="cnceleb", seed=1, **TINY)
    redone = syn.generate_corpus(out, layout="cnceleb", seed=1, replace_stale=True, **TINY)
    assert not redone.get("reused")
    with open(marker, encoding="utf-8") as f:
        assert json.load(f)["complete"]


def test_cli_prints_summary(tmp_path, capsys):
    summary = syn.main(
        [
            "--output",
            str(tmp_path),
            "--layout",
            "voxceleb",
            "--speakers",
            "4",
            "--utterances",
            "2",
            "--sessions",
            "2",
            "--duration-min",
            "0.5",
            "--duration-max",
            "0.6",
            "--seed",
            "2",
            "--test-speakers",
            "2",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "Synthetic corpus in" in out and "veri_test2.txt" in out
    assert summary["num_test_speakers"] == 2 and summary["num_speakers"] == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_sessions": 1}, "num_sessions"),
        ({"num_utterances": 1}, "num_utterances"),
        ({"test_speakers": 4}, "test_speakers"),
        ({"layout": "librispeech"}, "layout"),
        ({"duration_min": 2.0, "duration_max": 1.0}, "duration"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = dict(TINY, **kwargs)
    with pytest.raises(ValueError, match=message):
        syn.generate_corpus(str(tmp_path), **args)


# ---------------------------------------------------------------------------
# composable API and signal properties
# ---------------------------------------------------------------------------


def test_synthesize_utterance_api():
    spk = syn.make_speakers(3, np.random.default_rng(0))
    sess = syn.make_session(np.random.default_rng(1), genre="vlog")
    x = syn.synthesize_utterance(spk[0], "lang1", sess, 1.25, np.random.default_rng(5))
    y = syn.synthesize_utterance(spk[0], "lang1", sess, 1.25, np.random.default_rng(5))
    z = syn.synthesize_utterance(spk[0], "lang1", sess, 1.25, np.random.default_rng(6))
    assert x.dtype == np.float32 and x.shape == (20000,)
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 1.0 and x.std() > 1e-3
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, z)
    clean = syn.synthesize_utterance(spk[1], 0, None, 0.5, 1, sample_rate=8000)
    assert clean.shape == (4000,)
    with pytest.raises(ValueError, match="lang"):
        syn.synthesize_utterance(spk[0], "french", sess, 1.0, 0)


def test_speakers_are_distinct_voices():
    spks = syn.make_speakers(40, np.random.default_rng(0), num_languages=3)
    f0 = np.array([s.f0_mean for s in spks])
    assert len(set(np.round(f0, 3))) == 40
    low = [s.f0_mean for s in spks if s.pitch_class == "low"]
    high = [s.f0_mean for s in spks if s.pitch_class == "high"]
    assert low and high and max(low) < min(high)
    assert any(len(s.languages) == 2 for s in spks) and any(len(s.languages) == 1 for s in spks)
    assert {lang for s in spks for lang in s.languages} == {"lang0", "lang1", "lang2"}


def test_languages_have_different_inventories():
    a, b = syn.get_language(0), syn.get_language(1)
    assert a is syn.get_language("lang0")
    assert a.vowels.shape != b.vowels.shape or not np.allclose(a.vowels, b.vowels)


def test_singing_moves_pitch_more():
    sing = [syn.make_session(np.random.default_rng(i), genre="singing") for i in range(5)]
    talk = [syn.make_session(np.random.default_rng(i), genre="interview") for i in range(5)]
    assert min(s.pitch_movement * s.vibrato_scale for s in sing) > max(
        s.pitch_movement * s.vibrato_scale for s in talk
    )


def test_sessions_differ_in_channel():
    spk = syn.make_speakers(1, np.random.default_rng(0))[0]
    embs = []
    for k in range(2):
        sess = syn.make_session(np.random.default_rng(100 + k), genre="live_broadcast")
        embs.append(
            np.mean(
                [
                    mean_log_mel(syn.synthesize_utterance(spk, "lang0", sess, 1.0, j))
                    for j in range(3)
                ],
                axis=0,
            )
        )
    # the same speaker through two channels: average spectra differ by > 1 dB somewhere
    assert np.abs(embs[0] - embs[1]).max() * 10 / np.log(10) > 1.0


def session_cue_fraction(root):
    """P(same-session non-target score > cross-session target score), mean log-mel cosine.

    Over every pair of test-speaker utterances of the VoxCeleb layout: a
    same-session non-target pair is two speakers in one video (a shared
    recording), a cross-session target pair one speaker in two videos. The
    fraction is taken over all (non-target, target) pairs of pairs, ties
    counting half. Returns (fraction, number of same-session non-target pairs).
    """
    rows = [
        r
        for r in _read_csv(os.path.join(root, "utterances.csv"))
        if r["layout"] == "voxceleb" and r["role"] == "test"
    ]
    emb = np.array([mean_log_mel(sf.read(os.path.join(root, r["path"]))[0]) for r in rows])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(len(rows), 1)
    scores = np.sum(emb[i] * emb[j], axis=1)
    spk = np.array([r["speaker"] for r in rows])
    ses = np.array([r["session"] for r in rows])
    same_spk, same_ses = spk[i] == spk[j], ses[i] == ses[j]
    nontarget = scores[~same_spk & same_ses]
    target = np.sort(scores[same_spk & ~same_ses])
    if len(nontarget) == 0:
        return float("nan"), 0
    above = np.searchsorted(target, nontarget, side="left")
    ties = np.searchsorted(target, nontarget, side="right") - above
    return float(np.mean((above + 0.5 * ties) / len(target))), len(nontarget)


def test_session_cue_fraction_oracle(tmp_path):
    # 2 speakers x 2 sessions in one shared video pair; embeddings written directly
    rows = []
    root = str(tmp_path)
    tone = {("a", "v1"): 300, ("a", "v2"): 2000, ("b", "v1"): 330, ("b", "v2"): 2100}
    for (spk, vid), f in tone.items():
        for k in range(2):
            path = f"VoxCeleb1/wav/{spk}/{vid}/{k:05d}.wav"
            os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            t = np.arange(8000) / 16000
            sf.write(os.path.join(root, path), 0.1 * np.sin(2 * np.pi * (f + 5 * k) * t), 16000)
            rows.append({"path": path, "layout": "voxceleb", "role": "test", "speaker": spk, "session": vid})
    with open(os.path.join(root, "utterances.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # the "embedding" follows the session (tone), never the speaker: every
    # same-session non-target outscores every cross-session target
    frac, n = session_cue_fraction(root)
    assert n == 2 * 2 * 2 and frac == 1.0


@pytest.fixture(scope="module")
def trivial_corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("trivial"))
    syn.generate_corpus(
        root,
        layout="voxceleb",
        num_speakers=14,
        num_utterances=6,
        num_sessions=3,
        duration_min=1.0,
        duration_max=1.5,
        short_fraction=0.0,
        test_speakers=10,
        seed=0,
        progress=False,
    )
    return root


def test_trivial_embedding_discriminates_speakers(trivial_corpus):
    """Mean log-mel + cosine: clearly better than chance, clearly not perfect."""
    value = trivial_eer(os.path.join(trivial_corpus, "VoxCeleb1"))
    assert 0.02 < value < 0.45, value


def test_session_nuisance_fools_a_trivial_embedding(trivial_corpus, tmp_path):
    """Same-video non-targets outscore cross-video targets materially often.

    Measured on this corpus (seed 0): 0.26 at the default strength (1.0),
    0.35 at 1.5, 0.16 with session_strength=0 (flat, dry channels; only genre
    style and noise).
    """
    frac, n = session_cue_fraction(trivial_corpus)
    assert n > 0
    flat = str(tmp_path / "flat")
    syn.generate_corpus(
        flat,
        layout="voxceleb",
        num_speakers=14,
        num_utterances=6,
        num_sessions=3,
        duration_min=1.0,
        duration_max=1.5,
        short_fraction=0.0,
        test_speakers=10,
        seed=0,
        session_strength=0.0,
        progress=False,
    )
    frac_flat, _ = session_cue_fraction(flat)
    assert frac >= 0.22 and frac > frac_flat + 0.07, (frac, frac_flat)


def test_recordings_are_shared_within_train_and_within_test(corpus):
    root, _ = corpus
    rows = [r for r in _read_csv(os.path.join(root, "utterances.csv")) if r["layout"] == "voxceleb"]
    by_video, videos_of = {}, {}
    for r in rows:
        by_video.setdefault(r["session"], set()).add((r["true_speaker"], r["role"]))
        videos_of.setdefault(r["true_speaker"], set()).add(r["session"])
    assert all(len(v) == 2 for v in videos_of.values())  # 2 sessions each, distinct videos
    assert all(1 <= len(members) <= 2 for members in by_video.values())
    assert all(len({role for _, role in members}) == 1 for members in by_video.values())
    assert any(len(members) == 2 for members in by_video.values())
    # the trial list has same-video non-targets (a speaker's folder shares the video id)
    trials = [line.split() for line in _lines(os.path.join(root, "VoxCeleb1", "meta", "veri_test2.txt"))]
    assert any(t[0] == "0" and t[1].split("/")[1] == t[2].split("/")[1] for t in trials)


def test_private_sessions_and_session_strength_zero(tmp_path):
    s = syn.generate_corpus(
        str(tmp_path), layout="voxceleb", seed=4, speakers_per_session=1, **NOISY
    )
    rows = _read_csv(s["utterances_csv"])
    owners = {}
    for r in rows:
        owners.setdefault(r["session"], set()).add(r["speaker"])
    assert all(len(o) == 1 for o in owners.values())
    flat = syn.make_session(np.random.default_rng(0), genre="vlog", strength=0.0)
    assert flat.rt60 == 0.0 and flat.channel_tilt_db == 0.0 and set(flat.eq_gains_db) <= {0.0}
    one = syn.make_session(np.random.default_rng(0), genre="vlog", strength=1.0)
    two = syn.make_session(np.random.default_rng(0), genre="vlog", strength=2.0)
    assert two.snr_db == pytest.approx(one.snr_db - syn.SNR_DROP_DB)
    assert two.rt60 == pytest.approx(2 * one.rt60)
    assert np.allclose(np.array(two.eq_gains_db), 2 * np.array(one.eq_gains_db))


# ---------------------------------------------------------------------------
# label noise, confusable speakers, shared recordings (session nuisance)
# ---------------------------------------------------------------------------

NOISY = dict(TINY, num_speakers=8, num_utterances=5, test_speakers=2)


def _noise_lists(root):
    vox = _read_csv(os.path.join(root, "VoxCeleb1", "meta", "label_noise.csv"))
    cn = []
    for sub in ("CN-Celeb_flac", "CN-Celeb2_flac"):
        for r in _read_csv(os.path.join(root, sub, "meta", "label_noise.csv")):
            cn.append(dict(r, root=sub))
    return vox, cn


def test_label_noise_files_exact_fraction_under_other_training_speakers(tmp_path):
    s = syn.generate_corpus(str(tmp_path), layout="both", seed=5, label_noise=0.3, **NOISY)
    n_train_utts = 6 * 5
    expected = int(np.floor(0.3 * n_train_utts + 0.5))  # 9
    assert expected == 9 and s["num_label_noise"] == expected
    vox, cn = _noise_lists(str(tmp_path))
    assert len(vox) == expected and len(cn) == expected
    spk = _read_csv(s["speakers_csv"])
    train_vox = {r["voxceleb_id"] for r in spk if r["split"] == "train"}
    train_cn = {r["cnceleb_id"] for r in spk if r["split"] == "train"}
    for r in vox:
        assert r["given_speaker"] != r["true_speaker"]
        assert {r["given_speaker"], r["true_speaker"]} <= train_vox
        assert r["path"].split("/")[0] == r["given_speaker"]
        assert os.path.isfile(os.path.join(str(tmp_path), "VoxCeleb1", "wav", r["path"]))
    for r in cn:
        assert r["given_speaker"] != r["true_speaker"]
        assert {r["given_speaker"], r["true_speaker"]} <= train_cn
        assert r["path"].split("/")[0] == r["given_speaker"] and r["path"].endswith(".wav")
        flac = os.path.join(str(tmp_path), r["root"], "data", r["path"][: -len(".wav")] + ".flac")
        assert os.path.isfile(flac), flac
    # utterances.csv tells the same story, and test speakers are untouched
    utts = _read_csv(s["utterances_csv"])
    noisy = [u for u in utts if u["label_noise"] == "1"]
    assert len(noisy) == 2 * expected
    assert all(u["speaker"] != u["true_speaker"] and u["role"] == "train" for u in noisy)
    assert all(u["speaker"] == u["true_speaker"] for u in utts if u["label_noise"] == "0")
    # the same utterances in both layouts (same layout-independent keys)
    assert sorted(u["utt"] for u in noisy if u["layout"] == "voxceleb") == sorted(
        u["utt"] for u in noisy if u["layout"] == "cnceleb"
    )
    # no file was lost to a name collision
    assert len(_all_files(os.path.join(str(tmp_path), "VoxCeleb1", "wav"))) == 8 * 5


def test_label_noise_reproducible_by_seed(tmp_path):
    def chosen(name, seed):
        syn.generate_corpus(str(tmp_path / name), layout="voxceleb", seed=seed, label_noise=0.3, **NOISY)
        return _read_csv(str(tmp_path / name / "VoxCeleb1" / "meta" / "label_noise.csv"))

    a, b, c = chosen("a", 1), chosen("b", 1), chosen("c", 2)
    assert a == b and len(a) == len(c) == 9
    assert {r["path"] for r in a} != {r["path"] for r in c}


def test_no_label_noise_writes_no_list(corpus):
    root, summary = corpus
    assert summary["num_label_noise"] == 0
    assert not os.path.exists(os.path.join(root, "VoxCeleb1", "meta", "label_noise.csv"))
    assert not os.path.exists(os.path.join(root, "CN-Celeb_flac", "meta", "label_noise.csv"))


def test_confusable_pairs_recorded_among_training_speakers(tmp_path):
    s = syn.generate_corpus(str(tmp_path), layout="voxceleb", seed=2, confusable_pairs=2, **NOISY)
    spk = _read_csv(s["speakers_csv"])
    partner = {int(r["speaker_index"]): int(r["confusable_with"]) for r in spk if r["confusable_with"]}
    assert len(partner) == 4 and s["num_confusable_pairs"] == 2
    assert all(partner[partner[i]] == i and partner[i] != i for i in partner)
    assert all(spk[i]["split"] == "train" for i in partner)
    for a, b in partner.items():
        fa, fb = float(spk[a]["f0_mean_hz"]), float(spk[b]["f0_mean_hz"])
        # one quarter of the between-speaker spread of log F0 (0.173)
        assert abs(abs(np.log(fa / fb)) - 0.25 * 0.173) < 2e-3
    with pytest.raises(ValueError, match="confusable_pairs"):
        syn.generate_corpus(str(tmp_path / "x"), layout="voxceleb", confusable_pairs=4, **NOISY)


def test_confusable_speaker_is_near_but_not_identical():
    spks = syn.make_speakers(8, np.random.default_rng(4))
    twin = syn.confusable_speaker(spks[0], np.random.default_rng(9), index=8)
    assert twin.index == 8 and twin.languages == spks[0].languages
    for name, (sd, lo, hi) in syn.voices._VOICE_SPREAD.items():
        moved = abs(getattr(twin, name) - getattr(spks[0], name))
        assert moved <= 0.25 * sd + 1e-9 and (moved > 0 or getattr(twin, name) in (lo, hi))

    def voice(spk):
        sess = syn.make_session(np.random.default_rng(1), genre="interview", strength=0.0)
        e = np.mean(
            [mean_log_mel(syn.synthesize_utterance(spk, "lang0", sess, 0.8, j)) for j in range(3)],
            axis=0,
        )
        return e - e.mean()

    v = [voice(s) for s in spks] + [voice(twin)]
    d_twin = np.linalg.norm(v[8] - v[0])
    d_others = [np.linalg.norm(v[j] - v[0]) for j in range(1, 8)]
    assert 0 < d_twin < min(d_others), (d_twin, d_others)


def test_generator_is_independent_of_the_code_it_exercises():
    """The generator imports nothing from sb_angcl (it is no part of the installed package)."""
    import ast
    from pathlib import Path

    folder = Path(syn.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("sb_angcl"), (
                    f"{path.name} imports {name}"
                )


def test_genres_are_those_the_cnceleb_preparation_knows():
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes/CNCeleb/SpeakerRec/cnceleb_prepare.py"
    tree = ast.parse(path.read_text())
    genres = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "GENRES"
    )
    assert syn.GENRES == genres


def test_generator_is_not_in_the_wheel():
    """setup.cfg keeps the generator out of the installed packages (the library is sb_angcl only)."""
    import configparser

    from setuptools import find_packages

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = configparser.ConfigParser()
    config.read(os.path.join(root, "setup.cfg"))
    include = config["options.packages.find"]["include"].split()
    packages = find_packages(root, include=include)
    assert "sb_angcl" in packages
    assert not [p for p in packages if p.startswith("synthetic_corpus")], packages
    assert os.path.isfile(os.path.join(root, "synthetic_corpus", "__main__.py"))
