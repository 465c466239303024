"""Synthesis of one utterance: articulation, glottal source, vocal tract, channel.

Per utterance a phoneme sequence gives frame-wise formant tracks, voicing and
frication levels and a pitch contour; a glottal-pulse source and a frication
noise are shaped in the STFT domain by the vocal-tract envelope and the
session EQ, then reverberated, scaled to the session level and mixed with
noise (:func:`synthesize_utterance`).

Authors
 * sb-angcl contributors 2025
"""

import math

import numpy as np
from scipy.signal import fftconvolve

from synthetic_corpus.dsp import istft, resonance_power_den, smooth, stft
from synthetic_corpus.languages import get_language
from synthetic_corpus.sessions import CLEAN_SESSION, channel_noise, impulse_response
from synthetic_corpus.voices import BASE_BANDWIDTHS, TIMBRE_ANCHORS_HZ

#: Sampling rate (Hz) of the corpus.
SAMPLE_RATE = 16000


class _Articulation:
    """Frame-wise tracks of one utterance, filled syllable by syllable.

    Tracks: formants (F1..F5, NaN where nothing is articulated), voicing and
    frication levels, frication band centre and width, and pitch targets in
    units of the speaker's intonation range.

    Arguments
    ---------
    speaker : SpeakerProfile
        The voice (speaking rate, breathiness, vocal-tract length).
    language : LanguageProfile
        Phoneme inventory, phonotactics and intonation.
    session : SessionProfile
        Speaking rate and style (singing) of the session.
    rng : numpy.random.Generator
        Random generator (drawn in a fixed order).

    Example
    -------
    >>> from synthetic_corpus.languages import get_language
    >>> from synthetic_corpus.sessions import CLEAN_SESSION
    >>> from synthetic_corpus.voices import make_speakers
    >>> spk = make_speakers(1, np.random.default_rng(0))[0]
    >>> art = _Articulation(spk, get_language(0), CLEAN_SESSION, 50, 0.01, np.random.default_rng(1))
    >>> art.syllable(0) > 0
    True
    """

    def __init__(self, speaker, language, session, n_frames, hop_s, rng):
        self.speaker, self.language, self.session = speaker, language, session
        self.n_frames, self.hop_s, self.rng = n_frames, hop_s, rng
        self.formants = np.full((n_frames, 5), np.nan)
        self.voice = np.zeros(n_frames)
        self.noise = np.zeros(n_frames)
        self.fc = np.full(n_frames, 4000.0)
        self.fbw = np.ones(n_frames)
        self.tone = np.zeros(n_frames)
        self.rate = max(speaker.speaking_rate * session.rate, 0.2)
        self.vdur = language.vowel_duration / self.rate
        self.f_amp = 0.25 + 0.5 * speaker.breathiness
        self.note = 0.0

    def frames(self, seconds):
        """Number of frames (at least 1) of ``seconds``."""
        return max(1, round(seconds / self.hop_s))

    def consonant(self, pos, amp):
        """Write one consonant from frame ``pos``; return the next free frame."""
        rng, language, rate = self.rng, self.language, self.rate
        kind = rng.choice(3, p=language.consonant_weights)
        if kind == 0:  # fricative: noise band, sometimes voiced
            c = language.fricatives[rng.integers(len(language.fricatives))]
            n = self.frames(rng.uniform(0.05, 0.12) / rate)
            sl = slice(pos, pos + n)
            self.noise[sl] = c[2] * amp * self.f_amp * 2.0
            self.fc[sl] = c[0] * math.sqrt(self.speaker.vtl_scale)
            self.fbw[sl] = c[1]
            if c[3] > 0:
                self.voice[sl] = 0.2 * amp
        elif kind == 1:  # nasal murmur
            c = language.nasals[rng.integers(len(language.nasals))]
            n = self.frames(rng.uniform(0.04, 0.09) / rate)
            sl = slice(pos, pos + n)
            self.formants[sl] = c
            self.voice[sl] = 0.35 * amp
        else:  # stop: closure (voice bar if voiced) + burst
            c = language.stops[rng.integers(len(language.stops))]
            n_clo = self.frames(rng.uniform(0.03, 0.07) / rate)
            if c[2] > 0:
                self.voice[pos : pos + n_clo] = 0.08 * amp
            n_b = self.frames(rng.uniform(0.01, 0.025))
            sl = slice(pos + n_clo, pos + n_clo + n_b)
            self.noise[sl] = 0.6 * amp * self.f_amp * 2.0
            self.fc[sl] = c[0]
            self.fbw[sl] = c[1]
            n = n_clo + n_b
        return pos + n

    def syllable(self, pos):
        """Write one syllable (onset, vowel, coda, pause) from ``pos``; return the next frame."""
        rng, language = self.rng, self.language
        syl_start = pos
        stress = rng.normal(0.0, 0.25)
        amp = 10.0 ** (stress * 0.3)
        if rng.random() < language.p_onset:
            pos = self.consonant(pos, amp)
        v = rng.choice(len(language.vowels), p=language.vowel_weights)
        nv = self.frames(self.vdur * rng.uniform(0.6, 1.6) * (1.0 + 0.6 * max(stress, 0)))
        sl = slice(pos, pos + nv)
        self.formants[sl] = language.vowels[v]
        self.voice[sl] = amp
        pos += nv
        if rng.random() < language.p_coda:
            pos = self.consonant(pos, amp)
        self.pitch_target(slice(syl_start, min(pos, self.n_frames)), stress)
        if rng.random() < language.p_pause:
            pos += self.frames(rng.uniform(0.08, 0.3))
        return pos

    def pitch_target(self, syl, stress):
        """Pitch of the frames ``syl``: a sung note, a lexical tone or a stress accent."""
        n_syl = syl.stop - syl.start
        if n_syl <= 0:
            return
        rng = self.rng
        if self.session.singing:
            self.note = float(np.clip(self.note + rng.integers(-4, 5), -7, 7))
            # notes in semitones (the contour is scaled by the range below)
            self.tone[syl] = self.note / max(
                self.speaker.f0_range * self.session.pitch_movement, 1e-3
            )
        elif self.language.tonal:
            t0, t1 = self.language.tones[rng.integers(len(self.language.tones))]
            self.tone[syl] = np.linspace(t0, t1, n_syl) * 0.8
        else:
            self.tone[syl] = max(stress, 0.0) * 4.0 + rng.normal(0.0, 0.2)

    def finish(self):
        """Interpolated, smoothed tracks: formants, voice, noise, fc, fbw, tone."""
        formants = self.formants
        # formants of unvoiced/silent frames: interpolate between articulations
        have = ~np.isnan(formants[:, 0])
        if not have.any():
            formants[:] = self.language.vowels[0]
        else:
            idx = np.flatnonzero(have)
            allf = np.arange(self.n_frames)
            for j in range(5):
                formants[:, j] = np.interp(allf, idx, formants[idx, j])
        formants = smooth(formants, 5)
        voice = smooth(self.voice, 3)
        noise = smooth(self.noise, 3)
        # the pitch accents/tones move the pitch around the speaker's mean, not the mean
        tone = self.tone
        voiced = voice > 0.05
        if voiced.any():
            tone = tone - tone[voiced].mean()
        tone = smooth(tone, 5 if not self.session.singing else 7)
        return formants, voice, noise, self.fc, self.fbw, tone


