"""Built-in synthetic speaker-verification corpus in the VoxCeleb1 and CN-Celeb layouts.

The generator writes a small multi-speaker, multi-language, multi-session corpus
so that the real recipes (data preparation, training, scoring) can run on a
machine with nothing downloaded. Nothing here is recorded speech: every file is
made by a source-filter model in numpy (plus ``scipy.signal.fftconvolve``).

Signal model
------------
* **Speaker** (:class:`SpeakerProfile`): mean pitch (F0) and its movement
  (intonation range, vibrato), vocal-tract length (scales every formant),
  small per-formant offsets and bandwidths, glottal pulse shape (open
  quotient, closing speed: the source's spectral tilt) plus an extra tilt and
  a smooth timbre curve, jitter, shimmer, breathiness (aspiration noise),
  speaking rate, a fixed high resonance, and the 1-2 languages spoken. The
  speaker space is deliberately dominated by a few strong factors so that a
  model trained on a few dozen speakers generalises to unseen ones.
* **Language** (:class:`LanguageProfile`): a phoneme inventory drawn from a
  universal set (vowels as formant targets, fricatives as noise bands, nasals,
  stops, pauses), phonotactics (onset/coda probabilities), tonal or
  stress-accent intonation. Languages are a fixed "world" (``lang0`` is the
  same in every corpus); their inventories differ, so cross-language target
  trials are harder than same-language ones.
* **Session** (:class:`SessionProfile`): a recording condition tied to one of
  CN-Celeb's 11 genres: a random EQ (peaks/dips, high-pass, sometimes a
  band limit), additive noise (coloured, babble-like, music-like or hum) at a
  random SNR, light reverberation from a synthetic exponentially decaying
  impulse response, a level, plus session-level changes of the voice (pitch
  offset, vocal effort, rate; *singing* moves the pitch in notes, with strong
  vibrato). A bilingual speaker's sessions alternate between its languages.
  ``session_strength`` scales the nuisance (EQ spread, a broadband channel
  tilt, band limitation, SNR, reverberation, level, style changes).
* **Shared recordings.** A session is a *recording* (a video, a room) that
  ``speakers_per_session`` speakers share (default 2: host and guest): the
  same channel, noise, room, level and speaking style, and the same VoxCeleb
  video id in each speaker's folder; only the pitch offset is personal.
  For every session slot the speakers are reshuffled, so partners change;
  training and test speakers never share a recording. The VoxCeleb trial
  list draws a third of each enrolment's non-targets from the other
  speaker(s) of its recording, so same-session non-target trials exist.
* **Confusable speakers** (``confusable_pairs``): pairs of training
  speakers, the second a near-copy of the first (:func:`confusable_speaker`),
  marked in ``speakers.csv`` (``confusable_with``).
* **Label noise** (``label_noise``): a fraction of the training utterances
  is filed under another training speaker (see "Label noise" below).

Per utterance a phoneme sequence gives frame-wise formant tracks, voicing and
frication levels and a pitch contour; a glottal-pulse source and a frication
noise are shaped in the STFT domain by the vocal-tract envelope and the
session EQ, then reverberated, scaled to the session level and mixed with
noise.

Identity is learnable but not trivial, and sessions mislead a naive system.
Measured on the default corpus (40 speakers x 24 utterances, 3 sessions,
seed 0, VoxCeleb trials over the 10 test speakers) with the mean log-mel
spectrum per utterance and cosine scoring:

=====================================  ===============  ===============  ===============
                                       version 1        version 2,       version 2,
                                       (private         default (shared  session_strength
                                       sessions)        recordings, 1.0) 1.5
=====================================  ===============  ===============  ===============
EER on the trial list                  24.7 % (2569)    26.2 % (2519)    33.0 % (2519)
P(same-session non-target score >      (no such pairs)  17.2 % (960      29.1 % (960
cross-session target score)                             pairs)           pairs)
P(other-session non-target score >     16.7 %           (not measured)   26.4 %
cross-session target score)
=====================================  ===============  ===============  ===============

The default strength is 1.0: at 1.5 the small ECAPA-TDNN trained with
AAM-softmax for 15 epochs (the demo's budget) reached only 24 % EER (one
seed), which leaves the demo nothing to show.

(Version 1's LDA on mean+std log-mel statistics fitted on the 30 training
speakers gave about 8 %.) The tests check looser bounds on a smaller corpus
(``tests/test_synthetic.py``: the same-session fraction is 0.26 there at
the default strength, 0.35 at 1.5, 0.16 with ``session_strength=0``).

Layouts (both share the same synthesised audio)
-----------------------------------------------
``voxceleb``::

    DIR/VoxCeleb1/wav/id10001/<11-char video id>/00001.wav
    DIR/VoxCeleb1/meta/veri_test2.txt     "1 id10009/abc.../00001.wav id10009/def.../00003.wav"
    DIR/VoxCeleb1/meta/languages.csv      path,language (paths relative to wav/)

``cnceleb`` (flac audio, lists name ``.wav`` like the real corpus)::

    DIR/CN-Celeb_flac/data/id00000/<genre>-<ss>-<uuu>.flac     dev and eval-enrolment utterances
    DIR/CN-Celeb_flac/dev/dev.lst
    DIR/CN-Celeb_flac/eval/enroll/id00007-enroll.flac          concatenated enrolment
    DIR/CN-Celeb_flac/eval/test/id00007-<genre>-<ss>-<uuu>.flac
    DIR/CN-Celeb_flac/eval/lists/{enroll.lst,enroll.map,test.lst,trials.lst}
    DIR/CN-Celeb2_flac/data/id10000/<genre>-<ss>-<uuu>.flac
    DIR/CN-Celeb2_flac/spk.lst

Test speakers (the last ``test_speakers``) are the VoxCeleb trial speakers
and the CN-Celeb eval speakers; the other speakers are split 2:1 between
CN-Celeb1 ``dev`` and CN-Celeb2. VoxCeleb trials pair each test utterance with
up to ``trials_per_utterance`` same-speaker utterances from other sessions
(cross-language ones first) and as many other-speaker utterances; the CN-Celeb
trial list is, like the real one, every enrolment against every test file.
``enroll.map`` names the enrolment parts relative to ``data/`` (as in the real
corpus, where WeSpeaker's recipe reads them as ``data/<spk>/<file>``). The
fraction ``short_fraction`` of 0.5-1.9 s utterances applies to both layouts
(they share the audio).

Label noise
-----------
With ``label_noise=f``, round-half-up(f x training utterances) training
utterances, chosen from the seed, are filed under another training speaker
(test speakers are never involved, on either side). The audio is the true
speaker's; only the filing changes:

* VoxCeleb: ``wav/<given id>/<video id of its recording>/<NNNNN>.wav``,
  numbered after anything already in that folder; listed in
  ``VoxCeleb1/meta/label_noise.csv`` with the path relative to ``wav/``.
* CN-Celeb: ``data/<given id>/<genre>-<ss>-<uuu>.flac`` in the given
  speaker's subset, as a session of its own (``ss`` after the given speaker's
  sessions of that genre); listed in ``<subset root>/meta/label_noise.csv``
  (``CN-Celeb_flac`` and ``CN-Celeb2_flac``) with the lists' convention,
  ``id00012/interview-03-001.wav`` relative to ``data/``.

Both lists have the columns ``path,given_speaker,true_speaker`` and exist only
when ``label_noise > 0``; the prepare scripts read them (columns
``true_spk_id`` and ``label_noise`` of the training manifests).
``utterances.csv`` has ``true_speaker`` and ``label_noise`` for every file.

``DIR/speakers.csv`` and ``DIR/utterances.csv`` describe both layouts and
``DIR/synthetic_corpus.json`` records the arguments and the summary; calling
the generator again with the same arguments reuses a complete corpus.

Usage::

    python -m sb_angcl.synthetic --output DIR [--layout voxceleb|cnceleb|both]
        [--session-strength 1.0] [--speakers-per-session 2]
        [--confusable-pairs N] [--label-noise FRACTION]

Author: sb-angcl contributors.
"""

import argparse
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve
from tqdm import tqdm

from sb_angcl.dataprep import CNCELEB_GENRES

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: CN-Celeb's 11 genres (defined with the data preparation that reads them).
GENRES = CNCELEB_GENRES

