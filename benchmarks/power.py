#!/usr/bin/env python3
"""How many paired seeds a comparison needs: paired spread, interval and detectable difference.

Reads the per-run CSVs that ``benchmarks/ablation.py --csv`` writes and, for a
system and its reference paired by seed, gives per metric (the whole list and
every trial subset the runs were scored on):

* the mean of each system and the paired difference with its 95 %
  t-interval;
* the standard deviation of the paired difference over seeds;
* the minimal detectable difference (MDD) at 80 % power and a two-sided 5 %
  test with the pairs at hand, ``(t_0.975 + t_0.80) * sd / sqrt(n)``, also as a
  percentage of the reference's mean;
* the pairs needed to detect a 10 % difference at that power (normal
  approximation, ``((1.96 + 0.84) * sd / (0.1 * mean))^2``).

Scoring the same trained models on trial lists of different sizes (subsets
of one list, as ``ablation.py`` reports them) separates the spread that
comes from the trial list from the spread that comes from training: the part
of the paired variance that shrinks with more trials is the list's.

Usage::

    python benchmarks/power.py RUNS.csv [MORE.csv ...] --system default_views \\
        --reference aam_views --output benchmarks/results/power.md

``--compare SYSTEM/REFERENCE`` (repeatable) reports several pairs in one file;
``LABEL=PATH`` reads a CSV whose variants are then named ``LABEL:variant``.
The last line of the output is ``mdd <MDD of the first metric as % of the reference>``
(of the first pair).

Authors
 * sb-angcl contributors
"""

import argparse
import csv
import math
import os
import shlex
import statistics
import sys

#: z_0.975 + z_0.80: a two-sided 5 % test at 80 % power (normal approximation).
Z_SUM = 1.959964 + 0.841621