def _plan_frames(speaker, language, session, n_frames, hop_s, rng):
    """Frame-wise articulation: formants, voicing, frication, pitch offsets."""
    art = _Articulation(speaker, language, session, n_frames, hop_s, rng)
    pos = art.frames(rng.uniform(0.03, 0.15))
    tail = art.frames(rng.uniform(0.03, 0.12))
    while pos < n_frames - tail:
        pos = art.syllable(pos)
    return art.finish()


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
    >>> from synthetic_corpus import make_session, make_speakers
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
    f0 = _pitch_track(speaker, language, session, tone, n, hop, sr, rng)
    src = _glottal_source(f0, speaker, rng, sr)
    frame_t = np.arange(n_frames) * hop
    src *= np.interp(np.arange(n), frame_t, voice)
    fric = rng.standard_normal(n) * np.interp(np.arange(n), frame_t, noise_amp)

    S = stft(src, n_fft, hop, window)
    N = stft(fric, n_fft, hop, window)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    H = _vocal_tract(speaker, formants, freqs, sr)
    static = _static_shape(speaker, session, freqs)
    channel = session.eq_response(freqs)
    logf = np.log2(np.maximum(freqs, 20.0))
    Hn = np.exp(-0.5 * ((logf[None, :] - np.log2(fc)[:, None]) / (0.5 * fbw[:, None])) ** 2)
    Y = (S * H * static + N * Hn) * channel
    y = istft(Y, n_fft, hop, window, n)
    return _room_level_noise(y, session, sr, rng)


