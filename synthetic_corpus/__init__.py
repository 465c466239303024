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

    python -m synthetic_corpus --output DIR [--layout voxceleb|cnceleb|both]
        [--session-strength 1.0] [--speakers-per-session 2]
        [--confusable-pairs N] [--label-noise FRACTION]

Modules
-------
==================  ==========================================================
``languages``       synthetic languages (phoneme inventories, intonation)
``voices``          speakers: voice parameters, drawing, confusable copies
``sessions``        recording sessions: genres, channel EQ, noise, room
``dsp``             smoothing, STFT, resonators
``synthesis``       one utterance: articulation, source, vocal tract, channel
``plan``            the corpus plan: subsets, shared recordings, utterances
``layouts``         VoxCeleb1 / CN-Celeb file names, lists and metadata files
``corpus``          :func:`generate_corpus`: checks, reuse, synthesis, writing
``cli``             the command line (``python -m synthetic_corpus``)
==================  ==========================================================

The generator depends on no other part of ``sb_angcl``: it exercises the data
preparation and the recipes, so it must not share their code.

Author: sb-angcl contributors.
"""

from synthetic_corpus.cli import format_summary, main
from synthetic_corpus.corpus import CORPUS_VERSION, LAYOUTS, generate_corpus
from synthetic_corpus.languages import LanguageProfile, get_language, language_names
from synthetic_corpus.layouts import LABEL_NOISE_CSV, LABEL_NOISE_HEADER
from synthetic_corpus.sessions import (
    BANDLIMIT_POWER,
    CHANNEL_TILT_DB,
    CLEAN_SESSION,
    DEFAULT_SESSION_STRENGTH,
    GENRES,
    SNR_DROP_DB,
    SessionProfile,
    make_session,
)
from synthetic_corpus.synthesis import SAMPLE_RATE, synthesize_utterance
from synthetic_corpus.voices import (
    CONFUSABLE_SCALE,
    TIMBRE_ANCHORS_HZ,
    SpeakerProfile,
    confusable_speaker,
    make_speakers,
)

__all__ = [
    "BANDLIMIT_POWER",
    "CHANNEL_TILT_DB",
    "CLEAN_SESSION",
    "CONFUSABLE_SCALE",
    "CORPUS_VERSION",
    "DEFAULT_SESSION_STRENGTH",
    "GENRES",
    "LABEL_NOISE_CSV",
    "LABEL_NOISE_HEADER",
    "LAYOUTS",
    "SAMPLE_RATE",
    "SNR_DROP_DB",
    "TIMBRE_ANCHORS_HZ",
    "LanguageProfile",
    "SessionProfile",
    "SpeakerProfile",
    "confusable_speaker",
    "format_summary",
    "generate_corpus",
    "get_language",
    "language_names",
    "main",
    "make_session",
    "make_speakers",
    "synthesize_utterance",
]

