"""Tests of the benchmarks: each script run as a user runs it, its table checked.

Each script runs as a subprocess and must end with a ``ratio <float>`` line.
The checks are on what the tables mean, not on timings (which depend on the
machine and its load): a ratio column is the quotient of the printed times
(to their rounding), the ratio line is the promised combination of the rows,
fixed-weight variants print their weight, and the MGDA-UB variant's alpha is
the min-norm closed form of its two gradients, recomputed here. The ablation
must also write its Markdown table with the header (command, corpus, machine)
and one row per variant; ``--output`` of the speed benchmarks must record the
printed text under a header; ``gpu_check.sh`` runs in its CPU quick mode.
"""

import math
import os
import re
import subprocess
import sys

import pytest
import torch

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


def quotient_bounds(num, den, half_ulp):
    """Interval of ``num / den`` when both were printed rounded to ``half_ulp``."""
    return (num - half_ulp) / (den + half_ulp), (num + half_ulp) / (den - half_ulp)


def check_recorded(path, script, stdout):
    """``--output`` wrote the header and exactly the text the script printed."""
    text = path.read_text(encoding="utf-8")
    for needle in (f"# {script}", f"- Command: `python benchmarks/{script} ", "- Commit: ",
                   "- Date: ", "- CPU: ", "nproc ", "torch threads ", "- 1-minute load average: "):
        assert needle in text, f"{needle!r} not in\n{text}"
    printed = text.split("Printed output:\n\n```\n", 1)[1].rsplit("\n```", 1)[0]
    assert printed == stdout.rstrip("\n")


def mgda_ub_replay(steps):
    """The ``mgda_ub`` variant of ``step_overhead.py --quick``, replayed in this process.

    Returns, per ``fit_batch``, the alpha the Brain applied, the closed form
    ``((g2 - g1) . g2) / ||g1 - g2||^2`` (before clipping) from the two
    gradients on the embedding, recomputed here in float64, and a bound on the
    float32 rounding of the balancer's three dot products over n entries
    (each off by at most n 2^-24 times the sum of |products|).
    """
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import step_overhead

    # --quick: C=16, 20 mels, 16-dim embeddings, 20 classes, 8 = 4 x 2 of 0.5 s, seed 0
    modules = step_overhead.build_modules(16, 20, 16, 20, seed=0)
    batch = step_overhead.make_batch(8, 2, 0.5, 20, seed=0)
    brain = step_overhead.build_brain("mgda_ub", modules)
    balancer, seen = brain.hparams.objective.balancer, []
    original = balancer.forward

    def spy(loss_cls, loss_con, shared=None, **kwargs):
        (g1,) = torch.autograd.grad(loss_cls, shared, retain_graph=True)
        (g2,) = torch.autograd.grad(loss_con, shared, retain_graph=True)
        g1, g2 = g1.double().reshape(-1), g2.double().reshape(-1)
        d = g1 - g2
        raw = float((g2 - g1) @ g2 / (d @ d))
        gamma = g1.numel() * 2.0**-24
        cross = float((g1 * g2).abs().sum())
        err_num = gamma * (float(g2 @ g2) + cross)
        err_den = gamma * (float(g1 @ g1) + float(g2 @ g2) + 2 * cross)
        seen.append((raw, (err_num + abs(raw) * err_den) / float(d @ d)))
        return original(loss_cls, loss_con, shared=shared, **kwargs)

    balancer.forward = spy
    out = []
    for _ in range(steps):
        brain.fit_batch(batch)
        raw, bound = seen[-1]
        out.append((brain.last_alpha, raw, bound))
    return out


