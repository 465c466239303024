#!/usr/bin/env python3
"""Larger trial lists for a real-voice corpus, so the trial list adds less noise to a comparison.

A corpus of ``make_corpus.py`` (the real-voice generator) has a test split of
a few hundred utterances and a list of a few thousand trials drawn over them.
Scoring the same trained models on more trials separates the spread that the
list's sampling adds to a paired comparison from the spread of training.
This writes, into ``CORPUS/meta/`` (a VoxCeleb1-layout ``vox/`` folder):

* ``veri_test2_all.txt``: every pair of test utterances (the largest list the
  test split allows);
* for each ``--include NAME=FILE``: that list as ``veri_test2_NAME.txt`` (e.g.
  the standard list of a corpus generated with the same seed and fewer
  trials per enrolment: its audio is the same);
* ``veri_test2_<list>.txt`` for the corpus's own list (``--own-name``);

and makes ``CORPUS/veri_test2.txt`` and ``CORPUS/meta/veri_test2.txt`` the
union of them all, so one scoring run gives the scores of every subset
(``benchmarks/ablation.py`` reports each ``meta/veri_test2_*.txt``).

Usage::

    python make_corpus.py --seed 8 --trials-per-enrol 15 OUT
    python benchmarks/trial_lists.py OUT/vox --own-name t15 \\
        --include std=STANDARD/vox/meta/veri_test2.txt \\
        --include stdcrosslang=STANDARD/vox/meta/veri_test2_crosslang.txt

Authors
 * sb-angcl contributors
"""

import argparse
import csv
import itertools
import os
import shutil


def held_out_utterances(corpus):
    """``(path under wav/, speaker)`` of every test utterance in ``meta/utterances.tsv``.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "meta"))
    >>> _ = open(os.path.join(d, "meta", "utterances.tsv"), "w").write(
    ...     "vox_path\\tspeaker\\tsplit\\nwav/a/s/1.wav\\tA\\ttest\\nwav/b/s/1.wav\\tB\\tdev\\n")
    >>> held_out_utterances(d)
    [('a/s/1.wav', 'A')]
    """
    path = os.path.join(corpus, "meta", "utterances.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: CORPUS must be the vox/ folder of make_corpus.py")
    with open(path, newline="", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin, delimiter="\t"))
    prefix = "wav/"
    return sorted(
        (r["vox_path"][len(prefix):] if r["vox_path"].startswith(prefix) else r["vox_path"],
         r["speaker"])
        for r in rows if r["split"] == "test"
    )


def all_pairs(utterances):
    """``label enrol test`` lines of every pair of utterances (``label`` 1: same speaker).

    Example
    -------
    >>> all_pairs([("a1", "A"), ("a2", "A"), ("b1", "B")])
    ['1 a1 a2', '0 a1 b1', '0 a2 b1']
    """
    return [f"{int(sa == sb)} {a} {b}"
            for (a, sa), (b, sb) in itertools.combinations(utterances, 2)]


def union(lists):
    """The lines of several trial lists, each ``(enrol, test)`` pair once, in order.

    Example
    -------
    >>> union([["1 a b", "0 a c"], ["0 a c", "1 b a"]])
    ['1 a b', '0 a c', '1 b a']
    """
    seen, out = set(), []
    for lines in lists:
        for line in lines:
            key = tuple(line.split()[1:3])
            if key not in seen:
                seen.add(key)
                out.append(line)
    return out


def read_lines(path):
    with open(path, encoding="utf-8") as fin:
        return [line.strip() for line in fin if line.strip()]


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines) + "\n")


def main(argv=None):
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="the vox/ folder of a make_corpus.py corpus")
    parser.add_argument("--own-name", default="own",
                        help="subset name for the corpus's own veri_test2.txt")
    parser.add_argument("--include", action="append", default=[], metavar="NAME=FILE",
                        help="another list over the same audio, kept as subset NAME")
    args = parser.parse_args(argv)
    meta = os.path.join(args.corpus, "meta")
    own = os.path.join(args.corpus, "veri_test2.txt")
    kept = os.path.join(meta, f"veri_test2_{args.own_name}.txt")
    if not os.path.isfile(kept):  # a second call keeps the corpus's own list, not the union
        shutil.copyfile(own, kept)
    pairs = all_pairs(held_out_utterances(args.corpus))
    write_lines(os.path.join(meta, "veri_test2_all.txt"), pairs)
    lists = [pairs, read_lines(kept)]
    names = {pairs_key(line) for line in pairs}
    for spec in args.include:
        name, _, path = spec.partition("=")
        lines = read_lines(path)
        unknown = [line for line in lines
                   if pairs_key(line) not in names and pairs_key(line)[::-1] not in names]
        if unknown:
            raise ValueError(f"{path}: {len(unknown)} trials name utterances outside the test "
                             f"split of {args.corpus} (e.g. {unknown[0]!r}): another corpus?")
        write_lines(os.path.join(meta, f"veri_test2_{name}.txt"), lines)
        lists.append(lines)
    merged = union(lists)
    write_lines(own, merged)
    write_lines(os.path.join(meta, "veri_test2.txt"), merged)
    print(f"{len(pairs)} pairs of {len(held_out_utterances(args.corpus))} test utterances; "
          f"the union list has {len(merged)} trials")


def pairs_key(line):
    """``(enrol, test)`` of a trial line."""
    return tuple(line.split()[1:3])


if __name__ == "__main__":
    main()
