"""Data preparation for CN-Celeb speaker verification (sb-angcl recipe).

Expected layout (the OpenSLR 82 release, flac audio; the lists say ``.wav``
and are mapped to the ``.flac`` files, or to ``.wav`` files if converted in
place)::

    <root>/CN-Celeb_flac/data/<spk idXXXXX>/<genre>-<ss>-<uuu>.flac
    <root>/CN-Celeb_flac/dev/dev.lst             CN-Celeb1 training speakers
    <root>/CN-Celeb_flac/eval/enroll/<spk>-enroll.flac
    <root>/CN-Celeb_flac/eval/test/<spk>-<genre>-<ss>-<uuu>.flac
    <root>/CN-Celeb_flac/eval/lists/enroll.lst   id00800-enroll enroll/id00800-enroll.wav
    <root>/CN-Celeb_flac/eval/lists/enroll.map   id00800-enroll id00800/singing-01-002.wav ...
    <root>/CN-Celeb_flac/eval/lists/test.lst     test/id00800-singing-01-001.wav (optional)
    <root>/CN-Celeb_flac/eval/lists/trials.lst   id00800-enroll test/id00801-vlog-01-003.wav 0
    <root>/CN-Celeb2_flac/data/<spk>/<genre>-<ss>-<uuu>.flac
    <root>/CN-Celeb2_flac/spk.lst
    <root>/CN-Celeb{,2}_flac/meta/label_noise.csv   optional (built-in corpus):
                              path,given_speaker,true_speaker; path like the IDs

``data_folder`` is the folder holding ``CN-Celeb_flac`` (and
``CN-Celeb2_flac``); a list or comma-separated string of folders is searched
in order, and a folder that *is* ``CN-Celeb_flac`` is accepted too.

Outputs in ``save_folder`` (columns in :mod:`sb_angcl.data.manifests`):

* ``train.csv``, ``dev.csv``: CN-Celeb1 speakers of ``dev/dev.lst`` and/or
  every CN-Celeb2 speaker (``train_sets``), minus any speaker of the
  evaluation lists. IDs follow the lists' convention, ``id00012/<stem>.wav``
  relative to ``data/``; ``genre`` and ``session`` (``<genre>-<ss>``) come
  from the file name; ``true_spk_id`` / ``label_noise`` from the subset's
  ``meta/label_noise.csv`` when present (``spk_id`` / 0 otherwise).
* ``enrol.csv``: the official concatenated enrolment files used by the
  trials (ID ``id00800-enroll``; genre and session = those of its
  ``enroll.map`` utterances, joined by ``+`` if several).
* ``enrol_average.csv``: every ``enroll.map`` utterance of those models, with
  its ``model`` (the "average of embeddings" protocol).
* ``test.csv``: test files of the trials (ID ``test/id00800-singing-01-001.wav``,
  session ``singing-01``).
* ``trials.csv``: ``enrol,test,label,enrol_genre,test_genre`` in list order.
* ``concatenated/``: audio written by ``short_utterance_rule="concat"``.

Short training utterances (CN-Celeb has many) follow
``short_utterance_rule``, applied before the ``min_duration`` rule of
:mod:`sb_angcl.data.manifests`:

* ``"concat"`` (default): within one speaker *and* genre, files sorted by
  name, an utterance shorter than ``concat_min_duration`` is joined with the
  following ones until the run reaches ``concat_min_duration``
  (``cnceleb_short_utterances.group_consecutive``; a run still short at the end
  joins the previous item); files of a label-noise list are joined only with
  files of the same true speaker. A run's ``session`` lists its sessions
  joined by ``+``. Each run is written as one 16-bit wav under
  ``save_folder/concatenated/<set>/<spk>/``; its ID lists its sources, e.g.
  ``id00012/singing-01-001+singing-01-002+singing-01-003.wav``. Utterances
  long enough on their own stay as they are.
* ``"drop"``: utterances shorter than ``concat_min_duration`` are left out.
* ``"keep"``: nothing is done.

Authors
 * sb-angcl contributors 2025
"""

import functools
import logging
import os
from collections import OrderedDict
from pathlib import Path

from cnceleb_short_utterances import SHORT_RULES, apply_short_rule

from sb_angcl.data import audio_probe, manifests, preparation

logger = logging.getLogger(__name__)

OUTPUTS = [
    "train.csv",
    "dev.csv",
    "enrol.csv",
    "enrol_average.csv",
    "test.csv",
    "trials.csv",
]

