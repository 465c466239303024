"""The README's figures have a stored source, and the README stays a user's guide.

A figure is a number with a decimal point, or a number followed by ``%``, in
the README's prose and tables (code blocks and inline code hold commands and
settings, not results). Each must occur, as a whole number (``4.35`` does not
match ``14.35`` or ``4.351``), in a file under ``benchmarks/results/`` or
``docs/``; the record in ``docs/experiments.md`` in turn names the stored
output of each of its figures. Version numbers (``0.1.0``, ``2.14.1``) are not
figures.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# A decimal number, or a number before "%"; not part of a dotted version (a.b.c).
FIGURE = re.compile(r"(?<![\w.])(\d+(?:,\d{3})*\.\d+|\d+(?:,\d{3})*(?= ?%))(?!\.?\d|\.\w)")


def prose(text):
    """The text without fenced code blocks, inline code spans and identifiers
    (``arXiv 2210.16622``, ``Apache-2.0``)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"arXiv[: ]?\d+\.\d+|[A-Za-z]-\d+(?:\.\d+)*", "", text)


def figures(text):
    """The figures of a text, in order of first occurrence.

    Example: ``figures("EER 4.35 % (0.996 x) in v2.14.1, 3,264 trials")`` gives
    ``['4.35', '0.996']``.
    """
    return list(dict.fromkeys(FIGURE.findall(prose(text))))


def stored_text():
    chunks = []
    for folder in ("benchmarks/results", "docs"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith((".md", ".csv", ".txt")):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as fin:
                        chunks.append(fin.read())
    return "\n".join(chunks)


def test_figures_are_found():
    text = "EER 4.35 % (0.996 x) in v2.14.1, `0.5`, 3,264 trials, 95 % CI, arXiv 2106.04624, -0.02"
    assert figures(text) == ["4.35", "0.996", "95", "0.02"]


def test_every_readme_figure_has_a_stored_source():
    with open(README, encoding="utf-8") as fin:
        found = figures(fin.read())
    assert len(found) > 20  # the results tables are there
    stored = stored_text()
    missing = [f for f in found
               if not re.search(r"(?<![\d.,])" + re.escape(f) + r"(?![\d])", stored)]
    assert not missing, f"README figures with no file under benchmarks/results/ or docs/: {missing}"


def test_readme_is_a_users_guide():
    with open(README, encoding="utf-8") as fin:
        text = fin.read()
    assert len(text.splitlines()) <= 250
    assert "/work/" not in text and "shared/" not in text
    for word in ("issue", "session's", "helper", "DESIGN.md", "withdrawn"):
        assert word not in text, word
    assert not re.search(r"(?<![\w/-])[0-9a-f]{7,12}(?![\w/-])", prose(text)), "a commit hash in prose"
    from sb_angcl import __version__

    assert f"Version {__version__}" in text


@pytest.mark.parametrize("name", ["CITATION.cff", "CHANGELOG.md"])
def test_citation_and_changelog_carry_the_version(name):
    from sb_angcl import __version__

    with open(os.path.join(ROOT, name), encoding="utf-8") as fin:
        assert __version__ in fin.read()
