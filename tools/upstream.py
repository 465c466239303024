#!/usr/bin/env python3
"""Lay the sb-angcl recipes into a SpeechBrain checkout, as a contribution.

Usage::

    python tools/upstream.py /path/to/speechbrain          # or: make upstream SPEECHBRAIN=DIR
    python tools/upstream.py /path/to/speechbrain --list   # what it would write, nothing written

Writes new files only, and appends to two of SpeechBrain's own
(``git status`` there shows additions and appended lines only):

* ``recipes/VoxCeleb/SpeakerRec/``: ``train_angcl.py``,
  ``angcl_voxceleb_prepare.py`` (our ``train.py`` and
  ``voxceleb_prepare.py``: SpeechBrain has a ``voxceleb_prepare.py`` there
  with another signature), the four ``hparams/*.yaml`` and
  ``extra_requirements.txt``; a section appended to its ``README.md``;
* ``recipes/CNCeleb/SpeakerRec/`` (new): the CN-Celeb recipe the same way
  (``cnceleb_prepare.py`` and ``cnceleb_short_utterances.py`` keep their
  names), its ``README.md`` and ``extra_requirements.txt``;
* ``tests/recipes/VoxCeleb.csv``: our rows appended; ``tests/recipes/CNCeleb.csv``
  (new).

Renamed scripts are rewritten on the way: the import of the renamed
preparation module and the name ``train.py`` in docstrings,
YAML headers and README commands. Nothing is written when any new file
already exists or the appended parts are already there (start from a clean
checkout).

Authors
 * sb-angcl contributors
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = os.path.join(ROOT, "tools", "upstream_files")

#: Our recipe files and their names in the SpeechBrain checkout, per recipe folder.
RENAMES = {
    "recipes/VoxCeleb/SpeakerRec": {
        "train.py": "train_angcl.py",
        "voxceleb_prepare.py": "angcl_voxceleb_prepare.py",
    },
    "recipes/CNCeleb/SpeakerRec": {
        "train.py": "train_angcl.py",
        "cnceleb_prepare.py": "cnceleb_prepare.py",
        "cnceleb_short_utterances.py": "cnceleb_short_utterances.py",
        "README.md": "README.md",
    },
}

#: The training YAMLs of both recipes (same names in the checkout). Scoring (``verify.py``
#: with ``hparams/verification.yaml``) is not laid in: SpeechBrain's consistency test would
#: need a row for the YAML whose keys the script names, and ``verify.py`` hands its YAML
#: whole to sb-angcl; upstream's own ``speaker_verification_cosine.py`` scores the exported
#: model (the model card gives the command).
HPARAMS = (
    "train_ecapa_angcl_small.yaml",
    "train_ecapa_angcl.yaml",
    "train_ecapa_aam.yaml",
    "finetune_ecapa_angcl_lm.yaml",
)

#: The line that opens the section appended to SpeechBrain's VoxCeleb README.
README_MARKER = "<!-- sb-angcl: AM-SupCon recipes -->"

#: What a SpeechBrain checkout has (checked before anything is written).
CHECKOUT_MARKERS = (
    "speechbrain/version.txt",
    "recipes/VoxCeleb/SpeakerRec/README.md",
    "tests/recipes/VoxCeleb.csv",
    "tests/samples/ASR",
    "tests/utils/recipe_tests.py",
)


class LayoutError(RuntimeError):
    """The checkout is not one to lay the recipes into (or already has them)."""


def rename_map(folder):
    """Old file name to new one, for the text rewriting of one recipe folder.

    Arguments
    ---------
    folder : str
        A key of :data:`RENAMES`.

    Returns
    -------
    dict
        Only the names that change.

    Example
    -------
    >>> sorted(rename_map("recipes/CNCeleb/SpeakerRec").items())
    [('train.py', 'train_angcl.py')]
    """
    return {old: new for old, new in RENAMES[folder].items() if old != new}


def rewrite(text, renames):
    """Rewrites script names and imports of renamed modules in a file's text.

    Arguments
    ---------
    text : str
        The file's contents.
    renames : dict
        Old file name to new (``{"train.py": "train_angcl.py", ...}``).

    Returns
    -------
    str
        The text with every ``train.py`` (a whole word, so not
        ``train_speaker_embeddings.py``) and every ``from voxceleb_prepare
        import`` renamed.

    Example
    -------
    >>> rewrite("python train.py x\\nfrom voxceleb_prepare import f\\nmy_train.py",
    ...         {"train.py": "train_angcl.py", "voxceleb_prepare.py": "angcl_voxceleb_prepare.py"})
    'python train_angcl.py x\\nfrom angcl_voxceleb_prepare import f\\nmy_train.py'
    """
    for old, new in renames.items():
        text = re.sub(r"(?<![\w.-])" + re.escape(old) + r"(?!\w)", new, text)
        if old.endswith(".py"):
            text = re.sub(
                r"^(\s*from\s+)" + re.escape(old[:-3]) + r"(\s+import\b)",
                r"\g<1>" + new[:-3] + r"\g<2>", text, flags=re.MULTILINE,
            )
    return text


def plan(checkout=None):
    """Everything the contribution writes, in order.

    Arguments
    ---------
    checkout : str or None
        The SpeechBrain checkout: our VoxCeleb rows are numbered after the
        rows its ``tests/recipes/VoxCeleb.csv`` already has (the fine-tuning
        row names the output folder of the row it starts from); ``None``
        numbers them as a file of their own.

    Returns
    -------
    list of tuple
        ``(path in the checkout, mode, text)`` with mode ``"new"`` (a file
        that must not exist yet) or ``"append"`` (added at the end of an
        existing file).

    Example
    -------
    >>> [p for p, mode, _ in plan() if mode == "append"]
    ['recipes/VoxCeleb/SpeakerRec/README.md', 'tests/recipes/VoxCeleb.csv']
    """
    items = []
    for folder, names in RENAMES.items():
        renames = rename_map(folder)
        for old, new in names.items():
            items.append((f"{folder}/{new}", "new", rewrite(_read(ROOT, folder, old), renames)))
        for name in HPARAMS:
            text = rewrite(_read(ROOT, folder, "hparams", name), renames)
            items.append((f"{folder}/hparams/{name}", "new", text))
        items.append((f"{folder}/extra_requirements.txt", "new", _read(FILES, "extra_requirements.txt")))
    section = _read(FILES, "VoxCeleb_README_section.md")
    items.append(("recipes/VoxCeleb/SpeakerRec/README.md", "append", f"\n{README_MARKER}\n{section}"))
    vox_rows = _rows_only(_read(FILES, "VoxCeleb.csv"))
    existing = os.path.join(checkout, "tests", "recipes", "VoxCeleb.csv") if checkout else None
    if existing and os.path.isfile(existing):
        vox_rows = renumber_rows(vox_rows, "VoxCeleb", _count_rows(existing))
    items.append(("tests/recipes/VoxCeleb.csv", "append", vox_rows))
    items.append(("tests/recipes/CNCeleb.csv", "new", _read(FILES, "CNCeleb.csv")))
    return items


def renumber_rows(rows, dataset, rows_before):
    """Shifts the ``tests/tmp/<dataset>_row_NN`` folders our rows name.

    SpeechBrain's runner gives row ``i`` of ``tests/recipes/<dataset>.csv``
    (``i`` = 2 for the line after the header) the output folder
    ``tests/tmp/<dataset>_row_<i>``. Our rows name those folders as if they
    were the whole file; appended after ``rows_before`` rows, each moves down
    by that much.

    Arguments
    ---------
    rows : str
        Our rows (no header).
    dataset : str
        The CSV's name (``VoxCeleb``).
    rows_before : int
        Rows the checkout's file already has.

    Returns
    -------
    str
        The rows with the folder numbers shifted.

    Example
    -------
    >>> renumber_rows("a,--pretrained_model=tests/tmp/VoxCeleb_row_03/inference", "VoxCeleb", 7)
    'a,--pretrained_model=tests/tmp/VoxCeleb_row_10/inference'
    """
    return re.sub(
        r"(tests/tmp/" + re.escape(dataset) + r"_row_)(\d+)",
        lambda m: f"{m.group(1)}{int(m.group(2)) + rows_before:02d}",
        rows,
    )


def _count_rows(csv_path):
    """Data rows of a recipe CSV (as SpeechBrain's runner counts them)."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fin:
        return sum(1 for _ in csv.DictReader(fin, skipinitialspace=True))


def _read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as fin:
        return fin.read()


def _rows_only(csv_text):
    """The rows of a recipe CSV, without its header line."""
    return csv_text.split("\n", 1)[1]


def check_checkout(checkout, items):
    """Refuses a folder that is no SpeechBrain checkout, or one already laid into.

    Arguments
    ---------
    checkout : str
        The SpeechBrain checkout.
    items : list
        :func:`plan`'s output.

    Raises
    ------
    LayoutError
        Naming every problem (missing markers, existing files, parts already appended).
    """
    missing = [m for m in CHECKOUT_MARKERS if not os.path.exists(os.path.join(checkout, m))]
    if missing:
        raise LayoutError(
            f"{checkout} is not a SpeechBrain checkout (no {', '.join(missing)}); "
            "give the root of a clone of github.com/speechbrain/speechbrain."
        )
    problems = []
    for path, mode, text in items:
        target = os.path.join(checkout, path)
        if mode == "new" and os.path.lexists(target):
            problems.append(f"{path} exists")
        elif mode == "append":
            if not os.path.isfile(target):
                problems.append(f"{path} is missing (it is appended to)")
            elif _already_appended(_read(target), text):
                problems.append(f"{path} already has the sb-angcl part")
    if problems:
        raise LayoutError(
            "Nothing written: " + "; ".join(problems)
            + ". Lay the recipes into a clean checkout (git stash, or a fresh clone)."
        )
    header = _read(checkout, "tests/recipes/VoxCeleb.csv").split("\n", 1)[0].strip()
    ours = _read(FILES, "VoxCeleb.csv").split("\n", 1)[0].strip()
    if header != ours:
        raise LayoutError(
            f"tests/recipes/VoxCeleb.csv in {checkout} has the columns {header!r}; our rows "
            f"have {ours!r} (tools/upstream_files/*.csv): update them to the checkout's columns."
        )


def _already_appended(existing, text):
    first = next((line for line in text.splitlines() if line.strip()), "")
    return bool(first) and first in existing


def lay(checkout, items=None):
    """Writes the contribution into a SpeechBrain checkout.

    Arguments
    ---------
    checkout : str
        The checkout's root.
    items : list or None
        :func:`plan`'s output (computed when None).

    Returns
    -------
    list of tuple
        ``(path, mode)`` of what was written.

    Raises
    ------
    LayoutError
        Before anything is written, when :func:`check_checkout` refuses.
    """
    items = plan(checkout) if items is None else items
    check_checkout(checkout, items)
    for path, mode, text in items:
        target = os.path.join(checkout, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if mode == "append":
            existing = _read(target)
            with open(target, "a", encoding="utf-8") as fout:
                if existing and not existing.endswith("\n"):
                    fout.write("\n")
                fout.write(text)
        else:
            with open(target, "x", encoding="utf-8") as fout:
                fout.write(text)
            if path.endswith(".py"):
                os.chmod(target, 0o755)
    return [(path, mode) for path, mode, _ in items]


def main(argv=None):
    """Command line: ``python tools/upstream.py SPEECHBRAIN_DIR [--list]``.

    Arguments
    ---------
    argv : list of str or None
        The arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", help="root of a SpeechBrain checkout")
    parser.add_argument("--list", action="store_true", help="print what would be written; write nothing")
    args = parser.parse_args(argv)
    items = plan(args.checkout)
    try:
        if args.list:
            check_checkout(args.checkout, items)
            written = [(path, mode) for path, mode, _ in items]
        else:
            written = lay(args.checkout, items)
    except LayoutError as err:
        print(f"tools/upstream.py: {err}", file=sys.stderr)
        return 1
    for path, mode in written:
        print(f"{'appended to' if mode == 'append' else 'new'}: {path}")
    print(f"{len(written)} files {'to write' if args.list else 'written'} in {args.checkout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
