"""Corpus plan: who speaks, in which recordings, which utterances, filed where.

Nothing here writes audio: :func:`plan_corpus` draws the speakers, the shared
recordings and every utterance (with its own seed), the CN-Celeb subsets and
the confusable pairs and label noise.

Authors
 * sb-angcl contributors 2025
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np

from synthetic_corpus.languages import language_names
from synthetic_corpus.sessions import (
    DEFAULT_SESSION_STRENGTH,
    GENRE_WEIGHTS,
    GENRES,
    make_session,
)
from synthetic_corpus.voices import confusable_speaker, make_speakers

_VIDEO_ID_ALPHABET = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
)


@dataclass
class Utterance:
    """One planned utterance; the layout fields are filled when the corpus is written.

    Arguments
    ---------
    speaker : int
        Index of the true speaker.
    session : int
        Index of the speaker's session.
    index_in_session : int
        Position within the session (0-based).
    language, genre : str
        Language spoken and genre of the session.
    duration : float
        Planned length (s).
    seed : tuple
        Seed of the utterance's own random generator.
    recording : int
        Shared recording (video / room) the session belongs to.
    given : int
        Speaker the file is filed under (label noise); -1: its own.
    vox_rel, cn_rel, cn_role, cn_session : str
        VoxCeleb path (relative to ``wav/``), CN-Celeb path (relative to the
        corpus folder, ``.flac``), CN-Celeb role (train / test / enroll_part)
        and CN-Celeb session name ``<genre>-<ss>`` (as filed).
    audio_dur : float
        Length of the written audio (s).

    Example
    -------
    >>> u = Utterance(3, 0, 1, "lang0", "vlog", 1.5, (0, 4, 3, 0, 1), given=5)
    >>> u.key, u.filed
    ('s0003-1-002', 5)
    """

    speaker: int
    session: int
    index_in_session: int
    language: str
    genre: str
    duration: float
    seed: tuple
    recording: int = 0  # shared recording (video / room) the session belongs to
    given: int = -1  # speaker the file is filed under (label noise); -1: its own
    vox_rel: str = ""
    cn_rel: str = ""  # relative to DIR (with .flac)
    cn_role: str = ""
    cn_session: str = ""
    audio_dur: float = 0.0

    @property
    def key(self):
        """Layout-independent id: speaker index, session, utterance (1-based)."""
        return f"s{self.speaker:04d}-{self.session + 1}-{self.index_in_session + 1:03d}"

    @property
    def filed(self):
        """Index of the speaker the utterance is filed under."""
        return self.speaker if self.given < 0 else self.given


@dataclass
class CorpusPlan:
    """Everything :func:`plan_corpus` decides, indexed by speaker where per speaker.

    Arguments
    ---------
    sessions, session_langs, video_ids : list of list
        Per speaker: its sessions' :class:`SessionProfile`, languages and
        VoxCeleb video ids.
    utts : list of Utterance
        Every utterance, speaker by speaker.
    test_speakers, cn2_speakers, dev_speakers : list of int
        Test speakers; training speakers of CN-Celeb2 and of CN-Celeb1 dev.
    vox_ids, cn_ids : list of str
        Speaker ids in the two layouts.
    genre_ss : list of list
        Per speaker: the sessions' CN-Celeb names ``<genre>-<ss>``.
    recordings : list of list
        Per speaker: the sessions' recording indices.
    confusable : dict
        Speaker index -> index of its confusable partner.

    Example
    -------
    >>> CorpusPlan([], [], [], [], [], [], [], [], [], []).confusable
    {}
    """

    speakers: list
    sessions: list  # per speaker list of SessionProfile
    session_langs: list  # per speaker list of language names
    video_ids: list  # per speaker list of str
    utts: list  # list of Utterance
    test_speakers: list  # speaker indices
    cn2_speakers: list
    dev_speakers: list
    vox_ids: list
    cn_ids: list
    genre_ss: list = field(default_factory=list)  # per speaker list of "genre-ss"
    recordings: list = field(default_factory=list)  # per speaker list of recording index
    confusable: dict = field(default_factory=dict)  # speaker index -> partner index


def _video_id(rng, taken):
    """A new random 11-character VoxCeleb-style video id (added to ``taken``)."""
    while True:
        vid = "".join(rng.choice(_VIDEO_ID_ALPHABET, size=11))
        if vid not in taken:
            taken.add(vid)
            return vid


def default_test_speakers(num_speakers):
    """Default number of test speakers: 25 % of the speakers, at least 2.

    Example
    -------
    >>> default_test_speakers(40), default_test_speakers(4)
    (10, 2)
    """
    return max(2, round(0.25 * num_speakers))


def _assign_recordings(groups, num_sessions, per_recording, rng):
    """Share recordings between speakers of the same group.

    For every session slot, the group's speakers are shuffled and cut into
    recordings of ``per_recording`` speakers, so a speaker's sessions are
    distinct recordings and its partners change from session to session.

    Returns
    -------
    dict
        Speaker index -> list of ``num_sessions`` recording indices.
    """
    rec_of, n_rec = {}, 0
    for group in groups:
        for _ in range(num_sessions):
            order = [group[j] for j in rng.permutation(len(group))]
            for start in range(0, len(order), per_recording):
                for i in order[start : start + per_recording]:
                    rec_of.setdefault(i, []).append(n_rec)
                n_rec += 1
    return rec_of, n_rec


def _make_confusable(speakers, train, num_pairs, seed):
    """Replace the second speaker of ``num_pairs`` training pairs by a near-copy of the first."""
    if num_pairs == 0:
        return {}
    rng = np.random.default_rng([seed, 7])
    chosen = [train[j] for j in rng.permutation(len(train))[: 2 * num_pairs]]
    partner = {}
    for a, b in zip(chosen[0::2], chosen[1::2]):
        speakers[b] = confusable_speaker(speakers[a], rng, index=b, languages=speakers[b].languages)
        partner[a], partner[b] = b, a
    return partner


def _choose_label_noise(utts, train, fraction, seed):
    """File round-half-up(fraction x training utterances) under another training speaker."""
    pool = [u for u in utts if u.speaker in set(train)]
    n = int(math.floor(fraction * len(pool) + 0.5))
    if n == 0:
        return
    rng = np.random.default_rng([seed, 6])
    for j in sorted(rng.choice(len(pool), size=n, replace=False)):
        u = pool[int(j)]
        others = [i for i in train if i != u.speaker]
        u.given = int(others[int(rng.integers(len(others)))])


def plan_corpus(
    num_speakers,
    num_utterances,
    num_sessions,
    num_languages,
    duration_min,
    duration_max,
    short_fraction,
    seed,
    test_speakers,
    session_strength=DEFAULT_SESSION_STRENGTH,
    speakers_per_session=2,
    confusable_pairs=0,
    label_noise=0.0,
):
    """Draw the whole corpus: speakers, subsets, shared recordings, utterances.

    Every random choice comes from a generator seeded by ``seed`` and a fixed
    stream number, so the same arguments give the same plan.

    Arguments
    ---------
    num_speakers, num_utterances, num_sessions, num_languages : int
        Corpus size (see :func:`synthetic_corpus.generate_corpus`).
    duration_min, duration_max, short_fraction : float
        Utterance durations (s) and the fraction of 0.5-1.9 s ones.
    test_speakers : int or None
        Number of test speakers, the last ones (None: :func:`default_test_speakers`).
    session_strength : float
        Scale of the session nuisance (:func:`make_session`).
    confusable_pairs : int
        Pairs of near-identical training speakers.
    label_noise : float
        Fraction of training utterances filed under another training speaker.

    Example
    -------
    >>> plan = plan_corpus(6, 4, 2, 2, 1.0, 2.0, 0.0, 0, None)
    >>> len(plan.utts), plan.test_speakers, plan.vox_ids[0]
    (24, [4, 5], 'id10001')
    """
    n_test = default_test_speakers(num_speakers) if test_speakers is None else int(test_speakers)
    speakers, train, test = _plan_speakers(num_speakers, num_languages, n_test, seed)
    confusable = _make_confusable(speakers, train, confusable_pairs, seed)
    cn2, dev, vox_ids, cn_ids = _subsets_and_ids(num_speakers, train, test)
    prng = np.random.default_rng([seed, 2])
    # shared recordings (a video / room with several speakers): training and
    # test speakers never share one
    rec_of, n_rec = _assign_recordings([train, test], num_sessions, speakers_per_session, prng)
    gp = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    rec_genre = [GENRES[g] for g in prng.choice(len(GENRES), size=n_rec, p=gp)]
    rec_session = [
        make_session(np.random.default_rng([seed, 3, r]), genre=g, strength=session_strength)
        for r, g in enumerate(rec_genre)
    ]
    taken = set()
    rec_video = [_video_id(prng, taken) for _ in range(n_rec)]
    plan = CorpusPlan(speakers, [], [], [], [], test, cn2, dev, vox_ids, cn_ids)
    plan.recordings = [rec_of[i] for i in range(num_speakers)]
    plan.confusable = confusable
    durations = (duration_min, duration_max, short_fraction)
    for i, spk in enumerate(speakers):
        recs = rec_of[i]
        # the pitch offset is personal; channel and speaking style are the recording's
        pr = np.random.default_rng([seed, 8, i])
        plan.sessions.append(
            [
                replace(rec_session[r], pitch_shift_st=float(pr.normal(0.0, 0.3 * session_strength)))
                for r in recs
            ]
        )
        plan.video_ids.append([rec_video[r] for r in recs])
        genres = [rec_genre[r] for r in recs]
        plan.genre_ss.append(_genre_session_names(genres))
        order = list(prng.permutation(len(spk.languages)))
        langs = [spk.languages[order[s % len(order)]] for s in range(num_sessions)]
        plan.session_langs.append(langs)
        plan.utts += _plan_utterances(
            i, recs, langs, genres, num_utterances, durations, seed, prng
        )
    _choose_label_noise(plan.utts, train, label_noise, seed)
    return plan


def _plan_speakers(num_speakers, num_languages, n_test, seed):
    """The voices and the train / test split (the last ``n_test`` speakers test)."""
    rng = np.random.default_rng([seed, 1])
    speakers = make_speakers(num_speakers, rng, num_languages=num_languages)
    test = list(range(num_speakers - n_test, num_speakers))
    train = list(range(num_speakers - n_test))
    # guarantee cross-language target trials: at least one bilingual test speaker
    if num_languages >= 2 and not any(len(speakers[i].languages) > 1 for i in test):
        s = speakers[test[0]]
        other = next(n for n in language_names(num_languages) if n != s.languages[0])
        speakers[test[0]] = replace(s, languages=(s.languages[0], other))
    return speakers, train, test


def _subsets_and_ids(num_speakers, train, test):
    """CN-Celeb2 and CN-Celeb1-dev training speakers, VoxCeleb and CN-Celeb ids."""
    n_cn2 = len(train) // 3 if len(train) >= 2 else 0
    cn2 = train[len(train) - n_cn2 :]
    dev = train[: len(train) - n_cn2]
    vox_ids = [f"id{10001 + i}" for i in range(num_speakers)]
    cn_ids = [""] * num_speakers
    for k, i in enumerate(dev + test):
        cn_ids[i] = f"id{k:05d}"
    for k, i in enumerate(cn2):
        cn_ids[i] = f"id{10000 + k:05d}"
    return cn2, dev, vox_ids, cn_ids


def _genre_session_names(genres):
    """``<genre>-<ss>`` of a speaker's sessions, numbered per genre."""
    counter, names = {}, []
    for g in genres:
        counter[g] = counter.get(g, 0) + 1
        names.append(f"{g}-{counter[g]:02d}")
    return names


def _plan_utterances(speaker, recs, langs, genres, num_utterances, durations, seed, prng):
    """One speaker's utterances, spread over its sessions as evenly as possible."""
    duration_min, duration_max, short_fraction = durations
    num_sessions = len(recs)
    counts = np.full(num_sessions, num_utterances // num_sessions)
    extra = prng.choice(num_sessions, size=num_utterances - counts.sum(), replace=False)
    counts[extra] += 1
    utts = []
    for s in range(num_sessions):
        for u in range(int(counts[s])):
            if prng.random() < short_fraction:
                dur = prng.uniform(0.5, 1.9)
            else:
                dur = prng.uniform(duration_min, duration_max)
            utts.append(
                Utterance(
                    speaker,
                    s,
                    u,
                    langs[s],
                    genres[s],
                    round(float(dur), 3),
                    (seed, 4, speaker, s, u),
                    recording=recs[s],
                )
            )
    return utts