LAYOUTS = ("voxceleb", "cnceleb", "both")

#: File name of the label-noise list (in ``VoxCeleb1/meta/``, ``CN-Celeb_flac/meta/``,
#: ``CN-Celeb2_flac/meta/``) and its header.
LABEL_NOISE_CSV = "label_noise.csv"
LABEL_NOISE_HEADER = "path,given_speaker,true_speaker"

#: Version of the signal model; part of the reuse check of an existing corpus.
CORPUS_VERSION = 2

# Fixed seed of the "world" of languages: lang0 is the same in every corpus.
_LANGUAGE_WORLD_SEED = 20230401

_VIDEO_ID_ALPHABET = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
)

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

_BASE_BANDWIDTHS = np.array([70.0, 95.0, 130.0, 190.0, 260.0])
_BASE_F4_F5 = np.array([3500.0, 4500.0])

# Per-genre recording conditions. snr: dB range; noise: noise kinds; rt60: s;
# pitch: intonation multiplier; rate: speaking-rate multiplier; eq_db: std of
# the random EQ peaks; bandlimit: probability of a low-pass band limit.
_GENRE_PRESETS = {
    "advertisement": {
        "snr": (35, 53),
        "noise": ("music", "colored"),
        "rt60": (0.02, 0.1),
        "pitch": 1.15,
        "rate": 1.075,
        "eq_db": 3.4,
        "bandlimit": 0.05,
    },
    "drama": {
        "snr": (29, 47),
        "noise": ("colored", "babble", "music"),
        "rt60": (0.06, 0.21),
        "pitch": 1.25,
        "rate": 1.0,
        "eq_db": 3.4,
        "bandlimit": 0.05,
    },
    "entertainment": {
        "snr": (25, 43),
        "noise": ("babble", "music"),
        "rt60": (0.04, 0.17),
        "pitch": 1.2,
        "rate": 1.05,
        "eq_db": 3.9,
        "bandlimit": 0.1,
    },
    "interview": {
        "snr": (35, 55),
        "noise": ("colored", "babble"),
        "rt60": (0.02, 0.13),
        "pitch": 1.0,
        "rate": 1.0,
        "eq_db": 2.8,
        "bandlimit": 0.075,
    },
    "live_broadcast": {
        "snr": (25, 40),
        "noise": ("babble", "colored", "hum"),
        "rt60": (0.04, 0.17),
        "pitch": 1.1,
        "rate": 1.05,
        "eq_db": 3.9,
        "bandlimit": 0.25,
    },
    "movie": {
        "snr": (27, 45),
        "noise": ("music", "colored"),
        "rt60": (0.08, 0.25),
        "pitch": 1.15,
        "rate": 0.975,
        "eq_db": 3.4,
        "bandlimit": 0.05,
    },
    "play": {
        "snr": (29, 47),
        "noise": ("babble", "colored"),
        "rt60": (0.13, 0.29),
        "pitch": 1.3,
        "rate": 0.975,
        "eq_db": 3.4,
        "bandlimit": 0.05,
    },
    "recitation": {
        "snr": (40, 60),
        "noise": ("colored",),
        "rt60": (0.04, 0.17),
        "pitch": 1.15,
        "rate": 0.925,
        "eq_db": 2.2,
        "bandlimit": 0.025,
    },
    "singing": {
        "snr": (27, 43),
        "noise": ("music",),
        "rt60": (0.08, 0.25),
        "pitch": 1.75,
        "rate": 0.8,
        "eq_db": 3.4,
        "bandlimit": 0.05,
    },
    "speech": {
        "snr": (35, 55),
        "noise": ("colored", "babble"),
        "rt60": (0.13, 0.34),
        "pitch": 1.05,
        "rate": 0.975,
        "eq_db": 2.8,
        "bandlimit": 0.05,
    },
    "vlog": {
        "snr": (27, 47),
        "noise": ("colored", "babble", "hum"),
        "rt60": (0.02, 0.13),
        "pitch": 1.1,
        "rate": 1.05,
        "eq_db": 3.9,
        "bandlimit": 0.15,
    },
}

# Relative frequency of genres when sessions are drawn (singing is rarer).
_GENRE_WEIGHTS = np.array([0.8, 1.0, 1.2, 1.5, 1.0, 0.9, 0.6, 0.8, 0.6, 1.2, 1.4])

#: SNR reduction (dB) per unit of session strength above 1 (see :func:`make_session`).
SNR_DROP_DB = 10.0

#: Standard deviation (dB per octave) of the channel tilt at session strength 1.
CHANNEL_TILT_DB = 1.0

#: The probability of a band-limited channel grows as strength ** BANDLIMIT_POWER.
BANDLIMIT_POWER = 3.0

#: Default session strength of :func:`generate_corpus` (see the module docstring).
DEFAULT_SESSION_STRENGTH = 1.0

#: Size of the perturbation that makes a confusable speaker, in units of each
#: voice parameter's between-speaker standard deviation (see :func:`confusable_speaker`).
CONFUSABLE_SCALE = 0.25


# ----------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------


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
    vibrato_depth : float
        Vibrato depth in semitones.
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


@dataclass(frozen=True)
class SessionProfile:
    """A recording session: genre, channel (EQ, noise, reverberation), voice state.

    Use :func:`make_session` to draw one.

    Arguments
    ---------
    genre : str
        One of :data:`GENRES`.
    eq_centers_hz : tuple
        Centres of the EQ peaks/dips.
    eq_gains_db : tuple
        Gains of the EQ peaks/dips in dB.
    eq_widths_oct : tuple
        Widths (standard deviation, octaves) of the EQ peaks/dips.
    highpass_hz : float
        Cut-off of the channel high-pass (2nd order).
    lowpass_hz : float
        Cut-off of the channel low-pass.
    lowpass_order : int
        Order of the low-pass (high for band-limited channels).
    noise_kind : str
        ``"colored"``, ``"babble"``, ``"music"`` or ``"hum"``.
    noise_color : float
        Spectral slope exponent of the coloured noise (0 white, 1 pink, 2 brown).
    snr_db : float
        Signal-to-noise ratio of the session in dB.
    rt60 : float
        Reverberation time of the impulse response in seconds.
    drr_db : float
        Direct-to-reverberant energy ratio in dB.
    ir_seed : int
        Seed of the impulse response (fixed for the session).
    pitch_shift_st : float
        Session pitch offset of the speaker in semitones.
    pitch_movement : float
        Multiplier of the intonation range.
    vibrato_scale : float
        Multiplier of the vibrato depth.
    rate : float
        Multiplier of the speaking rate.
    effort_tilt_db : float
        Change of the spectral tilt (vocal effort), dB per octave.
    gain_db : float
        Mean peak level of the session in dBFS.
    singing : bool
        Pitch follows musical notes with glides (genre ``singing``).
    channel_tilt_db : float
        Broadband tilt of the channel (microphone / codec), dB per octave
        around 1 kHz.

    Example
    -------
    >>> s = make_session(np.random.default_rng(0), genre="singing")
    >>> s.genre, s.singing, s.pitch_movement > 1
    ('singing', True, True)
    """

    genre: str = "interview"
    eq_centers_hz: tuple = ()
    eq_gains_db: tuple = ()
    eq_widths_oct: tuple = ()
    highpass_hz: float = 60.0
    lowpass_hz: float = 7600.0
    lowpass_order: int = 4
    noise_kind: str = "colored"
    noise_color: float = 1.0
    snr_db: float = 60.0
    rt60: float = 0.0
    drr_db: float = 20.0
    ir_seed: int = 0
    pitch_shift_st: float = 0.0
    pitch_movement: float = 1.0
    vibrato_scale: float = 1.0
    rate: float = 1.0
    effort_tilt_db: float = 0.0
    gain_db: float = -6.0
    singing: bool = False
    channel_tilt_db: float = 0.0

    def eq_response(self, freqs):
        """Magnitude response of the session channel at ``freqs`` (Hz).

        Arguments
        ---------
        freqs : numpy.ndarray
            Frequencies in Hz.

        Returns
        -------
        numpy.ndarray
            Linear magnitude, same shape as ``freqs``.

        Example
        -------
        >>> s = SessionProfile(highpass_hz=100.0, lowpass_hz=4000.0, lowpass_order=8)
        >>> r = s.eq_response(np.array([20.0, 1000.0, 7000.0]))
        >>> r.round(3)
        array([0.04 , 1.   , 0.011])
        """
        f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)
        gain_db = np.zeros_like(f)
        logf = np.log2(f)
        for c, g, w in zip(self.eq_centers_hz, self.eq_gains_db, self.eq_widths_oct):
            gain_db += g * np.exp(-0.5 * ((logf - math.log2(c)) / w) ** 2)
        gain_db = gain_db + self.channel_tilt_db * np.clip(logf - math.log2(1000.0), -3.0, 3.0)
        hp = (f / self.highpass_hz) ** 4
        hp = np.sqrt(hp / (1.0 + hp))
        lp = 1.0 / np.sqrt(1.0 + (f / self.lowpass_hz) ** (2 * self.lowpass_order))
        return 10.0 ** (gain_db / 20.0) * hp * lp


