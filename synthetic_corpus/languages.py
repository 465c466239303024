"""Synthetic languages: phoneme inventories, phonotactics and intonation.

A language is a fixed draw from a universal phoneme set (vowels as formant
targets, fricatives as noise bands, nasals, stops) seeded by its index, so
``lang0`` is the same in every corpus (:func:`get_language`).

Authors
 * sb-angcl contributors 2025
"""

from dataclasses import dataclass

import numpy as np

# Fixed seed of the "world" of languages: lang0 is the same in every corpus.
_LANGUAGE_WORLD_SEED = 20230401

# Universal vowel set: approximate F1, F2, F3 (Hz) of a reference adult
# vocal tract (vtl_scale = 1). F4/F5 are added per language.
_VOWELS = np.array(
    [
        [280, 2250, 2900],  # i
        [400, 2000, 2600],  # e
        [550, 1800, 2500],  # open e
        [680, 1650, 2450],  # ae
        [750, 1250, 2500],  # a
        [700, 1050, 2450],  # back a
        [570, 850, 2400],  # open o
        [430, 800, 2400],  # o
        [310, 750, 2300],  # u
        [290, 1850, 2200],  # y
        [420, 1550, 2250],  # oe
        [500, 1450, 2500],  # schwa
        [320, 1450, 2350],  # barred i
        [340, 1200, 2450],  # unrounded u
        [620, 1200, 2550],  # wedge
        [400, 1950, 2550],  # near-close i
    ],
    dtype=np.float64,
)

_VOWEL_FRONT = (0, 1, 2, 9, 15)
_VOWEL_OPEN = (3, 4, 5, 6, 14)
_VOWEL_BACK = (7, 8, 13)
_VOWEL_CENTRAL = (10, 11, 12)

# Fricative noise bands: centre (Hz), bandwidth (octaves), relative level.
_FRICATIVES = np.array(
    [
        [5600, 0.9, 0.9],  # s
        [3200, 0.9, 0.9],  # sh
        [6200, 2.2, 0.35],  # f
        [1600, 1.1, 0.5],  # x
        [7000, 1.6, 0.3],  # th
        [4200, 0.8, 0.7],  # palatal
        [3700, 0.9, 0.8],  # retroflex
        [2400, 1.8, 0.4],  # h-like
    ],
    dtype=np.float64,
)

# Nasal murmurs: F1, F2, F3 (Hz).
_NASALS = np.array([[260, 1100, 2300], [260, 1650, 2650], [260, 2050, 2750]], dtype=np.float64)

# Stop bursts: centre (Hz), bandwidth (octaves).
_STOPS = np.array([[900, 2.0], [4200, 1.2], [2100, 1.0], [3000, 1.5]], dtype=np.float64)

_BASE_F4_F5 = np.array([3500.0, 4500.0])


@dataclass(frozen=True, eq=False)
class LanguageProfile:
    """A synthetic language: phoneme inventory, phonotactics and prosody.

    Use :func:`get_language` to obtain one; the same name always gives the
    same language.

    Arguments
    ---------
    name : str
        ``"lang<k>"``.
    vowels : numpy.ndarray
        (V, 5) formant targets F1..F5 in Hz for the reference vocal tract.
    vowel_weights : numpy.ndarray
        (V,) probabilities of the vowels.
    fricatives : numpy.ndarray
        (C, 4) centre Hz, bandwidth (octaves), level, voiced flag.
    nasals : numpy.ndarray
        (N, 5) nasal formant targets.
    stops : numpy.ndarray
        (S, 3) burst centre Hz, bandwidth (octaves), voiced flag.
    consonant_weights : numpy.ndarray
        (3,) probabilities of fricative, nasal, stop for a consonant slot.
    p_onset : float
        Probability that a syllable starts with a consonant.
    p_coda : float
        Probability that a syllable ends with a consonant.
    p_pause : float
        Probability of a pause after a syllable.
    tonal : bool
        Lexical tones (pitch shape per syllable) instead of stress accents.
    tones : numpy.ndarray
        (K, 2) start/end pitch of each tone, in units of the speaker's range.
    declination : float
        Pitch fall over the utterance, in semitones per second.
    vowel_duration : float
        Mean vowel duration in seconds at speaking rate 1.

    Example
    -------
    >>> lang = get_language("lang1")
    >>> lang.name, lang.vowels.shape[1]
    ('lang1', 5)
    """

    name: str
    vowels: np.ndarray
    vowel_weights: np.ndarray
    fricatives: np.ndarray
    nasals: np.ndarray
    stops: np.ndarray
    consonant_weights: np.ndarray
    p_onset: float
    p_coda: float
    p_pause: float
    tonal: bool
    tones: np.ndarray
    declination: float
    vowel_duration: float


