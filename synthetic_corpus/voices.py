"""Synthetic speakers: source-filter voice parameters and how they are drawn.

:func:`make_speakers` draws distinct voices from a space dominated by a few
strong factors (pitch, vocal-tract length, glottal shape, timbre);
:func:`confusable_speaker` makes a near-copy of a voice.

Authors
 * sb-angcl contributors 2025
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from synthetic_corpus.languages import language_names

#: Frequencies (Hz) at which a speaker's timbre curve is defined.
TIMBRE_ANCHORS_HZ = (
    150.0,
    300.0,
    600.0,
    1000.0,
    1600.0,
    2500.0,
    3600.0,
    5000.0,
    7000.0,
)

# Between-speaker spreads of the voice parameters.
# The speaker space is kept low-dimensional (a few strong factors rather than
# many weak idiosyncrasies) so that a model trained on a few dozen speakers
# generalises to unseen ones.
_SPREAD = {
    "vtl": 0.1,
    "formants": [0.03, 0.03, 0.03, 0.04, 0.04],
    "tilt": (-5.0, 2.0),
    "extra_db": 10.0,
    "timbre_db": 5.0,
}

BASE_BANDWIDTHS = np.array([70.0, 95.0, 130.0, 190.0, 260.0])

#: Size of the perturbation that makes a confusable speaker, in units of each
#: voice parameter's between-speaker standard deviation (see :func:`confusable_speaker`).
CONFUSABLE_SCALE = 0.25


@dataclass(frozen=True)
class SpeakerProfile:
    """The voice of one synthetic speaker (source-filter parameters).

    Arguments
    ---------
    index : int
        Position of the speaker in its corpus (0-based).
    pitch_class : str
        ``"low"`` (male-like) or ``"high"`` (female-like) pitch range.
    f0_mean : float
        Mean fundamental frequency in Hz.
    f0_range : float
        Standard deviation of the intonation contour, in semitones.
    vibrato_rate : float
        Vibrato rate in Hz.
    jitter : float
        Relative standard deviation of the pitch period, cycle to cycle.
    shimmer : float
        Relative standard deviation of the pulse amplitude, cycle to cycle.
    vtl_scale : float
        Formant-frequency multiplier (short vocal tract -> larger).
    formant_offsets : tuple
        Individual multipliers of F1..F5.
    bandwidth_scale : float
        Multiplier of the formant bandwidths.
    tilt_db : float
        Extra spectral tilt in dB per octave above 500 Hz.
    open_quotient : float
        Fraction of the glottal cycle during which the glottis is open.
    closing_fraction : float
        Fraction of the open phase spent closing (small = abrupt closure,
        brighter voice).
    breathiness : float
        Level of aspiration noise relative to the glottal pulses.
    speaking_rate : float
        Multiplier of the phoneme rate (> 1 is faster).
    extra_resonance_hz : float
        Centre of a fixed speaker-specific high resonance.
    extra_resonance_db : float
        Gain of that resonance in dB.
    timbre_db : tuple
        Smooth speaker-specific spectral shape: gains in dB at
        :data:`TIMBRE_ANCHORS_HZ` (piriform / nasal cavities, voice quality).
    languages : tuple
        Names of the languages the speaker speaks (first is the main one).

    Example
    -------
    >>> spk = make_speakers(1, np.random.default_rng(0))[0]
    >>> spk.pitch_class in ("low", "high"), 50 < spk.f0_mean < 300
    (True, True)
    """

    index: int
    pitch_class: str
    f0_mean: float
    f0_range: float
    vibrato_rate: float
    vibrato_depth: float
    jitter: float
    shimmer: float
    vtl_scale: float
    formant_offsets: tuple
    bandwidth_scale: float
    tilt_db: float
    open_quotient: float
    closing_fraction: float
    breathiness: float
    speaking_rate: float
    extra_resonance_hz: float
    extra_resonance_db: float
    timbre_db: tuple = ()
    languages: tuple = ("lang0",)


def make_speakers(n, rng, num_languages=3, bilingual_fraction=0.35):
    """Draw ``n`` distinct synthetic voices.

    Arguments
    ---------
    rng : numpy.random.Generator or int
        Random generator (or seed).
    num_languages : int
        Languages to choose from (``lang0`` .. ``lang{num_languages-1}``).
    bilingual_fraction : float
        Probability that a speaker speaks two languages (needs
        ``num_languages >= 2``).

    Example
    -------
    >>> spks = make_speakers(4, np.random.default_rng(1), num_languages=2)
    >>> [s.index for s in spks], all(1 <= len(s.languages) <= 2 for s in spks)
    ([0, 1, 2, 3], True)
    """
    rng = np.random.default_rng(rng)
    if num_languages < 1:
        raise ValueError(f"num_languages must be >= 1, got {num_languages}")
    names = language_names(num_languages)
    speakers = []
    for i in range(int(n)):
        high = bool(rng.random() < 0.5)
        if high:
            f0 = math.exp(rng.uniform(math.log(165.0), math.log(265.0)))
            vtl = rng.normal(1.15, _SPREAD["vtl"])
        else:
            f0 = math.exp(rng.uniform(math.log(85.0), math.log(155.0)))
            vtl = rng.normal(1.0, _SPREAD["vtl"])
        n_lang = 2 if (num_languages >= 2 and rng.random() < bilingual_fraction) else 1
        langs = tuple(names[j] for j in rng.choice(num_languages, size=n_lang, replace=False))
        speakers.append(
            SpeakerProfile(
                index=i,
                pitch_class="high" if high else "low",
                f0_mean=float(f0),
                f0_range=float(rng.uniform(0.8, 2.2)),
                vibrato_rate=float(rng.uniform(4.5, 6.5)),
                vibrato_depth=float(rng.uniform(0.05, 0.3)),
                jitter=float(rng.uniform(0.003, 0.02)),
                shimmer=float(rng.uniform(0.02, 0.12)),
                vtl_scale=float(np.clip(vtl, 0.85, 1.35)),
                formant_offsets=tuple(float(x) for x in rng.normal(1.0, _SPREAD["formants"])),
                bandwidth_scale=float(math.exp(rng.uniform(math.log(0.75), math.log(1.4)))),
                tilt_db=float(rng.uniform(*_SPREAD["tilt"])),
                open_quotient=float(rng.uniform(0.4, 0.8)),
                closing_fraction=float(rng.uniform(0.15, 0.45)),
                breathiness=float(rng.uniform(0.02, 0.5)),
                speaking_rate=float(rng.uniform(0.8, 1.25)),
                extra_resonance_hz=float(rng.uniform(2800, 5200)),
                extra_resonance_db=float(rng.uniform(0.0, _SPREAD["extra_db"])),
                timbre_db=_timbre_curve(rng),
                languages=langs,
            )
        )
    return speakers


def _timbre_curve(rng, n_basis=3):
    """Smooth random timbre (dB at TIMBRE_ANCHORS_HZ) from a few cosine terms."""
    u = np.linspace(0.0, 1.0, len(TIMBRE_ANCHORS_HZ))
    coef = rng.normal(0.0, _SPREAD["timbre_db"], size=n_basis)
    curve = sum(c * np.cos(np.pi * (j + 1) * u) for j, c in enumerate(coef))
    return tuple(float(x) for x in curve)


# Between-speaker standard deviation and allowed range of each scalar voice
# parameter, as drawn by make_speakers (uniform(a, b): (b - a) / sqrt(12);
# log-uniform parameters are perturbed in the log domain).
_VOICE_SPREAD = {
    "f0_range": (0.40, 0.5, 3.0),
    "vibrato_rate": (0.58, 4.0, 7.0),
    "vibrato_depth": (0.072, 0.02, 0.4),
    "jitter": (0.0049, 0.001, 0.03),
    "shimmer": (0.029, 0.01, 0.15),
    "vtl_scale": (0.1, 0.85, 1.35),
    "tilt_db": (2.02, -6.0, 3.0),
    "open_quotient": (0.115, 0.35, 0.85),
    "closing_fraction": (0.087, 0.1, 0.5),
    "breathiness": (0.139, 0.01, 0.55),
    "speaking_rate": (0.13, 0.75, 1.3),
    "extra_resonance_hz": (693.0, 2600.0, 5400.0),
    "extra_resonance_db": (2.89, 0.0, 11.0),
}
_VOICE_LOG_SPREAD = {"f0_mean": 0.173, "bandwidth_scale": 0.18}


def confusable_speaker(speaker, rng, index, languages=None, scale=CONFUSABLE_SCALE):
    """A near-copy of ``speaker``: every voice parameter moved by ``scale`` spreads.

    Each scalar parameter moves by exactly ``scale`` times its between-speaker
    standard deviation, up or down at random (clipped to its usual range);
    the formant offsets and the timbre curve move the same way. Two random
    speakers differ by about ``sqrt(2)`` spreads per parameter, so at the
    default scale (0.25) the pair is about 5-6 times closer than a random pair
    on every parameter at once: near-identical to a coarse spectral
    embedding, still separable by a model that learns the fine structure.

    Arguments
    ---------
    rng : numpy.random.Generator or int
        Random generator (or seed) of the perturbation directions.
    index : int
        Index of the new speaker.
    languages : tuple, optional
        Languages of the new speaker (default: those of ``speaker``).
    scale : float
        Perturbation in between-speaker standard deviations.

    Example
    -------
    >>> a = make_speakers(1, np.random.default_rng(0))[0]
    >>> b = confusable_speaker(a, np.random.default_rng(1), index=1)
    >>> b.index, round(abs(math.log(b.f0_mean / a.f0_mean)) / 0.173, 2), b.pitch_class == a.pitch_class
    (1, 0.25, True)
    """
    rng = np.random.default_rng(rng)

    def step():
        return scale * (1.0 if rng.random() < 0.5 else -1.0)

    changes = {}
    for name, (sd, lo, hi) in _VOICE_SPREAD.items():
        changes[name] = float(np.clip(getattr(speaker, name) + step() * sd, lo, hi))
    for name, sd in _VOICE_LOG_SPREAD.items():
        changes[name] = float(getattr(speaker, name) * math.exp(step() * sd))
    changes["formant_offsets"] = tuple(
        float(x + step() * sd) for x, sd in zip(speaker.formant_offsets, _SPREAD["formants"])
    )
    if speaker.timbre_db:
        u = np.linspace(0.0, 1.0, len(speaker.timbre_db))
        delta = sum(step() * _SPREAD["timbre_db"] * np.cos(np.pi * (j + 1) * u) for j in range(3))
        changes["timbre_db"] = tuple(float(x) for x in np.asarray(speaker.timbre_db) + delta)
    return replace(
        speaker,
        index=int(index),
        languages=tuple(languages) if languages is not None else speaker.languages,
        **changes,
    )
