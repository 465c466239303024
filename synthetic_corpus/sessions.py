"""Recording sessions: CN-Celeb genres, channels (EQ, noise, room) and speaking style.

:func:`make_session` draws a :class:`SessionProfile` for a genre;
:func:`channel_noise` and :func:`impulse_response` render its additive noise
and reverberation.

Authors
 * sb-angcl contributors 2025
"""

import math
from dataclasses import dataclass

import numpy as np

from synthetic_corpus.dsp import smooth

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

#: CN-Celeb's 11 genres, in the order of the official list. Written here, not
#: imported from the data preparation, so that the generator does not depend on
#: the code it exercises (a test checks that the two lists agree).
GENRES = tuple(_GENRE_PRESETS)

#: Relative frequency of the :data:`GENRES` when sessions are drawn (singing is rarer).
GENRE_WEIGHTS = np.array([0.8, 1.0, 1.2, 1.5, 1.0, 0.9, 0.6, 0.8, 0.6, 1.2, 1.4])

#: SNR reduction (dB) per unit of session strength above 1 (see :func:`make_session`).
SNR_DROP_DB = 10.0

#: Standard deviation (dB per octave) of the channel tilt at session strength 1.
CHANNEL_TILT_DB = 1.0

#: The probability of a band-limited channel grows as strength ** BANDLIMIT_POWER.
BANDLIMIT_POWER = 3.0

#: Default session strength of the corpus generator (see :mod:`synthetic_corpus`).
DEFAULT_SESSION_STRENGTH = 1.0


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

    Example
    -------
    >>> s = make_session(np.random.default_rng(3), genre="interview")
    >>> s.genre, s.snr_db > 20.0, s.noise_kind in ("colored", "babble")
    ('interview', True, True)
    """
    rng = np.random.default_rng(rng)
    if genre is None:
        genre = GENRES[int(rng.choice(len(GENRES), p=GENRE_WEIGHTS / GENRE_WEIGHTS.sum()))]
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


def channel_noise(kind, color, n, rng, sr):
    """Additive noise of a session, before scaling to its SNR.

    Arguments
    ---------
    kind : str
        ``"music"`` (notes with harmonics), ``"hum"`` (mains hum),
        ``"babble"`` (speech-shaped, modulated) or ``"colored"``.
    color : float
        Spectral slope exponent of coloured noise (0 white, 1 pink, 2 brown).
    sr : int
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        ``n`` samples, arbitrary level.

    Example
    -------
    >>> channel_noise("hum", 1.0, 800, np.random.default_rng(0), 16000).shape
    (800,)
    """
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


def impulse_response(session, sr):
    """Room impulse response of a session: a direct path plus an exponential tail.

    Arguments
    ---------
    session : SessionProfile
        Gives ``rt60``, ``drr_db`` and ``ir_seed`` (the same response every time).
    sr : int
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray or None
        The response (first tap 1), or None for a dry session (``rt60 == 0``).

    Example
    -------
    >>> ir = impulse_response(SessionProfile(rt60=0.1), 16000)
    >>> len(ir), float(ir[0]), impulse_response(SessionProfile(), 16000) is None
    (1600, 1.0, True)
    """
    if session.rt60 <= 0:
        return None
    rng = np.random.default_rng(session.ir_seed)
    n = max(int(session.rt60 * sr), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / session.rt60)
    tail[: int(0.0025 * sr)] = 0.0
    tail = smooth(tail, 3)
    e_tail = np.sum(tail**2)
    ir = tail * math.sqrt(10 ** (-session.drr_db / 10.0) / max(e_tail, 1e-12))
    ir[0] = 1.0
    return ir