#: CN-Celeb's 11 genres, in the order of the official list (file names start
#: with one of them; the built-in corpus writes the same ones).
GENRES = (
    "advertisement",
    "drama",
    "entertainment",
    "interview",
    "live_broadcast",
    "movie",
    "play",
    "recitation",
    "singing",
    "speech",
    "vlog",
)

#: Columns of ``enrol_average.csv`` (CN-Celeb "average of embeddings").
ENROL_AVERAGE_FIELDS = [
    "ID",
    "duration",
    "wav",
    "start",
    "stop",
    "spk_id",
    "model",
    "genre",
    "language",
    "session",
    "sample_rate",
]

TRAIN_SETS = ("cnceleb1", "cnceleb2")
AUDIO_EXTENSIONS = (".flac", ".wav")

LAYOUT = """\
  <root>/CN-Celeb_flac/data/<spk>/<genre>-<ss>-<uuu>.flac
  <root>/CN-Celeb_flac/dev/dev.lst
  <root>/CN-Celeb_flac/eval/enroll/<spk>-enroll.flac
  <root>/CN-Celeb_flac/eval/test/<spk>-<genre>-<ss>-<uuu>.flac
  <root>/CN-Celeb_flac/eval/lists/{enroll.lst,enroll.map,trials.lst[,test.lst]}
  <root>/CN-Celeb2_flac/data/<spk>/<genre>-<ss>-<uuu>.flac   (train_sets cnceleb2)
  <root>/CN-Celeb2_flac/spk.lst
data_folder is <root> (a list or comma-separated string of roots is searched
in order)."""


def prepare_cnceleb(
    data_folder,
    save_folder,
    train_sets=("cnceleb1", "cnceleb2"),
    dev_fraction=0.05,
    min_duration=0.5,
    short_utterance_rule="concat",
    concat_min_duration=2.0,
    sample_rate=16000,
    on_wrong_sample_rate="resample",
    strict=False,
    seed=1234,
    skip_prep=False,
):
    """Writes the CN-Celeb manifests: train, dev, enrol(_average), test, trials.

    Arguments
    ---------
    data_folder : str, Path or list
        Folder(s) holding ``CN-Celeb_flac`` and ``CN-Celeb2_flac``.
    save_folder : str or Path
        Where the CSV files, the summary and concatenated audio go.
    train_sets : tuple of str
        ``"cnceleb1"`` (speakers of ``dev/dev.lst``) and/or ``"cnceleb2"``.
    dev_fraction : float
        Fraction of each training speaker's utterances held out for
        validation (speakers with >= 3 utterances give at least one).
    min_duration : float
        Training utterances shorter than this (seconds, after the short
        utterance rule) are dropped.
    short_utterance_rule : str
        ``"concat"``, ``"drop"`` or ``"keep"`` (see the module docstring).
    concat_min_duration : float
        Duration (seconds) the short utterance rule aims for.
    sample_rate : int
        Expected sampling rate (also the rate of concatenated audio).
    on_wrong_sample_rate : str
        ``"resample"`` (keep; the loader resamples), ``"skip"`` or ``"error"``.
    strict : bool
        Raise on unreadable or empty audio (or missing speaker folders)
        instead of skipping with a warning.
    seed : int
        Seed of the validation split.
    skip_prep : bool
        Do nothing (return the stored summary, if any).

    Returns
    -------
    dict
        The summary also written to ``prepare_summary.json``.

    Raises
    ------
    FileNotFoundError
        A folder or list of the layout is missing.
    ValueError
        Duplicate IDs, lists naming missing or unusable files, a bad option,
        or (``strict``) unreadable audio.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> cn = Path(tempfile.mkdtemp()) / "CN-Celeb_flac"
    >>> def put(rel, seconds=1.0):
    ...     os.makedirs((cn / rel).parent, exist_ok=True)
    ...     soundfile.write(str(cn / rel), numpy.zeros(int(16000 * seconds)), 16000)
    >>> for i in range(3):
    ...     put(f"data/id00000/speech-01-00{i}.flac")
    ...     put(f"data/id00800/vlog-01-00{i}.flac")
    >>> put("eval/enroll/id00800-enroll.flac", 3.0)
    >>> put("eval/test/id00800-vlog-02-001.flac")
    >>> os.makedirs(cn / "dev"); os.makedirs(cn / "eval/lists")
    >>> _ = (cn / "dev/dev.lst").write_text("id00000\\n")
    >>> lists = {"enroll.lst": "id00800-enroll enroll/id00800-enroll.wav",
    ...          "enroll.map": "id00800-enroll id00800/vlog-01-000.wav",
    ...          "trials.lst": "id00800-enroll test/id00800-vlog-02-001.wav 1"}
    >>> for name, text in lists.items():
    ...     _ = (cn / "eval/lists" / name).write_text(text + "\\n")
    >>> summary = prepare_cnceleb(cn.parent, cn.parent / "save",
    ...                           train_sets=("cnceleb1",))
    >>> summary["splits"]["train"]["speakers"], summary["trials"]["total"]
    (1, 1)
    """
    args = {
        "dev_fraction": dev_fraction,
        "min_duration": min_duration,
        "short_utterance_rule": short_utterance_rule,
        "concat_min_duration": concat_min_duration,
        "sample_rate": sample_rate,
        "on_wrong_sample_rate": on_wrong_sample_rate,
        "strict": strict,
        "seed": seed,
    }
    setup = functools.partial(_setup, data_folder, save_folder, train_sets, args)
    return preparation.run_preparation("CN-Celeb", save_folder, OUTPUTS, setup, _build, skip_prep, strict)