CLEAN_SESSION = SessionProfile()


# ----------------------------------------------------------------------------
# Drawing profiles
# ----------------------------------------------------------------------------


def language_names(num_languages):
    """Names of the first ``num_languages`` languages.

    Arguments
    ---------
    num_languages : int
        How many.

    Returns
    -------
    list of str

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

    Returns
    -------
    LanguageProfile

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


def make_speakers(n, rng, num_languages=3, bilingual_fraction=0.35):
    """Draw ``n`` distinct synthetic voices.

    Arguments
    ---------
    n : int
        Number of speakers.
    rng : numpy.random.Generator or int
        Random generator (or seed).
    num_languages : int
        Languages to choose from (``lang0`` .. ``lang{num_languages-1}``).
    bilingual_fraction : float
        Probability that a speaker speaks two languages (needs
        ``num_languages >= 2``).

    Returns
    -------
    list of SpeakerProfile

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
    speaker : SpeakerProfile
        The voice to copy.
    rng : numpy.random.Generator or int
        Random generator (or seed) of the perturbation directions.
    index : int
        Index of the new speaker.
    languages : tuple, optional
        Languages of the new speaker (default: those of ``speaker``).
    scale : float
        Perturbation in between-speaker standard deviations.

    Returns
    -------
    SpeakerProfile

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


def make_session(rng, genre=None, strength=1.0):
    """Draw a recording session (channel and voice state) for a genre.

    Arguments
    ---------
    rng : numpy.random.Generator or int
        Random generator (or seed).
    genre : str, optional
        One of :data:`GENRES`; drawn at random when omitted.
    strength : float
        Scale of the session nuisance (>= 0): multiplies the spread of the EQ
        gains, the vocal-effort tilt, the pitch offset, the rate change and
        the level range, the reverberation time and the broadband channel
        tilt (:data:`CHANNEL_TILT_DB`); lowers the SNR range by
        :data:`SNR_DROP_DB` dB per unit above 1; makes band-limited channels
        ``strength ** BANDLIMIT_POWER`` times as likely. ``1`` is the channel
        model of corpus version 1 (the same random draws) plus the channel
        tilt; ``0`` a flat, dry, full-band channel with only the genre's
        speaking style and noise.

    Returns
    -------
    SessionProfile

    Example
    -------
    >>> s = make_session(np.random.default_rng(3), genre="interview")
    >>> s.genre, s.snr_db > 20.0, s.noise_kind in ("colored", "babble")
    ('interview', True, True)
    """
    rng = np.random.default_rng(rng)
    if genre is None:
        genre = GENRES[int(rng.choice(len(GENRES), p=_GENRE_WEIGHTS / _GENRE_WEIGHTS.sum()))]
    if genre not in _GENRE_PRESETS:
        raise ValueError(f"Unknown genre {genre!r}; choose one of {', '.join(GENRES)}")
    if not strength >= 0:
        raise ValueError(f"session strength must be >= 0, got {strength}")
    k = float(strength)
    p = _GENRE_PRESETS[genre]
    n_eq = int(rng.integers(2, 6))
    centers = np.exp(rng.uniform(math.log(150.0), math.log(6500.0), size=n_eq))
    gains = np.clip(rng.normal(0.0, p["eq_db"] * k, size=n_eq), -12 * max(k, 1), 12 * max(k, 1))
    widths = rng.uniform(0.3, 1.5, size=n_eq)
    if rng.random() < min(1.0, p["bandlimit"] * k**BANDLIMIT_POWER):
        lowpass, order = float(rng.uniform(4000, 7000)), 8
    else:
        lowpass, order = float(rng.uniform(6500, 7900)), 4
    singing = genre == "singing"
    return SessionProfile(
        genre=genre,
        eq_centers_hz=tuple(float(x) for x in centers),
        eq_gains_db=tuple(float(x) for x in gains),
        eq_widths_oct=tuple(float(x) for x in widths),
        highpass_hz=float(math.exp(rng.uniform(math.log(30.0), math.log(90.0)))),
        lowpass_hz=lowpass,
        lowpass_order=order,
        noise_kind=str(rng.choice(p["noise"])),
        noise_color=float(rng.uniform(1.0, 2.5)),
        snr_db=float(rng.uniform(*p["snr"]) - SNR_DROP_DB * (k - 1.0)),
        rt60=float(rng.uniform(*p["rt60"]) * k),
        drr_db=float(rng.uniform(3.0, 15.0)),
        ir_seed=int(rng.integers(0, 2**31 - 1)),
        pitch_shift_st=float(rng.normal(0.0, 0.3 * k)),
        pitch_movement=float(p["pitch"] * rng.uniform(0.85, 1.15)),
        vibrato_scale=float(rng.uniform(3.0, 5.0) if singing else rng.uniform(0.5, 1.5)),
        rate=float(p["rate"] * (1.0 + 0.1 * k * rng.uniform(-1.0, 1.0))),
        effort_tilt_db=float(rng.normal(0.0, 0.5 * k)),
        gain_db=float(min(-7.0 + 3.0 * k * rng.uniform(-1.0, 1.0), -1.0)),
        singing=singing,
        channel_tilt_db=float(rng.normal(0.0, CHANNEL_TILT_DB * k)),
    )


# ----------------------------------------------------------------------------
# Synthesis
# ----------------------------------------------------------------------------