@pytest.mark.usefixtures("one_thread")
def test_step_overhead_quick(tmp_path):
    output = tmp_path / "step_overhead.md"
    out = run_script("step_overhead.py", "--quick", "--no-progress", "--threads", "1",
                     "--output", str(output))
    ratio = final_ratio(out)
    lines = out.splitlines()
    assert lines[0].split() == ["variant", "median", "ms", "min", "ms", "ratio", "alpha",
                                "description"]
    rows = {line.split()[0]: line.split() for line in lines[1:6]}
    assert list(rows) == ["aam", "supcon", "amsupcon_caa", "mgda_ub", "mgda"]
    # the paired block: one line per variant but aam, median inside its interval
    paired = lines.index("paired by round, time / aam: median [95 % CI of the median]")
    for line, variant in zip(lines[paired + 1 : paired + 5], list(rows)[1:]):
        name, mid, low, high = line.replace("[", " ").replace(",", " ").replace("]", " ").split()
        assert name == variant and float(low) <= float(mid) <= float(high)
    median = {v: float(r[1]) for v, r in rows.items()}
    alpha = {v: float(r[4]) for v, r in rows.items()}
    for variant, row in rows.items():
        assert 0.0 < float(row[2]) <= median[variant]  # min <= median
        # the ratio column is this median over AAM's (both printed to 0.0005 ms)
        low, high = quotient_bounds(median[variant], median["aam"], 5e-4)
        assert low - 5e-4 <= float(row[3]) <= high + 5e-4, row
    # the ratio line is the paper system's ratio: its median over AAM's
    assert ratio == float(rows["mgda_ub"][3])
    # AAM alone weighs AAM 1; the fixed variants weigh it 0.5; MGDA is in [0, 1]
    assert alpha["aam"] == 1.0
    assert alpha["supcon"] == alpha["amsupcon_caa"] == 0.5
    assert 0.0 <= alpha["mgda"] <= 1.0
    # MGDA-UB: on every step the alpha applied is the min-norm closed form of
    # the two gradients, clipped to [0, 1] (the rule as written: no bounds, no
    # smoothing); the table prints the last step's (1 warm-up + 3 rounds).
    replay = mgda_ub_replay(4)
    for applied, raw, bound in replay:
        assert applied == pytest.approx(min(max(raw, 0.0), 1.0), abs=bound + 1e-12)
    assert any(0.05 < raw < 0.95 for _, raw, _ in replay), replay  # an interior solution
    assert alpha["mgda_ub"] == pytest.approx(replay[-1][0], abs=5e-4 + 1e-6)
    check_recorded(output, "step_overhead.py", out)


def test_loss_speed_table_and_ratio_line(tmp_path):
    output = tmp_path / "loss_speed.md"
    out = run_script("loss_speed.py", "--sizes", "8", "16", "--dim", "4", "--classes", "10",
                     "--repeats", "3", "--warmup", "1", "--utts-per-speaker", "2",
                     "--threads", "1", "--output", str(output))
    ratio = final_ratio(out)
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["N", "ours", "ms", "pml", "ms", "ratio"]
    rows = [line.replace("[", " ").replace(",", " ").replace("]", " ").split() for line in lines[1:3]]
    assert [int(r[0]) for r in rows] == [8, 16]
    logs = []
    for _, ours, pml, row_ratio, paired, low_ci, high_ci in rows:
        low, high = quotient_bounds(float(ours), float(pml), 5e-4)
        assert low - 5e-4 <= float(row_ratio) <= high + 5e-4
        assert float(low_ci) <= float(paired) <= float(high_ci)  # 3 repeats: their range
        logs.append(math.log(float(row_ratio)))
    # the ratio line is the geometric mean of the per-size ratios
    geo = math.exp(sum(logs) / len(logs))
    assert ratio == pytest.approx(geo, abs=1e-3)
    assert "ratio = geometric mean over sizes" in lines[3]
    check_recorded(output, "loss_speed.py", out)


def test_scoring_quick(tmp_path):
    output = tmp_path / "scoring.md"
    out = run_script("scoring.py", "--quick", "--repeats", "1", "--threads", "1",
                     "--output", str(output))
    ratio = final_ratio(out)
    lines = out.splitlines()
    head = next(x for x in lines if x.startswith("step "))
    end = head.index("time [s]") + len("time [s]")  # the columns are right-aligned to it
    rows = {}
    for line in lines[lines.index(head) + 2:]:
        if line.startswith("---"):
            break
        # name, size (26 wide), time (12 wide), two spaces, note
        rows[line[: end - 40].strip()] = (line[end - 39 : end - 13].strip(),
                                          float(line[end - 12 : end]), line[end + 2 :])
    ours = rows["(a) ours: cosine + AS-norm"]
    loop = rows["(b) per-trial loop (recipe style)"]
    extrapolated = rows["(b) ... extrapolated to all trials"]
    assert ours[0] == extrapolated[0] == "19000 trials" and loop[0] == "300 trials"
    for part in ("id mapping (2 x trials)", "cosine of the trials",
                 "cohort products (1020 x 300)", "top-50 selection (1 thread)"):
        assert "(a) part: " + part in rows
    # the per-trial loop scores as we do, to float32 rounding amplified by 1/sd
    diff = float(re.search(r"max \|diff\| vs ours (\S+)", loop[2]).group(1))
    assert diff < 1e-4
    # the extrapolation is linear in trials, the ratio line is loop / ours
    low, high = quotient_bounds(loop[1], 300 / 19000, 5e-4)
    assert low <= extrapolated[1] * (1 + 1e-12) and extrapolated[1] <= high * (1 + 1e-12)
    low, high = quotient_bounds(extrapolated[1], ours[1], 5e-4)
    assert low - 0.05 <= ratio <= high + 0.05
    # SpeechBrain's EER and minDCF on the same scores equal ours
    eer = re.search(r"EER (\S+)% \(ours (\S+)%\)", rows["(c) SpeechBrain EER"][2])
    assert eer.group(1) == eer.group(2)
    dcf = re.search(r"minDCF/0.01 (\S+) \(ours (\S+)\)", rows["(c) SpeechBrain minDCF"][2])
    assert dcf.group(1) == dcf.group(2)
    check_recorded(output, "scoring.py", out)