def _setup(data_folder, save_folder, train_sets, args):
    """Checks the options, finds the folders and lists; returns (opts, context)."""
    preparation.check_options(
        args["on_wrong_sample_rate"], args["dev_fraction"], args["min_duration"], args["sample_rate"]
    )
    train_sets = _check_train_sets(train_sets)
    if args["short_utterance_rule"] not in SHORT_RULES:
        raise ValueError(
            f"short_utterance_rule={args['short_utterance_rule']!r} is not one of "
            f"{SHORT_RULES}."
        )
    if args["concat_min_duration"] <= 0:
        raise ValueError(f"concat_min_duration={args['concat_min_duration']} must be positive.")
    roots = preparation.parse_data_folders(data_folder)
    save_folder = Path(save_folder)
    cn1 = _find(roots, "CN-Celeb_flac")
    for rel, what in [
        ("data", "CN-Celeb1 data/ folder"),
        ("eval/enroll", "CN-Celeb1 eval/enroll/ folder"),
        ("eval/test", "CN-Celeb1 eval/test/ folder"),
        ("eval/lists", "CN-Celeb1 eval/lists/ folder"),
        ("eval/lists/enroll.lst", "CN-Celeb1 enroll.lst"),
        ("eval/lists/enroll.map", "CN-Celeb1 enroll.map"),
        ("eval/lists/trials.lst", "CN-Celeb1 trials.lst"),
    ]:
        preparation.require_path(cn1 / rel, what, LAYOUT)
    speaker_lists = _speaker_lists(roots, cn1, train_sets)
    lists = cn1 / "eval" / "lists"
    list_files = [lists / n for n in ("enroll.lst", "enroll.map", "trials.lst")]
    list_files += [lst for _, lst in speaker_lists.values()]
    noise_files = [base / "meta" / "label_noise.csv" for base, _ in speaker_lists.values()]
    opts = {
        "data_folder": [str(r) for r in roots],
        "save_folder": str(save_folder.resolve()),
        "train_sets": list(train_sets),
        "lists_sha256": {str(p): preparation.file_digest(p) for p in list_files},
        "label_noise_sha256": {
            str(p): preparation.file_digest(p) for p in noise_files if p.is_file()
        },
        **args,
    }
    context = {
        "roots": roots,
        "save_folder": save_folder,
        "train_sets": train_sets,
        "cn1": cn1,
        "speaker_lists": speaker_lists,
        "noise_files": noise_files,
        **args,
    }
    return opts, context


def _speaker_lists(roots, cn1, train_sets):
    """Subset -> (its folder, its speaker list) for the chosen training sets."""
    speaker_lists = OrderedDict()
    if "cnceleb1" in train_sets:
        speaker_lists["cnceleb1"] = (
            cn1,
            preparation.require_path(cn1 / "dev" / "dev.lst", "CN-Celeb1 dev/dev.lst", LAYOUT),
        )
    if "cnceleb2" in train_sets:
        cn2 = _find(roots, "CN-Celeb2_flac")
        preparation.require_path(cn2 / "data", "CN-Celeb2 data/ folder", LAYOUT)
        speaker_lists["cnceleb2"] = (
            cn2,
            preparation.require_path(cn2 / "spk.lst", "CN-Celeb2 spk.lst", LAYOUT),
        )
    return speaker_lists


