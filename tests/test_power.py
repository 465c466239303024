"""benchmarks/power.py: paired differences, intervals and detectable differences of stored runs."""

import csv
import importlib.util
import math
import os

import pytest
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("power", os.path.join(ROOT, "benchmarks", "power.py"))
power = importlib.util.module_from_spec(spec)
spec.loader.exec_module(power)


def write_runs(path, eers, subset_eers):
    fields = ["variant", "seed", "EER", "minDCF", "n_trials", "n_subset=big",
              "EER_subset=big", "minDCF_subset=big"]
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=fields)
        writer.writeheader()
        for variant in ("ref", "sys"):
            for seed, (eer, sub) in enumerate(zip(eers[variant], subset_eers[variant]), 1):
                writer.writerow({"variant": variant, "seed": seed, "EER": eer, "minDCF": 0.5,
                                 "n_trials": 100, "n_subset=big": 1000, "EER_subset=big": sub,
                                 "minDCF_subset=big": 0.4})


def test_paired_power_matches_a_direct_computation():
    ref = [0.040, 0.050, 0.045, 0.055, 0.042]
    sys_ = [0.038, 0.047, 0.046, 0.050, 0.040]
    p = power.paired_power(sys_, ref, scale=100.0)
    diffs = [100 * (s - r) for s, r in zip(sys_, ref)]
    sd = stats.tstd(diffs)
    assert p["delta"] == pytest.approx(sum(diffs) / 5)
    assert p["sd"] == pytest.approx(sd)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((p["delta"] - half, p["delta"] + half))
    mdd = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * sd / math.sqrt(5)
    assert p["mdd"] == pytest.approx(mdd)
    needed = ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / (0.1 * 100 * 0.0464)) ** 2
    assert p["pairs_10pct"] == math.ceil(needed)


def test_report_pairs_by_seed_and_lists_every_subset(tmp_path):
    path = tmp_path / "runs.csv"
    write_runs(path, {"ref": [0.10, 0.12, 0.11], "sys": [0.09, 0.10, 0.11]},
               {"ref": [0.10, 0.11, 0.12], "sys": [0.10, 0.10, 0.11]})
    out = tmp_path / "power.md"
    power.main([str(path), "--system", "sys", "--reference", "ref", "--output", str(out)])
    text = out.read_text()
    assert "Seeds paired: 3 (1, 2, 3)" in text
    row = next(line for line in text.splitlines() if line.startswith("| EER % |"))
    assert "| 100 | 11.00 | 10.00 | 0.909 | -1.00 [" in row
    assert any(line.startswith("| EER % big | 1000 |") for line in text.splitlines())
    assert text.rstrip().splitlines()[-1].startswith("mdd ")
    with pytest.raises(SystemExit, match="no seed"):
        power.main([str(path), "--system", "sys", "--reference", "absent"])


def test_labelled_csvs_and_several_pairs_in_one_report(tmp_path):
    # Two sweeps with the same variant names, each with its own reference.
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_runs(a, {"ref": [0.10, 0.12, 0.11], "sys": [0.09, 0.10, 0.11]},
               {"ref": [0.10, 0.11, 0.12], "sys": [0.10, 0.10, 0.11]})
    write_runs(b, {"ref": [0.20, 0.22, 0.21], "sys": [0.25, 0.24, 0.23]},
               {"ref": [0.20, 0.21, 0.22], "sys": [0.20, 0.20, 0.21]})
    runs = power.read_runs([str(a), f"b={b}"])
    assert float(runs[("sys", 1)]["EER"]) == 0.09 and float(runs[("b:sys", 1)]["EER"]) == 0.25
    out = tmp_path / "power.md"
    power.main([str(a), f"b={b}", "--compare", "sys/ref", "--compare", "b:sys/b:ref",
                "--compare", "b:ref/ref", "--output", str(out)])
    text = out.read_text()
    sections = text.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "`sys` against `ref`", "`b:sys` against `b:ref`", "`b:ref` against `ref`"]
    eer = [next(line for line in s.splitlines() if line.startswith("| EER % |")) for s in sections]
    assert "| 11.00 | 10.00 | 0.909 | -1.00 [" in eer[0]
    assert "| 21.00 | 24.00 | 1.143 | +3.00 [" in eer[1]
    assert "| 11.00 | 21.00 | 1.909 | +10.00 [" in eer[2]
    # The last line is the first pair's, as with one pair.
    single = power.report(runs, "sys", "ref", "cmd")
    assert text.rstrip().splitlines()[-1] == single.rstrip().splitlines()[-1]
    with pytest.raises(SystemExit):
        power.main([str(a), "--compare", "sys/ref", "--system", "sys"])