def test_gpu_check_quick_mode_on_cpu(tmp_path):
    """``DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh``: both of its tables, about 20 s."""
    env = dict(os.environ, DEVICE="cpu", QUICK="1", OUT=str(tmp_path), PYTHON=sys.executable,
               OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    step = (tmp_path / "step_overhead.txt").read_text(encoding="utf-8")
    ratio = final_ratio(step)
    rows = {line.split()[0]: line.split() for line in step.splitlines()[1:3]}
    assert list(rows) == ["aam", "mgda_ub"] and ratio == float(rows["mgda_ub"][3])
    probe = (tmp_path / "gpu_probe.txt").read_text(encoding="utf-8")
    table = {}
    for line in probe.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[1] == "fp32":
            table[cells[0]] = cells
    assert set(table) == {"angcl", "aam"}, probe
    angcl, aam = table["angcl"], table["aam"]
    assert angcl[2] == aam[2] and int(aam[2]) > 0  # the same number of steps
    assert angcl[5] == aam[5] == "0"  # no batch skipped for non-finite values
    assert float(aam[8]) == 1.0 and float(aam[7]) == 0.0  # AAM alone: alpha 1, no contrastive loss
    assert 0.3 <= float(angcl[8]) <= 1.0 and float(angcl[7]) > 0.0  # alpha_min 0.3 of the YAML
    line = next(x for x in probe.splitlines() if x.startswith("fp32: paper system / AAM"))
    low, high = quotient_bounds(float(angcl[3]), float(aam[3]), 0.05)
    assert low - 0.005 <= float(line.rsplit("=", 1)[1]) <= high + 0.005


def test_ablation_quick(tmp_path):
    output = tmp_path / "ablation.md"
    work = tmp_path / "work"
    out = run_script("ablation.py", "--quick", "--no-progress", "--work-dir", str(work),
                     "--output", str(output))
    ratio = final_ratio(out)  # checked against the runs' EERs below
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


def test_step_profile_parts_add_up_to_the_epoch(tmp_path):
    """``step_profile.py`` on a tiny corpus: the recipe's own data pipeline runs, and the
    table's parts add up to its epoch total, whose per-batch time is total / batches."""
    out = run_script("step_profile.py", "--speakers", "16", "--utterances", "6", "--epochs", "1",
                     "--augmentation", "features", "--threads", "1",
                     "--work-dir", str(tmp_path / "work"))
    rows = dict(re.findall(r"^\| (\w+) \| ([\d.]+) s \(\d+ %\) \|$", out, flags=re.M))
    assert set(rows) == {"loading", "augmentation", "features", "forward", "objectives",
                         "balancing", "backward", "optimiser", "validation", "checkpointing",
                         "logging", "other"}
    total = re.search(r"\*\*([\d.]+) s\*\* \((\d+) batches, (\d+) ms/batch\)", out)
    seconds, batches, per_batch = float(total.group(1)), int(total.group(2)), int(total.group(3))
    assert batches >= 1
    # each printed part is rounded to 0.05 s at most, the total too
    assert abs(sum(float(v) for v in rows.values()) - seconds) <= 0.05 * (len(rows) + 1)
    assert abs(per_batch - 1000 * seconds / batches) <= 1000 * 0.05 / batches + 1
    assert final_ratio(out) == 1.0  # one domain: the last domain's epoch time over the first's


def test_lr_curve_steps_and_curve():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from lr_curve import balanced_steps_per_epoch, schedule_curve

    from sb_angcl.training.lr_schedule import WarmupDecayScheduler

    # Balanced sampler: ceil(n / K) groups, P * R groups a global step.
    assert balanced_steps_per_epoch([9, 4, 4, 3], 2, 4, num_gpus=1) == 3
    assert balanced_steps_per_epoch([9, 4, 4, 3], 1, 4, num_gpus=2) == 3
    epochs, lrs = schedule_curve(WarmupDecayScheduler(1e-3, 1e-5, 2, warmup_epochs=1), 2)
    assert epochs == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 1e-4, 1e-5])
