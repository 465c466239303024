"""Shared pytest set-up for the sb-angcl test suite.

Hypothesis and SpeechBrain's lazy modules
-----------------------------------------
SpeechBrain puts :class:`speechbrain.utils.importutils.LazyModule` objects in
``sys.modules`` for deprecated import paths (``speechbrain.k2_integration``
-> ``speechbrain.integrations.k2_fsa``, ``speechbrain.pretrained``, ...). The
first attribute read on one imports its target. Hypothesis' pytest plugin
reads ``getattr(module, "__file__", None)`` of every loaded module when a
session holds ``@given`` tests (to collect the constants of local code), which
imports every such target; ``k2_fsa`` needs the optional ``k2`` package, so
the import raises ``ImportError`` (not ``AttributeError``, which ``getattr``'s
default would absorb) and collection crashes with an INTERNALERROR.

The fix below answers ``__file__`` on a *not yet imported* lazy module with
``AttributeError``, as an ordinary module without a file does. Nothing is
imported, so the optional integrations stay unloaded, and any other attribute
still triggers SpeechBrain's normal lazy import (and its errors).
"""

import logging
import os
import sys

import pytest
import torch

try:
    from speechbrain.utils.importutils import LazyModule as _LazyModule
except ImportError:  # pragma: no cover - an older SpeechBrain without lazy modules
    _LazyModule = None


def _patch_lazy_module_file(cls):
    """Make ``getattr(lazy, "__file__", None)`` safe on unloaded lazy modules."""
    original = cls.__getattr__
    if getattr(original, "_sb_angcl_safe_file", False):
        return

    def __getattr__(self, attr):
        if attr == "__file__" and getattr(self, "lazy_module", None) is None:
            raise AttributeError(
                f"{self!r} is not imported yet; it has no __file__ until then"
            )
        return original(self, attr)

    __getattr__._sb_angcl_safe_file = True
    cls.__getattr__ = __getattr__


if _LazyModule is not None:
    _patch_lazy_module_file(_LazyModule)

# The tests use helpers of tools/ (not part of the library): the repository root is importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Recipe tests write experiment folders under tests/tmp; SpeechBrain copies the
# calling script (sb_angcl/recipe.py) into each, and --doctest-modules would
# collect those copies as duplicate "recipe" modules. They are outputs, not tests.
collect_ignore_glob = ["tmp/*"]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module: on a busy 2-core machine,
    OpenMP threads waiting for each other made small models up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_logging():
    """Undo the logging set-up ``train.py`` does (handlers on the root)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