def t_quantile(p, dof):
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (SciPy's).

    Example
    -------
    >>> round(t_quantile(0.975, 9), 3), round(t_quantile(0.8, 9), 3)
    (2.262, 0.883)
    """
    from scipy.stats import t

    return float(t.ppf(p, dof))


def read_runs(paths):
    """Rows of every CSV, a later file's run replacing an earlier one of the same variant and seed.

    A path written ``LABEL=PATH`` (and not itself a file) names its variants
    ``LABEL:variant``, so that sweeps with the same variant names (each with
    its own AAM-softmax reference) can be compared in one report.
    """
    runs = {}
    for item in paths:
        label, path = None, item
        if not os.path.isfile(item) and "=" in item:
            label, path = item.split("=", 1)
        with open(path, newline="", encoding="utf-8") as fin:
            for row in csv.DictReader(fin):
                variant = f"{label}:{row['variant']}" if label else row["variant"]
                runs[(variant, int(row["seed"]))] = row
    return runs


def metrics_of(runs):
    """``(column, label, scale)`` of every EER / minDCF column the runs carry, whole list first."""
    columns = list(next(iter(runs.values())).keys())
    out = [("EER", "EER %", 100.0), ("minDCF", "minDCF", 1.0)]
    for col in columns:
        if col.startswith("EER_subset="):
            name = col.split("=", 1)[1]
            out += [(col, f"EER % {name}", 100.0), (f"minDCF_subset={name}", f"minDCF {name}", 1.0)]
    return out


def paired_power(system, reference, scale=1.0):
    """Paired statistics of two equally long lists of values (same seeds, same order).

    Returns
    -------
    dict
        ``n, mean_ref, mean_sys, delta, ci_low, ci_high, sd, mdd, mdd_pct, pairs_10pct``.

    Example
    -------
    >>> p = paired_power([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 4.0])
    >>> p["n"], p["delta"], round(p["sd"], 3), p["pairs_10pct"]
    (4, -0.25, 0.289, 9)
    """
    n = len(system)
    diffs = [scale * (s - r) for s, r in zip(system, reference)]
    mean_ref = scale * statistics.fmean(reference)
    out = {"n": n, "mean_ref": mean_ref, "mean_sys": scale * statistics.fmean(system),
           "delta": statistics.fmean(diffs)}
    if n < 2:
        return dict(out, ci_low=math.nan, ci_high=math.nan, sd=math.nan, mdd=math.nan,
                    mdd_pct=math.nan, pairs_10pct=math.nan)
    sd = statistics.stdev(diffs)
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    mdd = (t_quantile(0.975, n - 1) + t_quantile(0.80, n - 1)) * sd / math.sqrt(n)
    target = 0.1 * abs(mean_ref)
    pairs = math.ceil((Z_SUM * sd / target) ** 2) if target > 0 else math.nan
    return dict(out, ci_low=out["delta"] - half, ci_high=out["delta"] + half, sd=sd, mdd=mdd,
                mdd_pct=100.0 * mdd / abs(mean_ref) if mean_ref else math.nan,
                pairs_10pct=pairs)


def report(runs, system, reference, command):
    """The Markdown table (one row per metric) and the final ``mdd`` line."""
    lines, first_mdd = comparison(runs, system, reference)
    lines = [f"# Paired power: `{system}` against `{reference}`", "", f"- Command: `{command}`"] + lines
    return "\n".join(lines + ["", f"mdd {first_mdd:.1f}"]) + "\n"


def report_many(runs, pairs, command):
    """One section per ``(system, reference)``; the final ``mdd`` line is the first pair's."""
    lines = ["# Paired power", "", f"- Command: `{command}`"]
    first_mdd = None
    for system, reference in pairs:
        section, mdd = comparison(runs, system, reference)
        lines += ["", f"## `{system}` against `{reference}`", ""] + section
        first_mdd = mdd if first_mdd is None else first_mdd
    return "\n".join(lines + ["", f"mdd {first_mdd:.1f}"]) + "\n"


def comparison(runs, system, reference):
    """``(lines, mdd %)`` of one pair: its seeds, the legend and the table (one row per metric)."""
    seeds = sorted({s for v, s in runs if v == system} & {s for v, s in runs if v == reference})
    if not seeds:
        raise SystemExit(f"no seed has runs of both {system!r} and {reference!r}")
    lines = [
        f"- Seeds paired: {len(seeds)} ({', '.join(map(str, seeds))})", "",
        "Δ = system − reference (mean over seeds, 95 % t-interval); sd: of the paired "
        "difference; MDD: the smallest true difference these pairs detect at 80 % power "
        "(two-sided 5 %), and as % of the reference; pairs for 10 %: to detect a 10 % "
        "difference at that power.", "",
        "| metric | trials | reference | system | ratio | Δ [95 % CI] | sd | MDD (% of ref.) "
        "| pairs for 10 % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    first_mdd = math.nan
    for column, label, scale in metrics_of(runs):
        try:
            sys_vals = [float(runs[(system, s)][column]) for s in seeds]
            ref_vals = [float(runs[(reference, s)][column]) for s in seeds]
        except (KeyError, ValueError):
            continue
        if any(math.isnan(v) for v in sys_vals + ref_vals):
            continue
        p = paired_power(sys_vals, ref_vals, scale)
        name = column.split("=", 1)[1] if "=" in column else None
        trials = runs[(system, seeds[0])].get(f"n_subset={name}" if name else "n_trials", "")
        digits = 2 if scale == 100.0 else 3
        ratio = p["mean_sys"] / p["mean_ref"] if p["mean_ref"] else math.nan
        lines.append(
            f"| {label} | {trials} | {p['mean_ref']:.{digits}f} | {p['mean_sys']:.{digits}f} | "
            f"{ratio:.3f} | {p['delta']:+.{digits}f} [{p['ci_low']:+.{digits}f}, "
            f"{p['ci_high']:+.{digits}f}] | {p['sd']:.{digits}f} | {p['mdd']:.{digits}f} "
            f"({p['mdd_pct']:.1f} %) | {p['pairs_10pct']} |"
        )
        if math.isnan(first_mdd):
            first_mdd = p["mdd_pct"]
    return lines, first_mdd


def main(argv=None):
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", help="per-run CSVs of benchmarks/ablation.py --csv "
                        "(LABEL=PATH: its variants are named LABEL:variant)")
    parser.add_argument("--system")
    parser.add_argument("--reference")
    parser.add_argument("--compare", action="append", default=[], metavar="SYSTEM/REFERENCE",
                        help="a pair to report (repeatable; instead of --system/--reference)")
    parser.add_argument("--output", default=None, help="Markdown file (default: print)")
    args = parser.parse_args(argv)
    if args.compare and (args.system or args.reference):
        parser.error("--compare replaces --system/--reference: give one or the other")
    if not args.compare and not (args.system and args.reference):
        parser.error("give --system and --reference, or --compare SYSTEM/REFERENCE (repeatable)")
    argv = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/power.py " + " ".join(shlex.quote(a) for a in argv)
    runs = read_runs(args.csv)
    if args.compare:
        text = report_many(runs, [tuple(pair.split("/", 1)) for pair in args.compare], command)
    else:
        text = report(runs, args.system, args.reference, command)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as fout:
            fout.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
