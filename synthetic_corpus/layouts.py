"""The VoxCeleb1 and CN-Celeb layouts: file names, trial lists, metadata files.

Authors
 * sb-angcl contributors 2025
"""

import csv
import os

import numpy as np
import soundfile as sf

from synthetic_corpus.synthesis import SAMPLE_RATE

#: File name of the label-noise list (in ``VoxCeleb1/meta/``, ``CN-Celeb_flac/meta/``,
#: ``CN-Celeb2_flac/meta/``) and its header.
LABEL_NOISE_CSV = "label_noise.csv"
LABEL_NOISE_HEADER = "path,given_speaker,true_speaker"


def assign_paths(plan):
    """Fill every utterance's layout fields; choose the CN-Celeb enrolment parts.

    The enrolment of a CN-Celeb eval speaker is the first utterances (at most
    3, leaving at least 1 test utterance) of its largest session; they stay
    under ``CN-Celeb_flac/data/`` and are joined into ``eval/enroll/``.

    Arguments
    ---------
    plan : CorpusPlan
        The plan (its utterances are updated in place).

    Returns
    -------
    dict
        Test speaker index -> list of its enrolment :class:`Utterance`.

    Example
    -------
    >>> from synthetic_corpus.plan import plan_corpus
    >>> plan = plan_corpus(6, 4, 2, 2, 1.0, 2.0, 0.0, 0, None)
    >>> enrol = assign_paths(plan)
    >>> sorted(enrol), plan.utts[0].cn_role, plan.utts[0].vox_rel.startswith("id10001/")
    ([4, 5], 'train', True)
    """
    enrol = {}
    for i in plan.test_speakers:
        mine = [u for u in plan.utts if u.speaker == i]
        sizes = np.bincount([u.session for u in mine], minlength=len(plan.sessions[i]))
        s = int(np.argmax(sizes))
        sess_utts = [u for u in mine if u.session == s]
        k = max(1, min(3, len(sess_utts) - 1)) if len(mine) > 1 else 1
        enrol[i] = sess_utts[:k]
    enrol_ids = {id(u) for v in enrol.values() for u in v}
    test_set, cn2_set = set(plan.test_speakers), set(plan.cn2_speakers)
    cn_session = cn_session_names(plan)
    paths = vox_paths(plan)
    for u in plan.utts:
        u.vox_rel = paths[id(u)]
        u.cn_session = cn_session[id(u)]
        cid = plan.cn_ids[u.filed]
        base = f"{u.cn_session}-{u.index_in_session + 1:03d}"
        if u.speaker in test_set:
            if id(u) in enrol_ids:
                u.cn_rel, u.cn_role = f"CN-Celeb_flac/data/{cid}/{base}.flac", "enroll_part"
            else:
                u.cn_rel, u.cn_role = f"CN-Celeb_flac/eval/test/{cid}-{base}.flac", "test"
        elif u.filed in cn2_set:
            u.cn_rel, u.cn_role = f"CN-Celeb2_flac/data/{cid}/{base}.flac", "train"
        else:
            u.cn_rel, u.cn_role = f"CN-Celeb_flac/data/{cid}/{base}.flac", "train"
    return enrol


def vox_paths(plan):
    """VoxCeleb path (relative to ``wav/``) of every utterance, keyed by ``id(utt)``.

    Files are ``<filed speaker>/<video>/<NNNNN>.wav``. A relabelled utterance
    goes into the given speaker's folder under its own recording's video id,
    numbered after whatever that folder already holds (the given speaker may
    appear in the same video).
    """
    paths, used = {}, {}
    for u in plan.utts:
        if u.given < 0:
            key = (u.speaker, plan.video_ids[u.speaker][u.session])
            used[key] = max(used.get(key, 0), u.index_in_session + 1)
    for u in plan.utts:
        video = plan.video_ids[u.speaker][u.session]
        if u.given < 0:
            number = u.index_in_session + 1
        else:
            key = (u.given, video)
            number = used[key] = used.get(key, 0) + 1
        paths[id(u)] = f"{plan.vox_ids[u.filed]}/{video}/{number:05d}.wav"
    return paths


def cn_session_names(plan):
    """CN-Celeb ``<genre>-<ss>`` of every utterance, keyed by ``id(utt)``.

    A relabelled utterance (label noise) is filed in the given speaker's
    folder as a session of its own, numbered after that speaker's sessions of
    the same genre, so that no file name collides.
    """
    names, extra = {}, {}
    counts = [dict() for _ in plan.speakers]
    for i, gss in enumerate(plan.genre_ss):
        for name in gss:
            g = name.rsplit("-", 1)[0]
            counts[i][g] = counts[i].get(g, 0) + 1
    for u in plan.utts:
        if u.given < 0:
            names[id(u)] = plan.genre_ss[u.speaker][u.session]
            continue
        key = (u.given, u.speaker, u.session)
        if key not in extra:
            c = counts[u.given]
            c[u.genre] = c.get(u.genre, 0) + 1
            extra[key] = f"{u.genre}-{c[u.genre]:02d}"
        names[id(u)] = extra[key]
    return names


