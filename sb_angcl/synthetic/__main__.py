"""``python -m sb_angcl.synthetic``: write the built-in corpus (see :mod:`sb_angcl.synthetic.cli`)."""

import sys

from sb_angcl.synthetic.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
