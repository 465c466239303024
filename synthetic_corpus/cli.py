"""Command line of the generator: ``python -m synthetic_corpus --output DIR``.

Authors
 * sb-angcl contributors 2025
"""

import argparse
import logging
import sys

from synthetic_corpus.corpus import LAYOUTS, generate_corpus
from synthetic_corpus.sessions import DEFAULT_SESSION_STRENGTH


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
    """Command-line entry point: ``python -m synthetic_corpus --output DIR``.

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
    parser = build_parser()
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
            replace_stale=args.replace_stale,
        )
    except (ValueError, FileExistsError) as err:
        parser.exit(2, f"error: {err}\n")
    print(format_summary(summary))
    return summary


def build_parser():
    """The argument parser of :func:`main` (option names and defaults).

    Returns
    -------
    argparse.ArgumentParser

    Example
    -------
    >>> build_parser().parse_args(["--output", "x"]).speakers
    40
    """
    parser = argparse.ArgumentParser(
        prog="python -m synthetic_corpus",
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
    parser.add_argument(
        "--replace-stale",
        action="store_true",
        help="reuse a complete corpus made with the same arguments, replace anything else "
        "in --output (make demo's folders)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