def vox_trials(plan, seed, per_side=6):
    """Balanced-ish VoxCeleb trial list over test speakers (pairs of vox paths).

    Targets: other sessions of the enrolment speaker, a third cross-language
    where possible. Non-targets: a third from other speakers of the same
    recording (same video) where there are any, the rest at random.
    """
    rng = np.random.default_rng([seed, 5])
    test = set(plan.test_speakers)
    by_spk = {}
    for u in plan.utts:
        if u.speaker in test:
            by_spk.setdefault(u.speaker, []).append(u)
    trials, seen = [], set()
    all_test = [u for s in plan.test_speakers for u in by_spk.get(s, [])]
    for e in all_test:
        cands = [u for u in by_spk[e.speaker] if u.session != e.session]
        # cross-language targets first (a third of the targets where possible)
        cross = [u for u in cands if u.language != e.language]
        n_cross = min(len(cross), max(1, per_side // 3))
        picks = [cross[j] for j in rng.permutation(len(cross))[:n_cross]]
        rest = [u for u in cands if all(u is not p for p in picks)]
        picks += [rest[j] for j in rng.permutation(len(rest))[: per_side - n_cross]]
        others = [u for u in all_test if u.speaker != e.speaker]
        same_rec = [u for u in others if u.recording == e.recording]
        n_same = min(len(same_rec), max(1, per_side // 3))
        nontargets = [same_rec[j] for j in rng.permutation(len(same_rec))[:n_same]]
        rest = [u for u in others if u.recording != e.recording]
        nontargets += [rest[j] for j in rng.permutation(len(rest))[: per_side - n_same]]
        for lab, group in ((1, picks), (0, nontargets)):
            for t in group:
                key = tuple(sorted((e.vox_rel, t.vox_rel)))
                if key in seen:
                    continue
                seen.add(key)
                trials.append((lab, e.vox_rel, t.vox_rel))
    return trials


def write_lines(path, lines):
    """Write ``lines`` (newline-terminated, UTF-8) to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def write_audio(path, pcm, fmt):
    """Write 16-bit ``pcm`` at :data:`SAMPLE_RATE` as ``fmt`` (WAV or FLAC)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format=fmt)


def _utterance_row(u, layout, path, speaker, true_speaker, session, role):
    """One row of ``utterances.csv``."""
    return {
        "utt": u.key,
        "path": path,
        "layout": layout,
        "speaker": speaker,
        "speaker_index": u.speaker,
        "true_speaker": true_speaker,
        "label_noise": int(u.given >= 0),
        "session": session,
        "recording": u.recording,
        "language": u.language,
        "genre": u.genre,
        "duration": f"{u.audio_dur:.3f}",
        "role": role,
    }


def write_voxceleb(plan, output, seed, trials_per_utterance, label_noise):
    """Write the VoxCeleb1 metadata: trial list, languages, label-noise list.

    The audio is written by the generator (``VoxCeleb1/wav/<vox_rel>``).

    Arguments
    ---------
    plan : CorpusPlan
        The plan, with paths assigned (:func:`assign_paths`).
    seed : int
        Seed of the trial draw.
    trials_per_utterance : int
        Target and non-target trials per enrolment utterance (each).
    label_noise : bool
        Write ``meta/label_noise.csv``.

    Returns
    -------
    dict
        The ``voxceleb`` part of the summary.
    list of dict
        The layout's rows of ``utterances.csv``.

    Example
    -------
    >>> import tempfile
    >>> from synthetic_corpus.plan import plan_corpus
    >>> plan = plan_corpus(6, 4, 2, 2, 1.0, 2.0, 0.0, 0, None)
    >>> _ = assign_paths(plan)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     summary, rows = write_voxceleb(plan, out, 0, 2, False)
    >>> summary["num_trials"] > 0, len(rows)
    (True, 24)
    """
    trials = vox_trials(plan, seed, per_side=trials_per_utterance)
    vox_root = os.path.join(output, "VoxCeleb1")
    meta = os.path.join(vox_root, "meta")
    write_lines(os.path.join(meta, "veri_test2.txt"), [f"{lab} {a} {b}" for lab, a, b in trials])
    write_lines(
        os.path.join(meta, "languages.csv"),
        ["path,language"] + [f"{u.vox_rel},{u.language}" for u in plan.utts],
    )
    if label_noise:
        write_lines(
            os.path.join(meta, LABEL_NOISE_CSV),
            [LABEL_NOISE_HEADER]
            + [
                f"{u.vox_rel},{plan.vox_ids[u.given]},{plan.vox_ids[u.speaker]}"
                for u in plan.utts
                if u.given >= 0
            ],
        )
    lang_of = {u.vox_rel: u.language for u in plan.utts}
    summary = {
        "root": vox_root,
        "wav_dir": os.path.join(vox_root, "wav"),
        "trials": os.path.join(meta, "veri_test2.txt"),
        "languages_csv": os.path.join(meta, "languages.csv"),
        "num_trials": len(trials),
        "num_target_trials": sum(lab for lab, _, _ in trials),
        "num_cross_language_target_trials": sum(
            1 for lab, a, b in trials if lab == 1 and lang_of[a] != lang_of[b]
        ),
    }
    test_set = set(plan.test_speakers)
    rows = [
        _utterance_row(
            u,
            "voxceleb",
            f"VoxCeleb1/wav/{u.vox_rel}",
            plan.vox_ids[u.filed],
            plan.vox_ids[u.speaker],
            plan.video_ids[u.speaker][u.session],
            "test" if u.speaker in test_set else "train",
        )
        for u in plan.utts
    ]
    return summary, rows


def write_cnceleb(plan, output, enrol, enrol_audio, label_noise):
    """Write the CN-Celeb lists and the concatenated enrolment files.

    The other audio is written by the generator (``<cn_rel>``).

    Arguments
    ---------
    plan : CorpusPlan
        The plan, with paths assigned (:func:`assign_paths`).
    enrol : dict
        Test speaker index -> enrolment parts (from :func:`assign_paths`).
    enrol_audio : dict
        ``id(utt)`` -> int16 audio of every enrolment part.
    label_noise : bool
        Write ``meta/label_noise.csv`` in both subsets.

    Returns
    -------
    dict
        The ``cnceleb`` part of the summary.
    list of dict
        The layout's rows of ``utterances.csv`` (enrolment files first).

    Example
    -------
    >>> import tempfile
    >>> from synthetic_corpus.plan import plan_corpus
    >>> plan = plan_corpus(6, 4, 2, 2, 1.0, 2.0, 0.0, 0, None)
    >>> enrol = assign_paths(plan)
    >>> audio = {id(u): np.zeros(800, dtype=np.int16) for v in enrol.values() for u in v}
    >>> with tempfile.TemporaryDirectory() as out:
    ...     summary, rows = write_cnceleb(plan, out, enrol, audio, False)
    >>> summary["num_eval_speakers"], len(rows)
    (2, 26)
    """
    cn_root = os.path.join(output, "CN-Celeb_flac")
    cn2_root = os.path.join(output, "CN-Celeb2_flac")
    lists = os.path.join(cn_root, "eval", "lists")
    write_lines(os.path.join(cn_root, "dev", "dev.lst"), [plan.cn_ids[i] for i in plan.dev_speakers])
    write_lines(os.path.join(cn2_root, "spk.lst"), [plan.cn_ids[i] for i in plan.cn2_speakers])
    if label_noise:
        for root in (cn_root, cn2_root):
            _write_cn_label_noise(plan, output, root)
    enroll_lst, enroll_map, rows = _write_cn_enrolment(plan, cn_root, enrol, enrol_audio)
    tests = [u for u in plan.utts if u.cn_role == "test"]
    test_lst = [u.cn_rel.split("/eval/", 1)[1][: -len(".flac")] + ".wav" for u in tests]
    trials = [
        (f"{plan.cn_ids[i]}-enroll", rel, int(u.speaker == i), enrol[i][0].language, u.language)
        for i in plan.test_speakers
        for u, rel in zip(tests, test_lst)
    ]
    write_lines(os.path.join(lists, "enroll.lst"), enroll_lst)
    write_lines(os.path.join(lists, "enroll.map"), enroll_map)
    write_lines(os.path.join(lists, "test.lst"), test_lst)
    write_lines(os.path.join(lists, "trials.lst"), [f"{e} {t} {lab}" for e, t, lab, _, _ in trials])
    summary = {
        "root": cn_root,
        "cnceleb2_root": cn2_root,
        "dev_list": os.path.join(cn_root, "dev", "dev.lst"),
        "cnceleb2_speakers": os.path.join(cn2_root, "spk.lst"),
        "enroll_lst": os.path.join(lists, "enroll.lst"),
        "enroll_map": os.path.join(lists, "enroll.map"),
        "test_lst": os.path.join(lists, "test.lst"),
        "trials": os.path.join(lists, "trials.lst"),
        "num_trials": len(trials),
        "num_target_trials": sum(t[2] for t in trials),
        "num_cross_language_target_trials": sum(1 for t in trials if t[2] == 1 and t[3] != t[4]),
        "num_dev_speakers": len(plan.dev_speakers),
        "num_cnceleb2_speakers": len(plan.cn2_speakers),
        "num_eval_speakers": len(plan.test_speakers),
    }
    rows += [
        _utterance_row(
            u,
            "cnceleb",
            u.cn_rel,
            plan.cn_ids[u.filed],
            plan.cn_ids[u.speaker],
            u.cn_session,
            u.cn_role,
        )
        for u in plan.utts
    ]
    return summary, rows


def _write_cn_label_noise(plan, output, root):
    """``<root>/meta/label_noise.csv``: the relabelled files of one subset."""
    prefix = os.path.relpath(os.path.join(root, "data"), output) + "/"
    write_lines(
        os.path.join(root, "meta", LABEL_NOISE_CSV),
        [LABEL_NOISE_HEADER]
        + [
            f"{u.cn_rel[len(prefix) : -len('.flac')]}.wav,"
            f"{plan.cn_ids[u.given]},{plan.cn_ids[u.speaker]}"
            for u in plan.utts
            if u.given >= 0 and u.cn_rel.startswith(prefix)
        ],
    )


def _write_cn_enrolment(plan, cn_root, enrol, enrol_audio):
    """Join each eval speaker's enrolment parts into ``eval/enroll/<id>-enroll.flac``.

    Returns the lines of ``enroll.lst`` and ``enroll.map`` and the
    enrolment files' rows of ``utterances.csv``.
    """
    enroll_lst, enroll_map, rows = [], [], []
    for i in plan.test_speakers:
        cid = plan.cn_ids[i]
        parts = enrol[i]
        pcm = np.concatenate([enrol_audio[id(u)] for u in parts])
        write_audio(os.path.join(cn_root, "eval", "enroll", f"{cid}-enroll.flac"), pcm, "FLAC")
        enroll_lst.append(f"{cid}-enroll enroll/{cid}-enroll.wav")
        rel_parts = [u.cn_rel.split("/data/", 1)[1][: -len(".flac")] + ".wav" for u in parts]
        enroll_map.append(f"{cid}-enroll " + " ".join(rel_parts))
        rows.append(
            {
                "utt": "+".join(u.key for u in parts),
                "path": f"CN-Celeb_flac/eval/enroll/{cid}-enroll.flac",
                "layout": "cnceleb",
                "speaker": cid,
                "speaker_index": i,
                "true_speaker": cid,
                "label_noise": 0,
                "session": plan.genre_ss[i][parts[0].session],
                "recording": parts[0].recording,
                "language": parts[0].language,
                "genre": parts[0].genre,
                "duration": f"{len(pcm) / SAMPLE_RATE:.3f}",
                "role": "enroll",
            }
        )
    return enroll_lst, enroll_map, rows


#: Columns of ``utterances.csv``.
UTTERANCE_FIELDS = [
    "utt",
    "path",
    "layout",
    "speaker",
    "speaker_index",
    "true_speaker",
    "label_noise",
    "session",
    "recording",
    "language",
    "genre",
    "duration",
    "role",
]

#: Columns of ``speakers.csv``.
SPEAKER_FIELDS = [
    "speaker_index",
    "voxceleb_id",
    "cnceleb_id",
    "pitch_class",
    "f0_mean_hz",
    "vtl_scale",
    "languages",
    "split",
    "cnceleb_subset",
    "confusable_with",
]


def write_utterances_csv(path, rows):
    """Write ``utterances.csv`` (:data:`UTTERANCE_FIELDS`)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=UTTERANCE_FIELDS)
        w.writeheader()
        w.writerows(rows)


def write_speakers_csv(path, plan):
    """Write ``speakers.csv`` (:data:`SPEAKER_FIELDS`): one row per speaker."""
    test_set, cn2_set = set(plan.test_speakers), set(plan.cn2_speakers)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(SPEAKER_FIELDS)
        for i, spk in enumerate(plan.speakers):
            subset = (
                "CN-Celeb1-eval"
                if i in test_set
                else ("CN-Celeb2" if i in cn2_set else "CN-Celeb1-dev")
            )
            w.writerow(
                [
                    i,
                    plan.vox_ids[i],
                    plan.cn_ids[i],
                    spk.pitch_class,
                    f"{spk.f0_mean:.1f}",
                    f"{spk.vtl_scale:.3f}",
                    ";".join(spk.languages),
                    "test" if i in test_set else "train",
                    subset,
                    plan.confusable.get(i, ""),
                ]
            )
