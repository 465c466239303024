"""Recording what a benchmark printed, with where, when and how it ran.

The speed benchmarks (``loss_speed.py``, ``step_overhead.py``, ``scoring.py``,
``step_profile.py``) take ``--output FILE``: everything they print is then also
written to ``FILE`` (Markdown) under a header with the command, the commit, the
CPU model, the cores (``nproc``) and torch threads, the 1-minute load average
at the start and the end, and the date, so that every figure in the README can
be traced to a committed file under ``benchmarks/results/``::

    python benchmarks/loss_speed.py --threads 1 --output benchmarks/results/loss_speed.md

Authors
 * sb-angcl contributors
"""

import contextlib
import datetime
import io
import math
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_ci(values, level=0.95):
    """Median of ``values`` and a distribution-free confidence interval for it.

    The interval is ``[x_(j), x_(n+1-j)]`` of the sorted values, with the
    largest ``j`` such that ``P(Binomial(n, 1/2) < j) <= (1 - level) / 2``;
    it covers the true median with probability at least ``level`` whatever
    the distribution (a noisy, shared machine's timings included). With
    fewer than 6 values no such ``j`` exists and the range is returned.

    Arguments
    ---------
    values : sequence of float
        E.g. per-round ratios of two variants timed side by side.
    level : float
        Coverage.

    Returns
    -------
    tuple of float
        ``(median, low, high)``.

    Example
    -------
    >>> median_ci(range(1, 21))  # n = 20: the 6th and 15th values (coverage 0.959)
    (10.5, 6, 15)
    """
    x = sorted(values)
    n = len(x)
    mid = (x[(n - 1) // 2] + x[n // 2]) / 2
    tail, cumulative, j = (1 - level) / 2, 0.0, 0
    while j < n:
        cumulative += math.comb(n, j) / 2**n  # now P(B <= j)
        if cumulative > tail:
            break
        j += 1
    # P(B <= j - 1) <= tail < P(B <= j): the 1-based order statistics j and n + 1 - j
    if j == 0:
        return mid, x[0], x[-1]
    return mid, x[j - 1], x[n - j]


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), with ``(VM)`` under a hypervisor.

    Returns
    -------
    str

    Example
    -------
    >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    return name + (" (VM)" if " hypervisor" in info else "")


def usable_cores():
    """Cores this process may run on (what GNU ``nproc`` prints without OMP_NUM_THREADS).

    Returns
    -------
    int
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def commit():
    """``git`` commit of the checkout, ``+ uncommitted changes`` when tracked files differ.

    Returns
    -------
    str
    """
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def load_average():
    """The 1-minute load average, or NaN where the system has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def header(script, argv, load_start, load_end, threads):
    """The Markdown header of a recorded run.

    Arguments
    ---------
    script : str
        Path of the benchmark script.
    argv : list of str
        Its arguments.
    load_start, load_end : float
        1-minute load averages when the run started and ended.
    threads : int
        torch intra-op threads the run used.

    Returns
    -------
    str

    Example
    -------
    >>> text = header("benchmarks/x.py", ["--quick"], 0.1, 0.2, 1)
    >>> text.splitlines()[2]
    '- Command: `python benchmarks/x.py --quick`'
    """
    import torch

    cores = usable_cores()
    rel = os.path.relpath(os.path.abspath(script), ROOT)
    lines = [
        f"# {os.path.basename(script)}",
        "",
        f"- Command: `python {shlex.join([rel, *argv])}`",
        f"- Commit: {commit()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()}; nproc {cores} (os.cpu_count {os.cpu_count()}); torch threads "
        f"{threads}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}",
        f"- 1-minute load average: {load_start:.2f} at the start, {load_end:.2f} at the end",
    ]
    if load_start >= 0.5 or load_end >= 0.5:
        lines.append(
            f"- The machine was shared (a load average of {max(load_start, load_end):.1f} on "
            f"{cores} cores, this run included): absolute times are inflated; compare the "
            "variants measured side by side in this one run, not times across files."
        )
    return "\n".join(lines)


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


@contextlib.contextmanager
def recorded(output, script, argv):
    """Print as usual; with ``output``, also write the printed text under :func:`header`.

    Arguments
    ---------
    output : str or None
        Markdown file to write (parent folders created); None records nothing.
    script : str
        The benchmark's path (``__file__``).
    argv : list of str
        Its command-line arguments.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "out.md")
    >>> with recorded(path, "benchmarks/x.py", []):
    ...     print("ratio 1.000")
    ratio 1.000
    >>> text = open(path).read()
    >>> text.startswith("# x.py") and text.rstrip().endswith("ratio 1.000\\n```")
    True
    """
    if output is None:
        yield
        return
    import torch

    load_start = load_average()
    tee = _Tee(sys.stdout)
    previous, sys.stdout = sys.stdout, tee
    try:
        yield
    finally:
        sys.stdout = previous
    text = header(script, argv, load_start, load_average(), torch.get_num_threads())
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text + "\n\nPrinted output:\n\n```\n" + tee.copy.getvalue().rstrip("\n") + "\n```\n")