def _pitch_track(speaker, language, session, tone, n, hop, sr, rng):
    """F0 (Hz) per sample: phrase contour + syllable targets + declination + vibrato."""
    n_frames = len(tone)
    # pitch contour (semitones around the speaker mean)
    dur_s = n / sr
    knots = rng.standard_normal(max(int(dur_s / 0.5), 1) + 2)
    phrase = np.interp(np.linspace(0, len(knots) - 1, n_frames), np.arange(len(knots)), knots)
    range_st = speaker.f0_range * session.pitch_movement
    st = range_st * (0.5 * phrase + tone)
    st += session.pitch_shift_st - language.declination * (
        np.arange(n_frames) * hop / sr - dur_s / 2
    )
    st = smooth(st, 5)
    t = np.arange(n) / sr
    st_s = np.interp(t, np.arange(n_frames) * hop / sr, st)
    vib_depth = speaker.vibrato_depth * session.vibrato_scale
    st_s += vib_depth * np.sin(2 * np.pi * speaker.vibrato_rate * t + rng.uniform(0, 2 * np.pi))
    return np.clip(speaker.f0_mean * 2.0 ** (st_s / 12.0), 50.0, 700.0)


def _vocal_tract(speaker, formants, freqs, sr):
    """Magnitude of the five-formant vocal tract per frame, (frames, freqs)."""
    offs = np.asarray(speaker.formant_offsets)
    fmt = formants * speaker.vtl_scale * offs
    fmt = np.minimum(fmt, 0.47 * sr)
    bws = np.broadcast_to(BASE_BANDWIDTHS * speaker.bandwidth_scale, fmt.shape)
    return 1.0 / np.sqrt(np.maximum(np.prod(resonance_power_den(freqs, fmt, bws, sr), axis=1), 1e-18))


def _static_shape(speaker, session, freqs):
    """Speaker tilt + vocal effort, fixed speaker resonance and timbre curve."""
    octaves = np.log2(np.maximum(freqs, 500.0) / 500.0)
    static = 10.0 ** ((speaker.tilt_db + session.effort_tilt_db) * octaves / 20.0)
    er = speaker.extra_resonance_db * np.exp(
        -0.5 * ((freqs - speaker.extra_resonance_hz) / 350.0) ** 2
    )
    if speaker.timbre_db:
        er = er + np.interp(
            np.log(np.maximum(freqs, 1.0)), np.log(TIMBRE_ANCHORS_HZ), speaker.timbre_db
        )
    return static * 10.0 ** (er / 20.0)


def _room_level_noise(y, session, sr, rng):
    """Reverberation, speech level, noise at the session SNR, limiter; float32."""
    n = len(y)
    ir = impulse_response(session, sr)
    if ir is not None:
        y = fftconvolve(y, ir)[:n]
    # speech level: RMS normalisation (a loudness-like level, independent of
    # which phonemes happen to peak), then noise at the session SNR
    level_db = session.gain_db - 14.0 + rng.normal(0.0, 0.5)
    y *= 10.0 ** (level_db / 20.0) / math.sqrt(np.mean(y**2) + 1e-12)
    if session.snr_db < 100:
        snr = session.snr_db + rng.normal(0.0, 1.5)
        nz = channel_noise(session.noise_kind, session.noise_color, n, rng, sr)
        nz *= 10.0 ** ((level_db - snr) / 20.0) / math.sqrt(np.mean(nz**2) + 1e-12)
        y = y + nz
    peak = np.abs(y).max()
    if peak > 0.98:  # limiter: rare with the default levels
        y *= 0.98 / peak
    return np.clip(y, -0.999, 0.999).astype(np.float32)
