"""Checkpoint forensics: which checkpoint folders a run can resume from.

Authors
 * sb-angcl contributors
"""

import logging
import os
import zipfile

import torch  # noqa: F401  (used by the doctest)
import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT

logger = logging.getLogger(__name__)


def _checkpoint_problems(ckpt_dir, checkpointer):
    """What makes one checkpoint folder unusable (empty list: nothing)."""
    try:
        with open(os.path.join(ckpt_dir, METAFNAME), encoding="utf-8") as fin:
            meta = yaml.safe_load(fin)
    except (OSError, yaml.YAMLError) as err:
        return [f"{METAFNAME} unreadable ({err.__class__.__name__})"]
    if not isinstance(meta, dict) or "end-of-epoch" not in meta:
        return [f"{METAFNAME} incomplete"]
    problems = []
    optional = getattr(checkpointer, "optional_recoverables", {})
    for name in checkpointer.recoverables:
        path = os.path.join(ckpt_dir, name + PARAMFILE_EXT)
        if not os.path.isfile(path):
            # SpeechBrain itself tolerates these two being absent.
            if not optional.get(name, False) and "dataloader" not in name:
                problems.append(f"{name}{PARAMFILE_EXT} missing")
            continue
        if os.path.getsize(path) == 0:
            problems.append(f"{name}{PARAMFILE_EXT} empty")
            continue
        with open(path, "rb") as fin:
            is_zip_start = fin.read(4) == b"PK\x03\x04"
        if is_zip_start:  # torch.save's format: the index is written last
            try:
                with zipfile.ZipFile(path):
                    pass
            except (zipfile.BadZipFile, OSError):
                problems.append(f"{name}{PARAMFILE_EXT} truncated")
    return problems


def discard_incomplete_checkpoints(checkpointer):
    """Set aside checkpoints that a killed run left half-written; returns their new paths.

    SpeechBrain's ``Checkpointer`` writes ``CKPT.yaml`` first and the
    parameter files after it, so a run killed while saving leaves a folder
    that looks like the newest checkpoint but fails to load. A folder whose
    ``CKPT.yaml`` does not parse, or whose registered recoverable's file is
    missing (optional ones and data-loader states excepted, as in
    SpeechBrain), empty or a ``torch.save`` archive cut short, is renamed
    ``INCOMPLETE-CKPT+...`` with a warning, and recovery falls back to the
    previous checkpoint.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), {"model": torch.nn.Linear(2, 2)})
    >>> good = ckpt.save_checkpoint(name="good")
    >>> bad = ckpt.save_checkpoint(name="bad")
    >>> data = open(bad.paramfiles["model"], "rb").read()
    >>> _ = open(bad.paramfiles["model"], "wb").write(data[: len(data) // 2])
    >>> [os.path.basename(p) for p in discard_incomplete_checkpoints(ckpt)]
    ['INCOMPLETE-CKPT+bad']
    >>> [os.path.basename(c.path) for c in ckpt.list_checkpoints()]
    ['CKPT+good']
    """
    folder = str(checkpointer.checkpoints_dir)
    if not os.path.isdir(folder):
        return []
    moved = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (name.startswith(CKPT_PREFIX) and os.path.isdir(path)):
            continue
        if not os.path.exists(os.path.join(path, METAFNAME)):
            continue  # not a checkpoint for SpeechBrain either
        problems = _checkpoint_problems(path, checkpointer)
        if not problems:
            continue
        target = os.path.join(folder, "INCOMPLETE-" + name)
        suffix = 1
        while os.path.exists(target):
            target = os.path.join(folder, f"INCOMPLETE-{name}.{suffix}")
            suffix += 1
        os.rename(path, target)
        moved.append(target)
        logger.warning(
            "Checkpoint %s is incomplete (%s), probably written by a run that "
            "was stopped while saving; moved to %s and not used. Training "
            "resumes from the previous checkpoint (delete the folder once "
            "inspected).", path, ", ".join(problems), target,
        )
    return moved