def _read_eval_lists(cn1):
    """Models, their utterances, the trials and the files they use; checks they exist."""
    lists = cn1 / "eval" / "lists"
    models = _read_table(lists / "enroll.lst", 2, 2)
    model_utts = _read_table(lists / "enroll.map", 2, None)
    trials = [
        (f[0], f[1], preparation.parse_trial_label(f[2], lists / "trials.lst", n))
        for n, f in _read_lines(lists / "trials.lst", 3, 3)
    ]
    if not trials:
        raise ValueError(f"{lists / 'trials.lst'} holds no trials.")
    used_models = list(OrderedDict.fromkeys(m for m, _, _ in trials))
    used_tests = list(OrderedDict.fromkeys(t for _, t, _ in trials))
    _check_test_lst(lists / "test.lst", used_tests)
    eval_paths, problems = _resolve_eval(cn1, models, model_utts, used_models, used_tests)
    if problems:
        raise preparation.missing_items_error(lists / "trials.lst", problems)
    return model_utts, trials, used_models, used_tests, eval_paths


def _build(ctx, report):
    """Reads the lists, scans, probes, filters; returns the manifests and the summary."""
    sample_rate, save_folder = ctx["sample_rate"], ctx["save_folder"]
    trial_list = ctx["cn1"] / "eval" / "lists" / "trials.lst"
    # Evaluation lists; check the files exist before scanning training data.
    model_utts, trials, used_models, used_tests, eval_paths = _read_eval_lists(ctx["cn1"])
    eval_speakers = {_model_speaker(m) for m in used_models}
    eval_speakers |= {_test_speaker(t) for t in used_tests}
    candidates = _list_training(ctx["speaker_lists"], eval_speakers, report)
    manifests.check_unique_ids(
        [{"ID": c["ID"], "wav": c["path"]} for c in candidates], "train.csv"
    )
    to_probe = [c["path"] for c in candidates] + [str(p) for p in eval_paths.values()]
    usable, info_by_path = audio_probe.probe_usable(
        list(OrderedDict.fromkeys(to_probe)),
        "Probing CN-Celeb audio",
        report,
        sample_rate,
        ctx["on_wrong_sample_rate"],
    )
    rows = _training_rows(candidates, usable, ctx["noise_files"])
    rows = apply_short_rule(
        rows,
        ctx["short_utterance_rule"],
        ctx["concat_min_duration"],
        sample_rate,
        save_folder / "concatenated",
        report,
    )
    preparation.announce_audio_problems(
        report, sample_rate, "Re-download or re-extract them, or delete them."
    )
    rows = manifests.drop_short(rows, ctx["min_duration"], report)
    train, dev = manifests.split_dev(rows, ctx["dev_fraction"], ctx["seed"])
    problems = audio_probe.unusable_items(
        ((key[1], path) for key, path in eval_paths.items()), usable, info_by_path
    )
    if problems:
        raise preparation.missing_items_error(trial_list, problems)
    enrol, enrol_average, test, trial_rows = _evaluation_manifests(
        model_utts, trials, used_models, used_tests, lambda k, n: usable[str(eval_paths[(k, n)])]
    )
    _warn_unknown_genres(rows + test + enrol_average)
    tables = [
        ("train.csv", train, manifests.TRAIN_FIELDS),
        ("dev.csv", dev, manifests.TRAIN_FIELDS),
        ("enrol.csv", enrol, manifests.ITEM_FIELDS),
        ("enrol_average.csv", enrol_average, ENROL_AVERAGE_FIELDS),
        ("test.csv", test, manifests.ITEM_FIELDS),
        ("trials.csv", trial_rows, ["enrol", "test", "label", "enrol_genre", "test_genre"]),
    ]
    summary = {
        "corpus": "CN-Celeb",
        "data_folder": [str(r) for r in ctx["roots"]],
        "train_sets": list(ctx["train_sets"]),
        "short_utterance_rule": ctx["short_utterance_rule"],
        "splits": {
            "train": preparation.split_stats(train),
            "dev": preparation.split_stats(dev),
            "enrol": preparation.split_stats(enrol),
            "enrol_average": preparation.split_stats(enrol_average),
            "test": preparation.split_stats(test),
        },
        "trials": preparation.trial_stats([t[2] for t in trials]),
        "label_noise": sum(r["label_noise"] for r in train + dev),
        "genres": {
            "train": sorted({r["genre"] for r in train}),
            "test": sorted({r["genre"] for r in test}),
        },
    }
    return tables, summary


