"""The corpus generator: arguments, reuse of a finished corpus, synthesis, writing.

Authors
 * sb-angcl contributors 2025
"""

import csv
import json
import logging
import os
import shutil
import time

import numpy as np
from tqdm import tqdm

from synthetic_corpus import layouts
from synthetic_corpus.languages import language_names
from synthetic_corpus.plan import default_test_speakers, plan_corpus
from synthetic_corpus.sessions import DEFAULT_SESSION_STRENGTH
from synthetic_corpus.synthesis import SAMPLE_RATE, synthesize_utterance

logger = logging.getLogger(__name__)

#: Accepted values of ``layout``.
LAYOUTS = ("voxceleb", "cnceleb", "both")

#: Version of the signal model; part of the reuse check of an existing corpus.
CORPUS_VERSION = 2


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


def _check_output(output, config, overwrite, replace_stale=False):
    """Decide whether ``output`` holds a reusable corpus; clear it if asked.

    Returns True to reuse. A corpus made by this generator with the same
    arguments but with files missing is regenerated without asking; with
    ``replace_stale`` anything else in the way (another corpus, an unfinished
    run) is replaced too, so only ``overwrite`` forces a regeneration.
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
    if not overwrite and not replace_stale:
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
    replace_stale=False,
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
    replace_stale : bool
        Reuse a complete corpus made with the same arguments and replace
        anything else in ``output`` (another corpus, an unfinished run)
        instead of raising ``FileExistsError``: for a folder that belongs to
        one caller, such as ``make demo``'s.

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
    args = dict(locals())  # the arguments as given, before anything else is defined
    for name in ("output", "overwrite", "progress", "replace_stale"):
        del args[name]
    config = _check_args(**args)
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    if _check_output(output, config, overwrite, replace_stale):
        with open(os.path.join(output, _MARKER), encoding="utf-8") as f:
            summary = json.load(f)["summary"]
        logger.info(
            "Synthetic corpus in %s is complete and matches the arguments: reusing it",
            output,
        )
        summary["reused"] = True
        return summary

    t_start = time.time()
    plan = plan_corpus(
        num_speakers,
        num_utterances,
        num_sessions,
        num_languages,
        duration_min,
        duration_max,
        short_fraction,
        seed,
        config["test_speakers"],
        session_strength=float(session_strength),
        speakers_per_session=int(speakers_per_session),
        confusable_pairs=int(confusable_pairs),
        label_noise=float(label_noise),
    )
    enrol = layouts.assign_paths(plan)
    enrol_audio, total_s = _synthesise(plan, output, layout, enrol, progress)
    result = _summary(plan, output, layout, num_languages, total_s)
    rows = []
    if layout in ("voxceleb", "both"):
        result["voxceleb"], vox_rows = layouts.write_voxceleb(
            plan, output, seed, trials_per_utterance, label_noise > 0
        )
        rows += vox_rows
    if layout in ("cnceleb", "both"):
        result["cnceleb"], cn_rows = layouts.write_cnceleb(
            plan, output, enrol, enrol_audio, label_noise > 0
        )
        rows += cn_rows
    layouts.write_utterances_csv(result["utterances_csv"], rows)
    layouts.write_speakers_csv(result["speakers_csv"], plan)
    result["wall_time_s"] = round(time.time() - t_start, 2)
    with open(os.path.join(output, _MARKER), "w", encoding="utf-8") as f:
        json.dump(
            {"config": config, "complete": True, "summary": result},
            f,
            indent=2,
            sort_keys=True,
        )
    return result


def _summary(plan, output, layout, num_languages, total_s):
    """The layout-independent part of :func:`generate_corpus`'s summary."""
    return {
        "root": output,
        "layout": layout,
        "num_speakers": len(plan.speakers),
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


def _check_args(**args):
    """Validate :func:`generate_corpus`'s arguments; return the stored configuration."""
    num_sessions, num_utterances = args["num_sessions"], args["num_utterances"]
    duration_min, duration_max = args["duration_min"], args["duration_max"]
    if args["layout"] not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {args['layout']!r}")
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
    if not 0.0 <= args["short_fraction"] <= 1.0:
        raise ValueError(f"short_fraction must be in [0, 1], got {args['short_fraction']}")
    num_speakers = args["num_speakers"]
    n_test = args["test_speakers"]
    n_test = default_test_speakers(num_speakers) if n_test is None else int(n_test)
    if n_test < 2 or n_test > num_speakers - 1:
        raise ValueError(
            f"test_speakers must be between 2 and num_speakers - 1 = {num_speakers - 1}, got {n_test} "
            "(use more --speakers or fewer --test-speakers)"
        )
    _check_nuisance_args(
        num_speakers - n_test,
        args["session_strength"],
        args["speakers_per_session"],
        args["confusable_pairs"],
        args["label_noise"],
    )
    config = {"layout": args["layout"]}
    for name in ("num_speakers", "num_utterances", "num_sessions", "num_languages"):
        config[name] = int(args[name])
    for name in ("duration_min", "duration_max", "short_fraction"):
        config[name] = float(args[name])
    config["seed"] = int(args["seed"])
    config["test_speakers"] = n_test
    config["trials_per_utterance"] = int(args["trials_per_utterance"])
    config["session_strength"] = float(args["session_strength"])
    config["speakers_per_session"] = int(args["speakers_per_session"])
    config["confusable_pairs"] = int(args["confusable_pairs"])
    config["label_noise"] = float(args["label_noise"])
    config["sample_rate"] = SAMPLE_RATE
    config["version"] = CORPUS_VERSION
    return config


def _synthesise(plan, output, layout, enrol, progress):
    """Synthesise and write every utterance in the chosen layouts.

    Returns the int16 audio of the CN-Celeb enrolment parts (keyed by
    ``id(utt)``; they are joined into the enrolment files) and the total
    duration in seconds.
    """
    do_vox = layout in ("voxceleb", "both")
    do_cn = layout in ("cnceleb", "both")
    enrol_ids = {id(u) for parts in enrol.values() for u in parts}
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
            layouts.write_audio(os.path.join(output, "VoxCeleb1", "wav", u.vox_rel), pcm, "WAV")
        if do_cn:
            layouts.write_audio(os.path.join(output, u.cn_rel), pcm, "FLAC")
            if id(u) in enrol_ids:
                audio_store[id(u)] = pcm
    bar.close()
    return audio_store, total_s