def language_names(num_languages):
    """Names of the first ``num_languages`` languages.

    Example
    -------
    >>> language_names(3)
    ['lang0', 'lang1', 'lang2']
    """
    return [f"lang{k}" for k in range(int(num_languages))]


_LANGUAGE_CACHE = {}


def get_language(language):
    """The synthetic language with this name or index (deterministic).

    Arguments
    ---------
    language : str or int or LanguageProfile
        ``"lang3"``, ``3`` or an existing profile (returned unchanged).

    Example
    -------
    >>> a, b = get_language(0), get_language("lang0")
    >>> bool(np.array_equal(a.vowels, b.vowels)), get_language(0).tonal
    (True, True)
    """
    if isinstance(language, LanguageProfile):
        return language
    if isinstance(language, str):
        if not (language.startswith("lang") and language[4:].isdigit()):
            raise ValueError(
                f"Unknown synthetic language {language!r}: use names like 'lang0', 'lang1', ..."
            )
        k = int(language[4:])
    else:
        k = int(language)
    if k < 0:
        raise ValueError(f"Language index must be >= 0, got {k}")
    if k not in _LANGUAGE_CACHE:
        _LANGUAGE_CACHE[k] = _draw_language(k)
    return _LANGUAGE_CACHE[k]


def _draw_language(k):
    rng = np.random.default_rng([_LANGUAGE_WORLD_SEED, k])
    # every inventory covers the vowel triangle (front, open, back) so that
    # languages differ in their vowels without wildly different mean spectra
    idx = []
    for group, lo, hi in (
        (_VOWEL_FRONT, 2, 4),
        (_VOWEL_OPEN, 2, 4),
        (_VOWEL_BACK, 2, 3),
        (_VOWEL_CENTRAL, 0, 3),
    ):
        idx += list(rng.choice(group, size=int(rng.integers(lo, hi)), replace=False))
    idx = np.sort(np.array(idx))
    nv = len(idx)
    f123 = _VOWELS[idx] * rng.normal(1.0, [0.05, 0.04, 0.02], size=(nv, 3))
    f45 = _BASE_F4_F5 * rng.normal(1.0, 0.04, size=(nv, 2))
    vowels = np.concatenate([f123, f45], axis=1)
    vowels[:, 1] = np.maximum(vowels[:, 1], vowels[:, 0] + 250)
    vowels[:, 2] = np.maximum(vowels[:, 2], vowels[:, 1] + 300)
    vowels[:, 3] = np.maximum(vowels[:, 3], vowels[:, 2] + 400)
    vowels[:, 4] = np.maximum(vowels[:, 4], vowels[:, 3] + 500)
    vowel_weights = rng.dirichlet(np.full(nv, 8.0))

    nf = int(rng.integers(2, 6))
    fidx = np.sort(rng.choice(len(_FRICATIVES), size=nf, replace=False))
    fric = _FRICATIVES[fidx] * np.array([rng.normal(1.0, 0.06), 1.0, 1.0])
    voiced = (rng.random(nf) < 0.35).astype(np.float64)
    fricatives = np.concatenate([fric, voiced[:, None]], axis=1)

    nn = int(rng.integers(1, 4))
    nidx = np.sort(rng.choice(len(_NASALS), size=nn, replace=False))
    nasals = np.concatenate([_NASALS[nidx], np.tile(_BASE_F4_F5, (nn, 1))], axis=1)
    ns = int(rng.integers(2, 5))
    sidx = np.sort(rng.choice(len(_STOPS), size=ns, replace=False))
    stops = np.concatenate([_STOPS[sidx], (rng.random(ns) < 0.4)[:, None]], axis=1)

    tonal = bool(k == 0 or rng.random() < 0.3)
    n_tones = int(rng.integers(3, 6))
    tones = rng.uniform(-1.2, 1.2, size=(n_tones, 2))
    return LanguageProfile(
        name=f"lang{k}",
        vowels=vowels,
        vowel_weights=vowel_weights,
        fricatives=fricatives,
        nasals=nasals,
        stops=stops,
        consonant_weights=rng.dirichlet([40.0, 25.0, 25.0]),
        p_onset=float(rng.uniform(0.7, 0.85)),
        p_coda=float(rng.uniform(0.2, 0.4)),
        p_pause=float(rng.uniform(0.06, 0.09)),
        tonal=tonal,
        tones=tones,
        declination=float(rng.uniform(0.3, 1.5)),
        vowel_duration=float(rng.uniform(0.10, 0.13)),
    )