def _training_rows(candidates, usable, noise_files):
    """Rows of the usable training candidates, marked with the label-noise lists."""
    rows = []
    for c in candidates:
        if c["path"] in usable:
            row = manifests.audio_row(
                c["ID"],
                usable[c["path"]],
                c["spk"],
                genre=_genre(c["ID"]),
                session=_session(c["ID"]),
            )
            row["_set"] = c["set"]
            rows.append(row)
    noise = {}
    for path in noise_files:
        noise.update(manifests.read_label_noise(path) or {})
    manifests.mark_label_noise(rows, noise)
    return rows


def _evaluation_manifests(model_utts, trials, used_models, used_tests, info_of):
    """Rows of enrol.csv, enrol_average.csv, test.csv and trials.csv."""
    model_genres = {
        m: "+".join(sorted({_genre(u) for u in model_utts[m]})) for m in used_models
    }
    enrol = [
        manifests.audio_row(
            m,
            info_of("enrol", m),
            _model_speaker(m),
            genre=model_genres[m],
            session="+".join(sorted({_session(u) for u in model_utts[m]})),
        )
        for m in used_models
    ]
    enrol_average = []
    for m in used_models:
        for utt in model_utts[m]:
            row = manifests.audio_row(
                utt,
                info_of("map", utt),
                utt.split("/")[0],
                genre=_genre(utt),
                session=_session(utt),
            )
            row["model"] = m
            enrol_average.append(row)
    manifests.check_unique_ids(enrol_average, "enrol_average.csv")
    test = [
        manifests.audio_row(
            t,
            info_of("test", t),
            _test_speaker(t),
            genre=_test_genre(t),
            session=_test_session(t),
        )
        for t in used_tests
    ]
    trial_rows = [
        {
            "enrol": m,
            "test": t,
            "label": label,
            "enrol_genre": model_genres[m],
            "test_genre": _test_genre(t),
        }
        for m, t, label in trials
    ]
    return enrol, enrol_average, test, trial_rows


def _check_train_sets(train_sets):
    if isinstance(train_sets, str):
        train_sets = [s.strip() for s in train_sets.split(",")]
    train_sets = tuple(s for s in train_sets if s)
    bad = [s for s in train_sets if s not in TRAIN_SETS]
    if bad or not train_sets:
        raise ValueError(
            f"train_sets={train_sets!r}: choose one or both of {TRAIN_SETS}."
        )
    return tuple(s for s in TRAIN_SETS if s in train_sets)


def _find(roots, name):
    """The ``name`` folder in the first root that holds it."""
    for root in roots:
        if root.name == name and root.is_dir():
            return root
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(str(root / name) for root in roots)
    raise FileNotFoundError(
        f"{name} folder not found (looked for {tried}).\nExpected layout:\n{LAYOUT}"
    )


