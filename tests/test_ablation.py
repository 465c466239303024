"""The ablation on an external corpus: trial subsets, provenance and reuse.

A tiny VoxCeleb-layout corpus made here (the built-in generator, with two
trial subsets written into its ``meta/`` as a real-voice corpus has them)
stands in for ``shared/realvoices`` (CI has no Debian voices).
"""

import csv
import json
import os
import sys

import pytest
from speechbrain.utils.metric_stats import EER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import ablation  # noqa: E402
from test_benchmarks import final_ratio, run_script  # noqa: E402


@pytest.fixture(scope="module")
def external_corpus(tmp_path_factory):
    """A VoxCeleb1-layout corpus with ``meta/veri_test2_{first,targets}.txt``."""
    from synthetic_corpus import generate_corpus

    root = tmp_path_factory.mktemp("external")
    summary = generate_corpus(str(root / "corpus"), layout="voxceleb", num_speakers=8,
                              num_utterances=6, num_sessions=2, num_languages=2,
                              duration_min=1.0, duration_max=1.5, seed=3, progress=False)
    folder = summary["voxceleb"]["root"]
    with open(os.path.join(folder, "meta", "veri_test2.txt"), encoding="utf-8") as fin:
        lines = [line for line in fin if line.strip()]
    half = lines[: len(lines) // 2]
    assert {line[0] for line in half} == {"0", "1"}, "the subset needs both classes"
    with open(os.path.join(folder, "meta", "veri_test2_first.txt"), "w", encoding="utf-8") as f:
        f.writelines(half)
    return folder, half


def test_ablation_on_external_corpus_reports_every_subset(tmp_path, external_corpus):
    folder, half = external_corpus
    work, output = tmp_path / "work", tmp_path / "ablation.md"
    args = ["--quick", "--no-progress", "--corpus", folder, "--work-dir", str(work),
            "--output", str(output)]
    out = run_script("ablation.py", *args)
    text = output.read_text(encoding="utf-8")
    assert f"- Corpus: `{os.path.abspath(folder)}`" in text
    # the subset table names the subset with its size, and the paired table has its columns
    assert f"| variant | first ({len(half)} trials) |" in text
    assert "Δ EER % first [95 % CI]" in text and "Δ minDCF first [95 % CI]" in text
    assert "- Code: the commit each run ran at" in text

    # The subset EER is SpeechBrain's EER on the run's own scores of those trials.
    wanted = {tuple(line.split()[1:3]) for line in half}
    with open(tmp_path / "ablation_runs.csv", encoding="utf-8") as fin:
        rows = {r["variant"]: r for r in csv.DictReader(fin)}
    for variant in ("aam", "default"):
        pos, neg = [], []
        with open(work / "runs" / variant / "seed1" / "scores.txt", encoding="utf-8") as fin:
            for enrol, test, score, label in (line.split() for line in fin):
                if (enrol, test) in wanted:
                    (pos if label == "1" else neg).append(float(score))
        assert len(pos) + len(neg) == len(half)
        import torch

        expected, _ = EER(torch.tensor(pos), torch.tensor(neg))
        assert float(rows[variant]["EER_subset=first"]) == pytest.approx(float(expected), abs=1e-6)
        assert int(rows[variant]["n_subset=first"]) == len(half)
    ratio = final_ratio(out)
    assert ratio == pytest.approx(float(rows["default"]["EER"]) / float(rows["aam"]["EER"]),
                                  abs=1e-3)
    # the written report ends with the same ratio line
    assert final_ratio(text) == ratio

    # Each run records the commit it ran at and its resolved settings.
    stored = json.loads((work / "runs" / "aam" / "seed1" / "result.json").read_text())
    assert stored["settings"]["balancing"] == "fixed"
    assert stored["settings"]["contrastive_weight"] == 0.0
    assert stored["commit"] == ablation.code_version()

    # Run again: the same settings reuse the finished runs (nothing retrained).
    stamps = {p: p.stat().st_mtime for p in work.glob("runs/*/seed1/result.json")}
    run_script("ablation.py", *args)
    assert all(p.stat().st_mtime == t for p, t in stamps.items())
    assert "reused from an earlier invocation" in output.read_text(encoding="utf-8")

    # An earlier report's runs of other seeds join the tables (--include-csv).
    with open(tmp_path / "ablation_runs.csv", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))
    earlier = tmp_path / "earlier.csv"
    with open(earlier, "w", encoding="utf-8", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(dict(r, seed="7") for r in rows)
    run_script("ablation.py", *args, "--include-csv", str(earlier))
    text = output.read_text(encoding="utf-8")
    assert f"- Included from `{earlier}`" in text and "seeds 7" in text
    assert "| default | 2 |" in text  # two pairs now: seeds 1 and 7


def test_a_run_is_reused_only_when_its_resolved_settings_match():
    base = ablation.run_settings(ablation.DEFAULT_HPARAMS, {"seed": 1})
    yaml_values = ablation.yaml_top_values(ablation.DEFAULT_HPARAMS)
    # an override equal to the YAML's own value is the same run
    same = ablation.run_settings(ablation.DEFAULT_HPARAMS,
                                 {"seed": 1, "margin": yaml_values["margin"]})
    assert same == base
    # any other value of any top-level setting is another run
    for key, value in (("margin", 0.05), ("positives_across_sessions", False),
                       ("attention_temperature", None), ("lr", 0.123)):
        assert ablation.run_settings(ablation.DEFAULT_HPARAMS, {"seed": 1, key: value}) != base


def test_named_variants_pin_the_settings_they_depend_on():
    """Every named variant but ``default*`` fixes every objective and sampler setting,
    so that a change of the YAML's defaults does not change what it runs."""
    yaml_values = ablation.yaml_top_values(ablation.DEFAULT_HPARAMS)
    for name, (_, overrides) in ablation.VARIANTS.items():
        if name.startswith("default"):
            continue
        missing = set(ablation.PINNED) - set(overrides)
        assert not missing, f"variant {name} leaves {sorted(missing)} to the YAML"
        assert set(overrides) <= set(yaml_values), f"{name} sets keys the YAML lacks"


def test_vary_is_one_factor_at_a_time():
    args = ablation.parse_args(["--vary", "alpha_min=0.5,0.8", "margin=0.1",
                                "--variants", "default"])
    assert args.variants == ["aam", "default", "alpha_min=0.5", "alpha_min=0.8", "margin=0.1"]
    overrides = args.all_variants["margin=0.1"][1]
    assert overrides == {"margin": 0.1}  # on top of `default`: only the varied key
    args = ablation.parse_args(["--vary", "contrastive_weight=0.1", "--grid-base", "amsupcon_caa"])
    name = "amsupcon_caa:contrastive_weight=0.1"
    assert args.all_variants[name][1] == dict(ablation.VARIANTS["amsupcon_caa"][1],
                                              contrastive_weight=0.1)
    assert ablation.run_folder_name(name) == "amsupcon_caa+contrastive_weight-0.1"


def test_included_runs_join_the_paired_table(tmp_path):
    """``--include-csv``: an earlier report's seeds join this invocation's, pairs by seed."""
    earlier = tmp_path / "earlier.csv"
    with open(earlier, "w", encoding="utf-8", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(["variant", "seed", "EER", "minDCF", "n_trials", "commit"])
        writer.writerows([
            ["aam", 1, 0.50, 0.9, 100, "old"],        # this invocation ran (aam, 1): not taken
            ["aam", 2, 0.06, 0.6, 100, "old"],
            ["default", 2, 0.05, 0.5, 100, "old"],
            ["supcon", 2, 0.01, 0.1, 100, "old"],     # not a reported variant: left out
            ["aam", 3, 0.07, 0.7, 100, "old"],        # no default for seed 3: unpaired
        ])
    now = [{"variant": "aam", "seed": 1, "EER": 0.04, "minDCF": 0.4, "n_trials": 100},
           {"variant": "default", "seed": 1, "EER": 0.03, "minDCF": 0.45, "n_trials": 100}]
    merged = ablation.include_runs(now, [str(earlier)], ["aam", "default"])
    got = sorted((r["variant"], r["seed"], r["EER"]) for r in merged)
    assert got == [("aam", 1, 0.04), ("aam", 2, 0.06), ("aam", 3, 0.07),
                   ("default", 1, 0.03), ("default", 2, 0.05)]
    assert all(r["included"] == str(earlier) for r in merged if r["seed"] > 1)
    by = {v: {r["seed"]: r["EER"] for r in merged if r["variant"] == v} for v in ("aam", "default")}
    d = ablation.paired_difference(by["default"], by["aam"])
    # two pairs: (0.03 - 0.04) and (0.05 - 0.06); seed 3 has no default run
    assert d["n"] == 2 and d["mean"] == pytest.approx(-0.01)
    assert d["ratio"] == pytest.approx((0.03 + 0.05) / (0.04 + 0.06))

    # Runs scored on another trial list are refused, naming the file.
    other = tmp_path / "other.csv"
    other.write_text("variant,seed,EER,n_trials\ndefault,9,0.1,99\n", encoding="utf-8")
    with pytest.raises(ValueError, match="other.csv.*not the same trial list"):
        ablation.include_runs(now, [str(other)], ["aam", "default"])


def test_override_reaches_the_pinned_reference_but_not_what_defines_a_variant():
    # --override label_noise=0.2 must reach AAM-softmax too (its pinned 0.0 is only a pin),
    # while AAM-softmax's own contrastive_weight: 0 stays whatever --override says.
    extra = {"label_noise": 0.2, "contrastive_weight": 0.3, "positive_views": 2}
    aam = ablation.variant_overrides(ablation.VARIANTS["aam"][1], extra)
    assert aam["label_noise"] == 0.2 and aam["positive_views"] == 2
    assert aam["contrastive_weight"] == 0.0 and aam["attention_temperature"] is None
    no_caa = ablation.variant_overrides(ablation.VARIANTS["default_no_caa"][1], extra)
    assert no_caa == {"label_noise": 0.2, "contrastive_weight": 0.3, "positive_views": 2,
                      "attention_temperature": None}
    views = ablation.variant_overrides(ablation.VARIANTS["aam_views"][1], {"positive_views": 1})
    assert views["positive_views"] == 2  # the variant's two views define it
    assert ablation.variant_overrides(ablation.VARIANTS["aam"][1], {}) == ablation.VARIANTS["aam"][1]