def _smooth(x, width):
    """Moving average along axis 0 with edge padding (odd width)."""
    if width <= 1:
        return x
    k = np.ones(width) / width
    pad = width // 2
    if x.ndim == 1:
        xp = np.pad(x, pad, mode="edge")
        return np.convolve(xp, k, mode="valid")
    xp = np.pad(x, ((pad, pad), (0, 0)), mode="edge")
    return np.stack([np.convolve(xp[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def _plan_frames(speaker, language, session, n_frames, hop_s, rng):
    """Frame-wise articulation: formants, voicing, frication, pitch offsets."""
    formants = np.full((n_frames, 5), np.nan)
    voice = np.zeros(n_frames)
    noise = np.zeros(n_frames)
    fc = np.full(n_frames, 4000.0)
    fbw = np.ones(n_frames)
    tone = np.zeros(n_frames)
    rate = max(speaker.speaking_rate * session.rate, 0.2)
    vdur = language.vowel_duration / rate
    cw = language.consonant_weights
    f_amp = 0.25 + 0.5 * speaker.breathiness

    def frames(seconds):
        return max(1, round(seconds / hop_s))

    def consonant(pos, amp):
        """Write one consonant from ``pos``; return the next free frame."""
        kind = rng.choice(3, p=cw)
        if kind == 0:  # fricative: noise band, sometimes voiced
            c = language.fricatives[rng.integers(len(language.fricatives))]
            n = frames(rng.uniform(0.05, 0.12) / rate)
            sl = slice(pos, pos + n)
            noise[sl] = c[2] * amp * f_amp * 2.0
            fc[sl] = c[0] * math.sqrt(speaker.vtl_scale)
            fbw[sl] = c[1]
            if c[3] > 0:
                voice[sl] = 0.2 * amp
        elif kind == 1:  # nasal murmur
            c = language.nasals[rng.integers(len(language.nasals))]
            n = frames(rng.uniform(0.04, 0.09) / rate)
            sl = slice(pos, pos + n)
            formants[sl] = c
            voice[sl] = 0.35 * amp
        else:  # stop: closure (voice bar if voiced) + burst
            c = language.stops[rng.integers(len(language.stops))]
            n_clo = frames(rng.uniform(0.03, 0.07) / rate)
            if c[2] > 0:
                voice[pos : pos + n_clo] = 0.08 * amp
            n_b = frames(rng.uniform(0.01, 0.025))
            sl = slice(pos + n_clo, pos + n_clo + n_b)
            noise[sl] = 0.6 * amp * f_amp * 2.0
            fc[sl] = c[0]
            fbw[sl] = c[1]
            n = n_clo + n_b
        return pos + n

    pos = frames(rng.uniform(0.03, 0.15))
    note = 0.0
    tail = frames(rng.uniform(0.03, 0.12))
    while pos < n_frames - tail:
        syl_start = pos
        stress = rng.normal(0.0, 0.25)
        amp = 10.0 ** (stress * 0.3)
        if rng.random() < language.p_onset:
            pos = consonant(pos, amp)
        v = rng.choice(len(language.vowels), p=language.vowel_weights)
        nv = frames(vdur * rng.uniform(0.6, 1.6) * (1.0 + 0.6 * max(stress, 0)))
        sl = slice(pos, pos + nv)
        formants[sl] = language.vowels[v]
        voice[sl] = amp
        pos += nv
        if rng.random() < language.p_coda:
            pos = consonant(pos, amp)
        syl = slice(syl_start, min(pos, n_frames))
        n_syl = syl.stop - syl.start
        if n_syl > 0:
            if session.singing:
                note = float(np.clip(note + rng.integers(-4, 5), -7, 7))
                # notes in semitones (the contour is scaled by the range below)
                tone[syl] = note / max(speaker.f0_range * session.pitch_movement, 1e-3)
            elif language.tonal:
                t0, t1 = language.tones[rng.integers(len(language.tones))]
                tone[syl] = np.linspace(t0, t1, n_syl) * 0.8
            else:
                tone[syl] = max(stress, 0.0) * 4.0 + rng.normal(0.0, 0.2)
        if rng.random() < language.p_pause:
            pos += frames(rng.uniform(0.08, 0.3))

    # formants of unvoiced/silent frames: interpolate between articulations
    have = ~np.isnan(formants[:, 0])
    if not have.any():
        formants[:] = language.vowels[0]
    else:
        idx = np.flatnonzero(have)
        allf = np.arange(n_frames)
        for j in range(5):
            formants[:, j] = np.interp(allf, idx, formants[idx, j])
    formants = _smooth(formants, 5)
    voice = _smooth(voice, 3)
    noise = _smooth(noise, 3)
    # the pitch accents/tones move the pitch around the speaker's mean, not the mean
    voiced = voice > 0.05
    if voiced.any():
        tone = tone - tone[voiced].mean()
    tone = _smooth(tone, 5 if not session.singing else 7)
    return formants, voice, noise, fc, fbw, tone


def _resonance_power_den(freqs, fcent, bw, sr):
    """Squared denominator magnitudes of unity-DC-gain resonators.

    For H(z) = (1 + a1 + a2) / (1 + a1 z^-1 + a2 z^-2), returns
    |1 + a1 e^{-jw} + a2 e^{-2jw}|^2 / (1 + a1 + a2)^2, broadcast as
    ``fcent.shape + freqs.shape``.
    """
    r = np.exp(-np.pi * bw / sr)[..., None]
    theta = (2 * np.pi * fcent / sr)[..., None]
    w = 2 * np.pi * freqs / sr
    a1 = -2.0 * r * np.cos(theta)
    a2 = r * r
    den = (1.0 + a1 * a1 + a2 * a2) + 2.0 * a1 * (1.0 + a2) * np.cos(w) + 2.0 * a2 * np.cos(2 * w)
    return den / (1.0 + a1 + a2) ** 2


def _stft(x, n_fft, hop, window):
    pad = n_fft // 2
    n_frames = len(x) // hop + 1
    total = (n_frames - 1) * hop + n_fft
    xp = np.zeros(total)
    xp[pad : pad + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    return np.fft.rfft(frames * window, axis=1)


def _istft(spec, n_fft, hop, window, length):
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    n_frames = frames.shape[0]
    total = (n_frames - 1) * hop + n_fft
    out = np.zeros(total)
    norm = np.zeros(total)
    r = n_fft // hop
    wsq = window**2
    for j in range(r):
        # frames j, j+r, j+2r, ... do not overlap each other
        sub = frames[j::r]
        start = j * hop
        seg = sub.reshape(-1)
        out[start : start + len(seg)] += seg
        norm[start : start + len(seg)] += np.tile(wsq, len(sub))
    pad = n_fft // 2
    out = out[pad : pad + length]
    norm = norm[pad : pad + length]
    return out / np.maximum(norm, 1e-3)


def _glottal_source(f0, speaker, rng, sr):
    """Derivative of a Rosenberg-like glottal flow with jitter and shimmer."""
    phase0 = np.cumsum(f0 / sr)
    n_periods = int(phase0[-1]) + 2
    period = phase0.astype(np.int64)
    jit = 1.0 + speaker.jitter * rng.standard_normal(n_periods)
    f0j = f0 * jit[period]
    phase = np.cumsum(f0j / sr)
    period = phase.astype(np.int64)
    frac = phase - period
    oq = speaker.open_quotient
    tn = oq * speaker.closing_fraction
    tp = oq - tn
    flow = np.where(
        frac < tp,
        0.5 * (1.0 - np.cos(np.pi * frac / tp)),
        np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    shim = np.clip(1.0 + speaker.shimmer * rng.standard_normal(period[-1] + 2), 0.2, None)
    flow = flow * shim[period]
    src = np.diff(flow, prepend=flow[0])
    src /= src.std() + 1e-9
    asp = rng.standard_normal(len(f0)) * (0.3 + 0.7 * flow) * speaker.breathiness * 1.5
    return src + asp


def _make_noise(kind, color, n, rng, sr):
    if kind == "music":
        t = np.arange(n) / sr
        out = np.zeros(n)
        for _ in range(int(rng.integers(2, 4))):
            pos = 0
            while pos < n:
                ln = int(rng.uniform(0.2, 0.6) * sr)
                f = 110.0 * 2 ** (rng.integers(0, 36) / 12.0)
                seg = slice(pos, min(pos + ln, n))
                tt = t[seg]
                env = np.minimum(1.0, (tt - tt[0]) * 40) * np.exp(-(tt - tt[0]) * rng.uniform(1, 6))
                tone = sum((0.6**h) * np.sin(2 * np.pi * f * (h + 1) * tt) for h in range(4))
                out[seg] += env * tone
                pos += ln
        out += 0.05 * rng.standard_normal(n)
        return out
    if kind == "hum":
        t = np.arange(n) / sr
        base = 50.0 if rng.random() < 0.5 else 60.0
        out = sum(
            (0.7**h) * np.sin(2 * np.pi * base * (h + 1) * t + rng.uniform(0, 6.3))
            for h in range(8)
        )
        return out + 0.1 * rng.standard_normal(n)
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)
    if kind == "babble":
        # speech-shaped spectrum, several talkers with syllabic modulation
        shape = 1.0 / np.sqrt(1.0 + (f / 500.0) ** 2) * np.sqrt(np.minimum(1.0, f / 150.0))
        base = np.fft.irfft(spec * shape, n=n)
        env = np.zeros(n)
        for _ in range(3):
            m = np.abs(rng.standard_normal(n // 400 + 2))
            env += np.interp(np.arange(n), np.arange(len(m)) * 400, m)
        return base * env
    shape = f ** (-color / 2.0)
    return np.fft.irfft(spec * shape, n=n)


def _impulse_response(session, sr):
    if session.rt60 <= 0:
        return None
    rng = np.random.default_rng(session.ir_seed)
    n = max(int(session.rt60 * sr), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / session.rt60)
    tail[: int(0.0025 * sr)] = 0.0
    tail = _smooth(tail, 3)
    e_tail = np.sum(tail**2)
    ir = tail * math.sqrt(10 ** (-session.drr_db / 10.0) / max(e_tail, 1e-12))
    ir[0] = 1.0
    return ir


def synthesize_utterance(
    speaker, language, session=None, duration=2.0, rng=None, sample_rate=SAMPLE_RATE
):
    """Synthesise one utterance of ``speaker`` speaking ``language`` in ``session``.

    Arguments
    ---------
    speaker : SpeakerProfile
        The voice (see :func:`make_speakers`).
    language : str or int or LanguageProfile
        Language name (``"lang0"``), index or profile.
    session : SessionProfile, optional
        Recording condition (see :func:`make_session`); a clean close-talk
        channel when omitted.
    duration : float
        Length in seconds.
    rng : numpy.random.Generator or int, optional
        Random generator (or seed) for the phoneme sequence and noises.
    sample_rate : int
        Sampling rate in Hz (16000 for the corpus).

    Returns
    -------
    numpy.ndarray
        float32 waveform of ``round(duration * sample_rate)`` samples in
        (-1, 1).

    Example
    -------
    >>> spk = make_speakers(1, np.random.default_rng(0))[0]
    >>> x = synthesize_utterance(spk, "lang0", make_session(np.random.default_rng(1)), 1.0, np.random.default_rng(2))
    >>> x.dtype, x.shape, bool(np.abs(x).max() < 1.0)
    (dtype('float32'), (16000,), True)
    """
    if duration <= 0:
        raise ValueError(f"duration must be > 0 s, got {duration}")
    sr = int(sample_rate)
    rng = np.random.default_rng(rng)
    language = get_language(language)
    session = CLEAN_SESSION if session is None else session
    n = round(duration * sr)
    n_fft = 1 << math.ceil(math.log2(0.032 * sr))
    hop = n_fft // 4
    window = np.hanning(n_fft + 1)[:-1]
    n_frames = n // hop + 1

    formants, voice, noise_amp, fc, fbw, tone = _plan_frames(
        speaker, language, session, n_frames, hop / sr, rng
    )

    # pitch contour (semitones around the speaker mean)
    dur_s = n / sr
    knots = rng.standard_normal(max(int(dur_s / 0.5), 1) + 2)
    phrase = np.interp(np.linspace(0, len(knots) - 1, n_frames), np.arange(len(knots)), knots)
    range_st = speaker.f0_range * session.pitch_movement
    st = range_st * (0.5 * phrase + tone)
    st += session.pitch_shift_st - language.declination * (
        np.arange(n_frames) * hop / sr - dur_s / 2
    )
    st = _smooth(st, 5)
    t = np.arange(n) / sr
    st_s = np.interp(t, np.arange(n_frames) * hop / sr, st)
    vib_depth = speaker.vibrato_depth * session.vibrato_scale
    st_s += vib_depth * np.sin(2 * np.pi * speaker.vibrato_rate * t + rng.uniform(0, 2 * np.pi))
    f0 = np.clip(speaker.f0_mean * 2.0 ** (st_s / 12.0), 50.0, 700.0)

    src = _glottal_source(f0, speaker, rng, sr)
    frame_t = np.arange(n_frames) * hop
    src *= np.interp(np.arange(n), frame_t, voice)
    fric = rng.standard_normal(n) * np.interp(np.arange(n), frame_t, noise_amp)

    S = _stft(src, n_fft, hop, window)
    N = _stft(fric, n_fft, hop, window)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    offs = np.asarray(speaker.formant_offsets)
    fmt = formants * speaker.vtl_scale * offs
    fmt = np.minimum(fmt, 0.47 * sr)
    bws = np.broadcast_to(_BASE_BANDWIDTHS * speaker.bandwidth_scale, fmt.shape)
    H = 1.0 / np.sqrt(np.maximum(np.prod(_resonance_power_den(freqs, fmt, bws, sr), axis=1), 1e-18))
    # speaker tilt + vocal effort, fixed speaker resonance, session channel
    octaves = np.log2(np.maximum(freqs, 500.0) / 500.0)
    static = 10.0 ** ((speaker.tilt_db + session.effort_tilt_db) * octaves / 20.0)
    er = speaker.extra_resonance_db * np.exp(
        -0.5 * ((freqs - speaker.extra_resonance_hz) / 350.0) ** 2
    )
    if speaker.timbre_db:
        er = er + np.interp(
            np.log(np.maximum(freqs, 1.0)), np.log(TIMBRE_ANCHORS_HZ), speaker.timbre_db
        )
    static = static * 10.0 ** (er / 20.0)
    channel = session.eq_response(freqs)
    logf = np.log2(np.maximum(freqs, 20.0))
    Hn = np.exp(-0.5 * ((logf[None, :] - np.log2(fc)[:, None]) / (0.5 * fbw[:, None])) ** 2)
    Y = (S * H * static + N * Hn) * channel
    y = _istft(Y, n_fft, hop, window, n)

    ir = _impulse_response(session, sr)
    if ir is not None:
        y = fftconvolve(y, ir)[:n]
    # speech level: RMS normalisation (a loudness-like level, independent of
    # which phonemes happen to peak), then noise at the session SNR
    level_db = session.gain_db - 14.0 + rng.normal(0.0, 0.5)
    y *= 10.0 ** (level_db / 20.0) / math.sqrt(np.mean(y**2) + 1e-12)
    if session.snr_db < 100:
        snr = session.snr_db + rng.normal(0.0, 1.5)
        nz = _make_noise(session.noise_kind, session.noise_color, n, rng, sr)
        nz *= 10.0 ** ((level_db - snr) / 20.0) / math.sqrt(np.mean(nz**2) + 1e-12)
        y = y + nz
    peak = np.abs(y).max()
    if peak > 0.98:  # limiter: rare with the default levels
        y *= 0.98 / peak
    return np.clip(y, -0.999, 0.999).astype(np.float32)


# ----------------------------------------------------------------------------
# Corpus planning
# ----------------------------------------------------------------------------


@dataclass
class _Utt:
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
class _Plan:
    speakers: list
    sessions: list  # per speaker list of SessionProfile
    session_langs: list  # per speaker list of language names
    video_ids: list  # per speaker list of str
    utts: list  # list of _Utt
    test_speakers: list  # speaker indices
    cn2_speakers: list
    dev_speakers: list
    vox_ids: list
    cn_ids: list
    genre_ss: list = field(default_factory=list)  # per speaker list of "genre-ss"
    recordings: list = field(default_factory=list)  # per speaker list of recording index
    confusable: dict = field(default_factory=dict)  # speaker index -> partner index


def _video_id(rng, taken):
    while True:
        vid = "".join(rng.choice(_VIDEO_ID_ALPHABET, size=11))
        if vid not in taken:
            taken.add(vid)
            return vid


def _default_test_speakers(num_speakers):
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
    int
        Number of recordings.
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


def _plan_corpus(
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
    rng = np.random.default_rng([seed, 1])
    speakers = make_speakers(num_speakers, rng, num_languages=num_languages)
    n_test = _default_test_speakers(num_speakers) if test_speakers is None else int(test_speakers)
    test = list(range(num_speakers - n_test, num_speakers))
    train = list(range(num_speakers - n_test))
    # guarantee cross-language target trials: at least one bilingual test speaker
    if num_languages >= 2 and not any(len(speakers[i].languages) > 1 for i in test):
        s = speakers[test[0]]
        other = next(n for n in language_names(num_languages) if n != s.languages[0])
        speakers[test[0]] = replace(s, languages=(s.languages[0], other))
    confusable = _make_confusable(speakers, train, confusable_pairs, seed)
    n_cn2 = len(train) // 3 if len(train) >= 2 else 0
    cn2 = train[len(train) - n_cn2 :]
    dev = train[: len(train) - n_cn2]
    vox_ids = [f"id{10001 + i}" for i in range(num_speakers)]
    cn_ids = [""] * num_speakers
    for k, i in enumerate(dev + test):
        cn_ids[i] = f"id{k:05d}"
    for k, i in enumerate(cn2):
        cn_ids[i] = f"id{10000 + k:05d}"

    prng = np.random.default_rng([seed, 2])
    # shared recordings (a video / room with several speakers): training and
    # test speakers never share one
    rec_of, n_rec = _assign_recordings([train, test], num_sessions, speakers_per_session, prng)
    gp = _GENRE_WEIGHTS / _GENRE_WEIGHTS.sum()
    rec_genre = [GENRES[g] for g in prng.choice(len(GENRES), size=n_rec, p=gp)]
    rec_session = [
        make_session(np.random.default_rng([seed, 3, r]), genre=g, strength=session_strength)
        for r, g in enumerate(rec_genre)
    ]
    taken = set()
    rec_video = [_video_id(prng, taken) for _ in range(n_rec)]
    sessions, session_langs, video_ids, genre_ss, utts = [], [], [], [], []
    for i, spk in enumerate(speakers):
        recs = rec_of[i]
        genres = [rec_genre[r] for r in recs]
        # the pitch offset is personal; channel and speaking style are the recording's
        pr = np.random.default_rng([seed, 8, i])
        sess = [
            replace(rec_session[r], pitch_shift_st=float(pr.normal(0.0, 0.3 * session_strength)))
            for r in recs
        ]
        order = list(prng.permutation(len(spk.languages)))
        langs = [spk.languages[order[s % len(order)]] for s in range(num_sessions)]
        counter = {}
        gss = []
        for g in genres:
            counter[g] = counter.get(g, 0) + 1
            gss.append(f"{g}-{counter[g]:02d}")
        counts = np.full(num_sessions, num_utterances // num_sessions)
        extra = prng.choice(num_sessions, size=num_utterances - counts.sum(), replace=False)
        counts[extra] += 1
        for s in range(num_sessions):
            for u in range(int(counts[s])):
                if prng.random() < short_fraction:
                    dur = prng.uniform(0.5, 1.9)
                else:
                    dur = prng.uniform(duration_min, duration_max)
                utts.append(
                    _Utt(
                        i,
                        s,
                        u,
                        langs[s],
                        genres[s],
                        round(float(dur), 3),
                        (seed, 4, i, s, u),
                        recording=recs[s],
                    )
                )
        sessions.append(sess)
        session_langs.append(langs)
        video_ids.append([rec_video[r] for r in recs])
        genre_ss.append(gss)
    _choose_label_noise(utts, train, label_noise, seed)
    return _Plan(
        speakers,
        sessions,
        session_langs,
        video_ids,
        utts,
        test,
        cn2,
        dev,
        vox_ids,
        cn_ids,
        genre_ss,
        [rec_of[i] for i in range(num_speakers)],
        confusable,
    )


def _vox_paths(plan):
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


def _cn_session_names(plan):
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


def _check_nuisance_args(n_train, session_strength, speakers_per_session, confusable_pairs, label_noise):
    if not session_strength >= 0:
        raise ValueError(f"session_strength must be >= 0 (--session-strength), got {session_strength}")
    if int(speakers_per_session) < 1:
        raise ValueError(
            f"speakers_per_session must be >= 1 (--speakers-per-session), got {speakers_per_session}"
        )
    if not 0 <= int(confusable_pairs) <= n_train // 2:
        raise ValueError(
            f"confusable_pairs must be between 0 and half the {n_train} training speakers "
            f"({n_train // 2}), got {confusable_pairs} (--confusable-pairs)"
        )
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1) (--label-noise), got {label_noise}")
    if label_noise > 0 and n_train < 2:
        raise ValueError("label_noise needs at least 2 training speakers (use more --speakers)")


def _vox_trials(plan, seed, per_side=6):
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


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------

_MARKER = "synthetic_corpus.json"
_OWNED = (
    "VoxCeleb1",
    "CN-Celeb_flac",
    "CN-Celeb2_flac",
    "speakers.csv",
    "utterances.csv",
    _MARKER,
)


def _corpus_files_present(output):
    """True when every file listed in utterances.csv exists."""
    try:
        with open(os.path.join(output, "utterances.csv"), newline="", encoding="utf-8") as f:
            return all(os.path.isfile(os.path.join(output, r["path"])) for r in csv.DictReader(f))
    except (OSError, KeyError):
        return False


def _check_output(output, config, overwrite):
    """Decide whether ``output`` holds a reusable corpus; clear it if asked.

    Returns True to reuse. A corpus made by this generator with the same
    arguments but with files missing is regenerated without asking.
    """
    marker = os.path.join(output, _MARKER)
    present = [p for p in _OWNED if os.path.exists(os.path.join(output, p))]
    if not present:
        return False
    if os.path.isfile(marker) and not overwrite:
        try:
            with open(marker, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
        if previous.get("config") == config and previous.get("complete"):
            if _corpus_files_present(output):
                return True
            logger.warning("Synthetic corpus in %s has missing files: regenerating it", output)
            overwrite = True
    if not overwrite:
        raise FileExistsError(
            f"{output} already holds {', '.join(present)} from another or an unfinished run of the "
            "synthetic corpus generator; pass overwrite=True (--overwrite) to replace them, or choose "
            "another output folder."
        )
    for p in present:
        full = os.path.join(output, p)
        if os.path.isdir(full):
            shutil.rmtree(full)
        else:
            os.remove(full)
    return False


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def _write_audio(path, pcm, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format=fmt)


def generate_corpus(
    output,
    layout="both",
    num_speakers=40,
    num_utterances=24,
    num_sessions=3,
    num_languages=3,
    duration_min=1.5,
    duration_max=4.0,
    short_fraction=0.15,
    seed=0,
    test_speakers=None,
    trials_per_utterance=6,
    session_strength=DEFAULT_SESSION_STRENGTH,
    speakers_per_session=2,
    confusable_pairs=0,
    label_noise=0.0,
    overwrite=False,
    progress=True,
):
    """Write the synthetic corpus to ``output`` and return a summary.

    Arguments
    ---------
    output : str
        Output folder (created).
    layout : str
        ``"voxceleb"``, ``"cnceleb"`` or ``"both"`` (same audio in both).
    num_speakers : int
        Number of speakers (>= 3).
    num_utterances : int
        Utterances per speaker (>= ``num_sessions``).
    num_sessions : int
        Sessions per speaker (>= 2): VoxCeleb videos / CN-Celeb genre clips.
    num_languages : int
        Number of synthetic languages.
    duration_min, duration_max : float
        Duration range (s) of the normal utterances.
    short_fraction : float
        Fraction of short utterances (0.5-1.9 s, as in CN-Celeb).
    seed : int
        Random seed; the same arguments give byte-identical files.
    test_speakers : int, optional
        Number of test (VoxCeleb) / eval (CN-Celeb) speakers, the last ones;
        default 25 % of the speakers, at least 2.
    trials_per_utterance : int
        VoxCeleb trials: target and non-target trials drawn per enrolment
        utterance (each side).
    session_strength : float
        Scale of the per-recording channel and speaking-style nuisance
        (:func:`make_session`); default :data:`DEFAULT_SESSION_STRENGTH`.
    speakers_per_session : int
        Speakers sharing one recording (same channel, room and style; the
        same VoxCeleb video id). 1 gives every speaker private sessions.
    confusable_pairs : int
        Pairs of training speakers whose voices are near-identical
        (:func:`confusable_speaker`); column ``confusable_with`` of
        ``speakers.csv``.
    label_noise : float
        Fraction in [0, 1) of the training utterances filed under another
        training speaker (rounded half up); listed in
        ``VoxCeleb1/meta/label_noise.csv`` and
        ``CN-Celeb_flac/meta/label_noise.csv`` /
        ``CN-Celeb2_flac/meta/label_noise.csv``.
    overwrite : bool
        Replace an earlier corpus in ``output``. Without it a complete corpus
        made with the same arguments is reused, anything else is an error.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        Paths (``root``, ``speakers_csv``, ``utterances_csv``, and per layout
        ``voxceleb`` / ``cnceleb`` dicts with the folders and lists), counts,
        total audio duration and wall time.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     s = generate_corpus(out, layout="voxceleb", num_speakers=4, num_utterances=2,
    ...                         num_sessions=2, duration_min=0.5, duration_max=0.6, progress=False)
    ...     found = os.path.isfile(s["voxceleb"]["trials"])
    >>> s["num_speakers"], s["num_utterances"], found
    (4, 8, True)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if num_sessions < 2:
        raise ValueError(
            "num_sessions must be >= 2 so that target trials use different sessions (--sessions 2 or more)"
        )
    if num_utterances < num_sessions:
        raise ValueError(
            f"num_utterances ({num_utterances}) must be >= num_sessions ({num_sessions})"
        )
    if not 0 < duration_min <= duration_max:
        raise ValueError(
            f"need 0 < duration_min <= duration_max, got {duration_min}, {duration_max}"
        )
    if not 0.0 <= short_fraction <= 1.0:
        raise ValueError(f"short_fraction must be in [0, 1], got {short_fraction}")
    n_test = _default_test_speakers(num_speakers) if test_speakers is None else int(test_speakers)
    if n_test < 2 or n_test > num_speakers - 1:
        raise ValueError(
            f"test_speakers must be between 2 and num_speakers - 1 = {num_speakers - 1}, got {n_test} "
            "(use more --speakers or fewer --test-speakers)"
        )
    _check_nuisance_args(
        num_speakers - n_test, session_strength, speakers_per_session, confusable_pairs, label_noise
    )
    config = {
        "layout": layout,
        "num_speakers": int(num_speakers),
        "num_utterances": int(num_utterances),
        "num_sessions": int(num_sessions),
        "num_languages": int(num_languages),
        "duration_min": float(duration_min),
        "duration_max": float(duration_max),
        "short_fraction": float(short_fraction),
        "seed": int(seed),
        "test_speakers": n_test,
        "trials_per_utterance": int(trials_per_utterance),
        "session_strength": float(session_strength),
        "speakers_per_session": int(speakers_per_session),
        "confusable_pairs": int(confusable_pairs),
        "label_noise": float(label_noise),
        "sample_rate": SAMPLE_RATE,
        "version": CORPUS_VERSION,
    }
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    reuse = _check_output(output, config, overwrite)
    if reuse:
        with open(os.path.join(output, _MARKER), encoding="utf-8") as f:
            summary = json.load(f)["summary"]
        logger.info(
            "Synthetic corpus in %s is complete and matches the arguments: reusing it",
            output,
        )
        summary["reused"] = True
        return summary

    t_start = time.time()
    do_vox = layout in ("voxceleb", "both")
    do_cn = layout in ("cnceleb", "both")
    plan = _plan_corpus(
        num_speakers,
        num_utterances,
        num_sessions,
        num_languages,
        duration_min,
        duration_max,
        short_fraction,
        seed,
        n_test,
        session_strength=float(session_strength),
        speakers_per_session=int(speakers_per_session),
        confusable_pairs=int(confusable_pairs),
        label_noise=float(label_noise),
    )
    test_set = set(plan.test_speakers)
    cn2_set = set(plan.cn2_speakers)
    vox_root = os.path.join(output, "VoxCeleb1")
    cn_root = os.path.join(output, "CN-Celeb_flac")
    cn2_root = os.path.join(output, "CN-Celeb2_flac")

    # CN-Celeb eval enrolment: the first utterances (<= 3, leaving >= 1 test
    # utterance) of the speaker's largest session
    enrol = {}
    for i in plan.test_speakers:
        mine = [u for u in plan.utts if u.speaker == i]
        sizes = np.bincount([u.session for u in mine], minlength=num_sessions)
        s = int(np.argmax(sizes))
        sess_utts = [u for u in mine if u.session == s]
        k = max(1, min(3, len(sess_utts) - 1)) if len(mine) > 1 else 1
        enrol[i] = sess_utts[:k]
    enrol_ids = {id(u) for v in enrol.values() for u in v}

    cn_session = _cn_session_names(plan)
    vox_paths = _vox_paths(plan)
    for u in plan.utts:
        u.vox_rel = vox_paths[id(u)]
        cid = plan.cn_ids[u.filed]
        base = f"{cn_session[id(u)]}-{u.index_in_session + 1:03d}"
        if u.speaker in test_set:
            if id(u) in enrol_ids:
                u.cn_rel, u.cn_role = (
                    f"CN-Celeb_flac/data/{cid}/{base}.flac",
                    "enroll_part",
                )
            else:
                u.cn_rel, u.cn_role = (
                    f"CN-Celeb_flac/eval/test/{cid}-{base}.flac",
                    "test",
                )
        elif u.filed in cn2_set:
            u.cn_rel, u.cn_role = f"CN-Celeb2_flac/data/{cid}/{base}.flac", "train"
        else:
            u.cn_rel, u.cn_role = f"CN-Celeb_flac/data/{cid}/{base}.flac", "train"

    audio_store = {}
    total_s = 0.0
    bar = tqdm(plan.utts, desc="Synthesising utterances", unit="utt", disable=not progress)
    for u in bar:
        x = synthesize_utterance(
            plan.speakers[u.speaker],
            u.language,
            plan.sessions[u.speaker][u.session],
            u.duration,
            np.random.default_rng(list(u.seed)),
        )
        pcm = np.round(x.astype(np.float64) * 32767.0).astype(np.int16)
        u.audio_dur = len(pcm) / SAMPLE_RATE
        total_s += u.audio_dur
        if do_vox:
            _write_audio(os.path.join(vox_root, "wav", u.vox_rel), pcm, "WAV")
        if do_cn:
            _write_audio(os.path.join(output, u.cn_rel), pcm, "FLAC")
            if id(u) in enrol_ids:
                audio_store[id(u)] = pcm
    bar.close()

    result = {
        "root": output,
        "layout": layout,
        "num_speakers": int(num_speakers),
        "num_utterances": len(plan.utts),
        "num_train_speakers": len(plan.speakers) - len(plan.test_speakers),
        "num_test_speakers": len(plan.test_speakers),
        "languages": language_names(num_languages),
        "total_duration_s": round(total_s, 3),
        "speakers_csv": os.path.join(output, "speakers.csv"),
        "utterances_csv": os.path.join(output, "utterances.csv"),
        "num_label_noise": sum(u.given >= 0 for u in plan.utts),
        "num_confusable_pairs": len(plan.confusable) // 2,
    }
    rows = []
    if do_vox:
        trials = _vox_trials(plan, seed, per_side=trials_per_utterance)
        meta = os.path.join(vox_root, "meta")
        _write_lines(
            os.path.join(meta, "veri_test2.txt"),
            [f"{lab} {a} {b}" for lab, a, b in trials],
        )
        _write_lines(
            os.path.join(meta, "languages.csv"),
            ["path,language"] + [f"{u.vox_rel},{u.language}" for u in plan.utts],
        )
        noisy = [u for u in plan.utts if u.given >= 0]
        if label_noise > 0:
            _write_lines(
                os.path.join(meta, LABEL_NOISE_CSV),
                [LABEL_NOISE_HEADER]
                + [f"{u.vox_rel},{plan.vox_ids[u.given]},{plan.vox_ids[u.speaker]}" for u in noisy],
            )
        lang_of = {u.vox_rel: u.language for u in plan.utts}
        n_tgt = sum(lab for lab, _, _ in trials)
        n_cross = sum(1 for lab, a, b in trials if lab == 1 and lang_of[a] != lang_of[b])
        result["voxceleb"] = {
            "root": vox_root,
            "wav_dir": os.path.join(vox_root, "wav"),
            "trials": os.path.join(meta, "veri_test2.txt"),
            "languages_csv": os.path.join(meta, "languages.csv"),
            "num_trials": len(trials),
            "num_target_trials": n_tgt,
            "num_cross_language_target_trials": n_cross,
        }
        for u in plan.utts:
            rows.append(
                {
                    "utt": u.key,
                    "path": f"VoxCeleb1/wav/{u.vox_rel}",
                    "layout": "voxceleb",
                    "speaker": plan.vox_ids[u.filed],
                    "speaker_index": u.speaker,
                    "true_speaker": plan.vox_ids[u.speaker],
                    "label_noise": int(u.given >= 0),
                    "session": plan.video_ids[u.speaker][u.session],
                    "recording": u.recording,
                    "language": u.language,
                    "genre": u.genre,
                    "duration": f"{u.audio_dur:.3f}",
                    "role": "test" if u.speaker in test_set else "train",
                }
            )
    if do_cn:
        lists = os.path.join(cn_root, "eval", "lists")
        _write_lines(
            os.path.join(cn_root, "dev", "dev.lst"),
            [plan.cn_ids[i] for i in plan.dev_speakers],
        )
        _write_lines(
            os.path.join(cn2_root, "spk.lst"),
            [plan.cn_ids[i] for i in plan.cn2_speakers],
        )
        if label_noise > 0:
            for root in (cn_root, cn2_root):
                prefix = os.path.relpath(os.path.join(root, "data"), output) + "/"
                _write_lines(
                    os.path.join(root, "meta", LABEL_NOISE_CSV),
                    [LABEL_NOISE_HEADER]
                    + [
                        f"{u.cn_rel[len(prefix) : -len('.flac')]}.wav,"
                        f"{plan.cn_ids[u.given]},{plan.cn_ids[u.speaker]}"
                        for u in plan.utts
                        if u.given >= 0 and u.cn_rel.startswith(prefix)
                    ],
                )
        enroll_lst, enroll_map = [], []
        for i in plan.test_speakers:
            cid = plan.cn_ids[i]
            parts = enrol[i]
            pcm = np.concatenate([audio_store[id(u)] for u in parts])
            _write_audio(
                os.path.join(cn_root, "eval", "enroll", f"{cid}-enroll.flac"),
                pcm,
                "FLAC",
            )
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
        tests = [u for u in plan.utts if u.cn_role == "test"]
        test_lst = [u.cn_rel.split("/eval/", 1)[1][: -len(".flac")] + ".wav" for u in tests]
        trials_cn = []
        for i in plan.test_speakers:
            for u, rel in zip(tests, test_lst):
                trials_cn.append(
                    (
                        f"{plan.cn_ids[i]}-enroll",
                        rel,
                        int(u.speaker == i),
                        enrol[i][0].language,
                        u.language,
                    )
                )
        _write_lines(os.path.join(lists, "enroll.lst"), enroll_lst)
        _write_lines(os.path.join(lists, "enroll.map"), enroll_map)
        _write_lines(os.path.join(lists, "test.lst"), test_lst)
        _write_lines(
            os.path.join(lists, "trials.lst"),
            [f"{e} {t} {lab}" for e, t, lab, _, _ in trials_cn],
        )
        result["cnceleb"] = {
            "root": cn_root,
            "cnceleb2_root": cn2_root,
            "dev_list": os.path.join(cn_root, "dev", "dev.lst"),
            "cnceleb2_speakers": os.path.join(cn2_root, "spk.lst"),
            "enroll_lst": os.path.join(lists, "enroll.lst"),
            "enroll_map": os.path.join(lists, "enroll.map"),
            "test_lst": os.path.join(lists, "test.lst"),
            "trials": os.path.join(lists, "trials.lst"),
            "num_trials": len(trials_cn),
            "num_target_trials": sum(t[2] for t in trials_cn),
            "num_cross_language_target_trials": sum(
                1 for t in trials_cn if t[2] == 1 and t[3] != t[4]
            ),
            "num_dev_speakers": len(plan.dev_speakers),
            "num_cnceleb2_speakers": len(plan.cn2_speakers),
            "num_eval_speakers": len(plan.test_speakers),
        }
        for u in plan.utts:
            rows.append(
                {
                    "utt": u.key,
                    "path": u.cn_rel,
                    "layout": "cnceleb",
                    "speaker": plan.cn_ids[u.filed],
                    "speaker_index": u.speaker,
                    "true_speaker": plan.cn_ids[u.speaker],
                    "label_noise": int(u.given >= 0),
                    "session": cn_session[id(u)],
                    "recording": u.recording,
                    "language": u.language,
                    "genre": u.genre,
                    "duration": f"{u.audio_dur:.3f}",
                    "role": u.cn_role,
                }
            )

    with open(result["utterances_csv"], "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(
            f,
            fieldnames=[
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
            ],
        )
        w.writeheader()
        w.writerows(rows)
    with open(result["speakers_csv"], "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
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
        )
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
    result["wall_time_s"] = round(time.time() - t_start, 2)
    with open(os.path.join(output, _MARKER), "w", encoding="utf-8") as f:
        json.dump(
            {"config": config, "complete": True, "summary": result},
            f,
            indent=2,
            sort_keys=True,
        )
    return result


def format_summary(summary):
    """Human-readable summary of :func:`generate_corpus`'s result.

    Arguments
    ---------
    summary : dict
        The dict returned by :func:`generate_corpus`.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_summary(dict(root="/x", num_speakers=2, num_train_speakers=1, num_test_speakers=1,
    ...     num_utterances=4, total_duration_s=7.5, languages=["lang0"], wall_time_s=0.1)))
    Synthetic corpus in /x
      speakers: 2 (1 train, 1 test), utterances: 4, audio: 0.1 min, languages: lang0
      generated in 0.1 s
    """
    lines = [
        f"Synthetic corpus in {summary['root']}",
        (
            f"  speakers: {summary['num_speakers']} ({summary['num_train_speakers']} train, "
            f"{summary['num_test_speakers']} test), utterances: {summary['num_utterances']}, "
            f"audio: {summary['total_duration_s'] / 60:.1f} min, languages: {', '.join(summary['languages'])}"
        ),
    ]
    if "voxceleb" in summary:
        v = summary["voxceleb"]
        lines.append(
            f"  VoxCeleb1 layout: {v['wav_dir']}  trials: {v['trials']} ({v['num_trials']}, "
            f"{v['num_target_trials']} target, {v['num_cross_language_target_trials']} cross-language target)"
        )
    if "cnceleb" in summary:
        c = summary["cnceleb"]
        lines.append(
            f"  CN-Celeb layout: {c['root']} ({c['num_dev_speakers']} dev, {c['num_eval_speakers']} eval speakers) "
            f"+ {c['cnceleb2_root']} ({c['num_cnceleb2_speakers']} speakers)"
        )
        lines.append(
            f"    trials: {c['trials']} ({c['num_trials']}, {c['num_target_trials']} target, "
            f"{c['num_cross_language_target_trials']} cross-language target)"
        )
    lines.append(
        f"  generated in {summary.get('wall_time_s', 0.0):.1f} s"
        + (" (reused)" if summary.get("reused") else "")
    )
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point: ``python -m sb_angcl.synthetic --output DIR``.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        The summary of :func:`generate_corpus`.

    Example
    -------
    >>> import tempfile, contextlib, io
    >>> with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
    ...     s = main(["--output", out, "--layout", "cnceleb", "--speakers", "4",
    ...               "--utterances", "2", "--sessions", "2", "--duration-min", "0.5",
    ...               "--duration-max", "0.5", "--no-progress"])
    >>> s["cnceleb"]["num_eval_speakers"]
    2
    """
    parser = argparse.ArgumentParser(
        prog="python -m sb_angcl.synthetic",
        description="Write a synthetic multi-speaker, multi-language corpus in the VoxCeleb1 and/or CN-Celeb layouts.",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="both")
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--utterances", type=int, default=24, help="utterances per speaker")
    parser.add_argument(
        "--sessions",
        type=int,
        default=3,
        help="sessions (videos / genre clips) per speaker",
    )
    parser.add_argument("--languages", type=int, default=3)
    parser.add_argument("--duration-min", type=float, default=1.5)
    parser.add_argument("--duration-max", type=float, default=4.0)
    parser.add_argument(
        "--short-fraction",
        type=float,
        default=0.15,
        help="fraction of 0.5-1.9 s utterances",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test-speakers",
        type=int,
        default=None,
        help="default: 25%% of the speakers, at least 2",
    )
    parser.add_argument("--trials-per-utterance", type=int, default=6)
    parser.add_argument(
        "--session-strength",
        type=float,
        default=DEFAULT_SESSION_STRENGTH,
        help="scale of the per-recording channel and speaking-style nuisance (0: none)",
    )
    parser.add_argument(
        "--speakers-per-session",
        type=int,
        default=2,
        help="speakers sharing one recording (video / room); 1: private sessions",
    )
    parser.add_argument(
        "--confusable-pairs",
        type=int,
        default=0,
        help="pairs of training speakers with near-identical voices",
    )
    parser.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of training utterances filed under another training speaker",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier corpus in --output"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = generate_corpus(
            args.output,
            layout=args.layout,
            num_speakers=args.speakers,
            num_utterances=args.utterances,
            num_sessions=args.sessions,
            num_languages=args.languages,
            duration_min=args.duration_min,
            duration_max=args.duration_max,
            short_fraction=args.short_fraction,
            seed=args.seed,
            test_speakers=args.test_speakers,
            trials_per_utterance=args.trials_per_utterance,
            session_strength=args.session_strength,
            speakers_per_session=args.speakers_per_session,
            confusable_pairs=args.confusable_pairs,
            label_noise=args.label_noise,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (ValueError, FileExistsError) as err:
        parser.exit(2, f"error: {err}\n")
    print(format_summary(summary))
    return summary


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
