"""``python -m synthetic_corpus``: write the built-in corpus (see :mod:`synthetic_corpus.cli`)."""

import sys

from synthetic_corpus.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
