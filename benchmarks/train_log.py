"""Reading SpeechBrain's ``train_log.txt`` back into numbers.

SpeechBrain's ``FileTrainLogger`` writes one line per epoch::

    epoch: 3, lr: 1.5e-03 - train loss: 4.1, train alpha: 0.21 - valid loss: 3.2, ...

:func:`read_train_log` turns each line into a dict (``epoch``, ``lr``,
``train alpha``, ``train w_p5``, ``valid ErrorRate``, ...) so that curves
(alpha, the attention's weight spread, the learning rate) can be plotted from
a finished run (``benchmarks/plot_train_logs.py``, ``benchmarks/lr_curve.py``).

Authors
 * sb-angcl contributors
"""

import re

_FIELD = re.compile(r"([A-Za-z_][\w ]*?): ([-+0-9.eE]+|nan|inf)")


def read_train_log(path):
    """The epochs of a SpeechBrain train log, one dict of numbers each.

    Arguments
    ---------
    path : str
        ``train_log.txt``.

    Returns
    -------
    list of dict
        Keys as written (``"epoch"``, ``"lr"``, ``"train alpha"``,
        ``"valid ErrorRate"``, ...), values as floats (``epoch`` as int).
        Lines that are not epoch lines are skipped.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(path, "w").write(
    ...     "epoch: 1, lr: 2.00e-03 - train loss: 5.98, train alpha: 2.01e-01"
    ...     " - valid loss: 8.07, valid ErrorRate: 6.83e-01\\n")
    >>> row = read_train_log(path)[0]
    >>> row["epoch"], row["lr"], row["train alpha"], row["valid ErrorRate"]
    (1, 0.002, 0.201, 0.683)
    """
    rows = []
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if not line.startswith("epoch:"):
                continue
            row = {}
            for part in line.strip().split(" - "):
                for key, value in _FIELD.findall(part):
                    row[key.strip()] = float(value)
            if "epoch" in row:
                row["epoch"] = int(row["epoch"])
                rows.append(row)
    return rows