def _read_lines(path, min_fields, max_fields):
    """``(line number, fields)`` of the non-empty lines of a list file."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields or (
                max_fields is not None and len(fields) > max_fields
            ):
                raise ValueError(
                    f"{path}, line {line_no}: expected "
                    f"{min_fields if max_fields == min_fields else f'at least {min_fields}'} "
                    f"fields, got {line.strip()!r}.\nExpected layout:\n{LAYOUT}"
                )
            yield line_no, fields


def _read_table(path, min_fields, max_fields):
    """``first field -> rest`` (a string if one more field, else a list)."""
    table = OrderedDict()
    for line_no, fields in _read_lines(path, min_fields, max_fields):
        if fields[0] in table:
            raise ValueError(f"{path}, line {line_no}: {fields[0]} repeated.")
        table[fields[0]] = fields[1] if max_fields == 2 else fields[1:]
    return table


def _check_test_lst(path, used_tests):
    if not path.is_file():
        return
    listed = {f[0] for _, f in _read_lines(path, 1, None)}
    unlisted = [t for t in used_tests if t not in listed]
    if unlisted:
        logger.warning(
            "%d test item(s) of trials.lst are not in %s:\n%s",
            len(unlisted),
            path,
            manifests.format_file_list(unlisted),
        )


def _resolve_eval(cn1, models, model_utts, used_models, used_tests):
    """Maps (kind, name) to the audio file; lists what cannot be found."""
    paths = OrderedDict()
    problems = []

    def resolve(kind, name, base, rel):
        """Record the audio file of one list entry, or the problem of a missing one."""
        path = preparation.resolve_audio(base, rel, AUDIO_EXTENSIONS)
        if path is None:
            stem = os.path.splitext(rel)[0]
            problems.append(f"{name} (missing: {base / stem}.flac or .wav)")
        else:
            paths[(kind, name)] = path

    for m in used_models:
        if m not in models:
            problems.append(f"{m} (not in enroll.lst)")
        else:
            resolve("enrol", m, cn1 / "eval", models[m])
        if m not in model_utts:
            problems.append(f"{m} (not in enroll.map)")
        else:
            for utt in model_utts[m]:
                resolve("map", utt, cn1 / "data", utt)
    for t in used_tests:
        resolve("test", t, cn1 / "eval", t)
    return paths, problems


def _list_training(speaker_lists, eval_speakers, report):
    """Training files of the chosen sets, sorted, as candidate dicts."""
    candidates = []
    seen = {}
    excluded = set()
    for subset, (base, spk_list) in speaker_lists.items():
        speakers = [f[0] for _, f in _read_lines(spk_list, 1, 1)]
        for spk in speakers:
            if spk in eval_speakers:
                excluded.add(spk)
                continue
            folder = base / "data" / spk
            if not folder.is_dir():
                report.skip("missing_speaker_folder", folder, f"listed in {spk_list}")
                continue
            if spk in seen and seen[spk] != subset:
                logger.warning(
                    "Speaker %s occurs in both %s and %s; its utterances are "
                    "merged into one training class.",
                    spk,
                    seen[spk],
                    subset,
                )
            seen[spk] = subset
            with os.scandir(folder) as it:
                names = sorted(
                    e.name
                    for e in it
                    if e.name.lower().endswith(AUDIO_EXTENSIONS) and e.is_file()
                )
            for name in names:
                stem = os.path.splitext(name)[0]
                candidates.append(
                    {
                        "ID": f"{spk}/{stem}.wav",
                        "path": str(folder / name),
                        "spk": spk,
                        "set": subset,
                    }
                )
    if excluded:
        logger.warning(
            "%d speaker(s) of the training lists also occur in the evaluation "
            "lists and are left out of training: %s",
            len(excluded),
            ", ".join(sorted(excluded)[:10]),
        )
        report.note("eval_speakers_excluded_from_training", len(excluded))
    report.announce(
        "missing_speaker_folder",
        "speaker folder(s) named in a speaker list but missing",
        "Check that the download and extraction are complete.",
    )
    return candidates


def _genre(rel):
    """Genre of ``<spk>/<genre>-<ss>-<uuu>.wav``."""
    return rel.rsplit("/", 1)[-1].split("-")[0]


def _session(rel):
    """Session ``<genre>-<ss>`` of ``<spk>/<genre>-<ss>-<uuu>.wav``."""
    stem = os.path.splitext(rel.rsplit("/", 1)[-1])[0]
    return stem.rsplit("-", 1)[0] if "-" in stem else stem


def _test_session(rel):
    """Session ``<genre>-<ss>`` of ``test/<spk>-<genre>-<ss>-<uuu>.wav``."""
    parts = os.path.splitext(rel.rsplit("/", 1)[-1])[0].split("-")
    return "-".join(parts[1:-1]) if len(parts) > 2 else ""


def _test_speaker(rel):
    """Speaker of ``test/<spk>-<genre>-<ss>-<uuu>.wav``."""
    return rel.rsplit("/", 1)[-1].split("-")[0]


def _test_genre(rel):
    """Genre of ``test/<spk>-<genre>-<ss>-<uuu>.wav``."""
    parts = os.path.splitext(rel.rsplit("/", 1)[-1])[0].split("-")
    return parts[1] if len(parts) > 1 else ""


def _model_speaker(model):
    """Speaker of an enrolment model id ``<spk>-enroll``."""
    return (
        model[: -len("-enroll")] if model.endswith("-enroll") else model.split("-")[0]
    )


def _warn_unknown_genres(rows):
    unknown = sorted({r["genre"] for r in rows} - set(GENRES) - {""})
    unknown = [g for g in unknown if not set(g.split("+")) <= set(GENRES)]
    if unknown:
        logger.warning(
            "Genre(s) not among the CN-Celeb genres %s: %s (taken from file "
            "names; check the layout).",
            GENRES,
            ", ".join(unknown[:10]),
        )
