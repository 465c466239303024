"""Smoke tests of the benchmarks: both scripts in their ``--quick`` mode.

Each script runs as a subprocess (as a user would run it) and must end with a
``ratio <float>`` line; the ablation must also write its Markdown table with
the header (command, corpus, machine) and one row per variant, and the step
benchmark must time every variant. Together well under a minute on 2 cores.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIO = re.compile(r"^ratio (\S+)$")


def run_script(name, *args, timeout=900):
    """Run ``benchmarks/<name>`` with ``args``; return its stdout."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", name), *args]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed\n--- stdout ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr ---\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


def final_ratio(stdout):
    """The float of the last line, which must be ``ratio <float>``."""
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    match = RATIO.match(lines[-1].strip())
    assert match, f"last line is not 'ratio <float>': {lines[-1]!r}"
    return float(match.group(1))


def test_step_overhead_quick():
    out = run_script("step_overhead.py", "--quick", "--no-progress", "--threads", "1")
    ratio = final_ratio(out)
    # A step of the paper's system costs more than zero and less than ten
    # AAM steps even on a loaded machine (it adds two autograd.grad calls).
    assert 0.2 < ratio < 10.0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for variant in ("aam", "supcon", "amsupcon_caa", "mgda_ub", "mgda"):
        assert variant in rows, f"{variant} missing from the table:\n{out}"
        assert float(rows[variant][1]) > 0.0  # median ms
    assert float(rows["aam"][3]) == pytest.approx(1.0)  # its own ratio
    assert float(rows["aam"][4]) == pytest.approx(1.0)  # AAM alone: alpha 1
    # the ratio line repeats the table's mgda_ub ratio
    assert ratio == pytest.approx(float(rows["mgda_ub"][3]), abs=1e-3)


def test_ablation_quick(tmp_path):
    output = tmp_path / "ablation.md"
    work = tmp_path / "work"
    out = run_script("ablation.py", "--quick", "--no-progress", "--work-dir", str(work),
                     "--output", str(output))
    ratio = final_ratio(out)
    assert ratio > 0.0
    text = output.read_text(encoding="utf-8")
    for needle in ("- Command: `python benchmarks/ablation.py --quick", "- Corpus: built-in synthetic",
                   "- Machine: nproc", "torch ", "| aam | AAM-softmax | 1 |",
                   "| default | the recipe's defaults | 1 |", "Paired by seed with `aam`",
                   "| default | 1 | "):
        assert needle in text, f"{needle!r} not in\n{text}"
    assert "supcon" not in text.split("| variant |")[1]  # --quick: two variants only
    runs = (tmp_path / "ablation_runs.csv").read_text(encoding="utf-8").splitlines()
    header = runs[0].split(",")
    assert len(runs) == 3 and header[:3] == ["variant", "seed", "EER"]
    eer = {row.split(",")[0]: float(row.split(",")[2]) for row in runs[1:]}
    assert all(0.0 <= e <= 1.0 for e in eer.values())
    # the ratio is the default system's EER over AAM's (one seed each)
    assert ratio == pytest.approx(eer["default"] / eer["aam"], abs=1e-3)
    # the printed table is the written one
    assert "| aam | AAM-softmax |" in out

    # A second invocation with a grid reuses the finished runs (resumable
    # sweep) and only trains the new grid point.
    stamp = {p: p.stat().st_mtime for p in work.glob("runs/*/seed1/result.json")}
    out = run_script("ablation.py", "--quick", "--no-progress", "--work-dir", str(work),
                     "--output", str(output), "--variants", "aam", "--grid", "alpha_min=0.5")
    assert all(p.stat().st_mtime == t for p, t in stamp.items())
    assert (work / "runs" / "alpha_min-0.5" / "seed1" / "result.json").is_file()
    assert "| alpha_min=0.5 | 1 | " in output.read_text(encoding="utf-8")


def test_paired_statistics_match_a_hand_computation():
    """Paired differences and their 95 % t-interval on a tiny fixed table."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import ablation

    results = [
        {"variant": v, "seed": s, "EER": e, "minDCF": d}
        for v, s, e, d in [
            ("aam", 1, 0.10, 0.50), ("aam", 2, 0.20, 0.60), ("aam", 3, 0.30, 0.70),
            ("x", 1, 0.08, 0.55), ("x", 2, 0.17, 0.60), ("x", 3, 0.26, 0.65),
            ("x", 4, 0.01, 0.01),  # no AAM run with seed 4: not paired
        ]
    ]
    # by hand: EER differences -0.02, -0.03, -0.04 -> mean -0.03, sd 0.01,
    # t(0.975, 2) = 4.302653 -> half width 4.302653 * 0.01 / sqrt(3) = 0.024842
    d = ablation.paired_difference(
        {r["seed"]: r["EER"] for r in results if r["variant"] == "x"},
        {r["seed"]: r["EER"] for r in results if r["variant"] == "aam"},
    )
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(-0.03, abs=1e-12)
    assert d["low"] == pytest.approx(-0.03 - 0.024842, abs=1e-6)
    assert d["high"] == pytest.approx(-0.03 + 0.024842, abs=1e-6)
    assert d["ratio"] == pytest.approx(0.51 / 0.60, abs=1e-12)
    table = ablation.paired_table(results, ["aam", "x"], "aam",
                                  [("EER", "EER %", 100, 2), ("minDCF", "minDCF", 1, 3)])
    # minDCF differences +0.05, 0, -0.05: mean 0, CI +-4.302653*0.05/sqrt(3) = 0.124207
    assert table.splitlines()[-1] == "| x | 3 | -3.00 [-5.48, -0.52] | +0.000 [-0.124, 0.124] | 0.850 |"
