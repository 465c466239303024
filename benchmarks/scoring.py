#!/usr/bin/env python3
"""Benchmark: scoring a CN-Celeb-sized evaluation with cosine + AS-norm, and EER/minDCF.

Random 192-dim embeddings stand in for a CN-Celeb1 evaluation (200 enrolment
models, 17,777 test utterances, 3,484,292 trials, a 2,800-speaker AS-norm cohort,
top-k 300). The script times

(a) ``sb_angcl.evaluation.scoring`` and ``sb_angcl.evaluation.metrics``: id mapping, cosine scoring and AS-norm of every trial,
    then EER and minDCF of all 3.5M scores;
(b) a per-trial loop in the style of SpeechBrain's
    ``recipes/VoxCeleb/SpeakerRec/speaker_verification_cosine.py`` (cosine of the
    two embeddings with ``torch.nn.CosineSimilarity`` and s-norm statistics
    recomputed against the cohort for every trial), run on a random subsample of
    trials and extrapolated linearly to all trials;
(c) our ``compute_eer`` + ``compute_min_dcf`` against SpeechBrain's ``EER`` +
    ``minDCF`` on 100,000 scores (SpeechBrain's ``minDCF`` builds a
    thresholds x scores matrix, so it is timed on a subsample and extrapolated
    quadratically).

It prints a table, the peak resident memory, and ends with the line
``ratio <loop time / our time>`` for the full scoring (a vs b). The rows
"(a) parts" time the steps of (a) one by one (id mapping, cosine of the
trials, the cohort products and the top-k selection of AS-norm), so that the
table says where the time of (a) goes.

Usage::

    python benchmarks/scoring.py            # full CN-Celeb size
    python benchmarks/scoring.py --quick    # small sizes, a few seconds
    python benchmarks/scoring.py --output benchmarks/results/scoring.md
"""

import argparse
import resource
import sys
import time

import numpy as np
import torch
from bench_report import recorded  # benchmarks/ is this script's folder

from sb_angcl.evaluation.metrics import compute_eer, compute_min_dcf
from sb_angcl.evaluation.scoring import (
    EmbeddingTable,
    _cosine,
    _l2_normalize,
    _used_rows,
    score_trials,
    speaker_cohort,
)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(args, rng):
    """Random speaker-structured embeddings and a CN-Celeb-like trial list."""
    d = args.dim
    centres = rng.normal(size=(args.n_enrol, d)).astype(np.float32)
    enrol = EmbeddingTable(
        [f"id{k:05d}-enroll" for k in range(args.n_enrol)],
        centres + 1.5 * rng.normal(size=(args.n_enrol, d)).astype(np.float32),
    )
    spk_of_test = rng.integers(0, args.n_enrol, args.n_test)
    test_vecs = centres[spk_of_test] + 2.5 * rng.normal(size=(args.n_test, d)).astype(
        np.float32
    )
    test = EmbeddingTable(
        [f"id{s:05d}/genre-{k:06d}.wav" for k, s in enumerate(spk_of_test)], test_vecs
    )
    # Cohort: n_cohort training speakers x 3 utterances, averaged per speaker.
    coh_centres = rng.normal(size=(args.n_cohort, d)).astype(np.float32)
    coh_spk = np.repeat(np.arange(args.n_cohort), 3)
    coh_utts = EmbeddingTable(
        [f"train{s:05d}/{k}" for k, s in enumerate(coh_spk)],
        coh_centres[coh_spk]
        + 1.0 * rng.normal(size=(len(coh_spk), d)).astype(np.float32),
    )
    # Trials: the full enrol x test cross product, less a random remainder, as
    # the official CN-Celeb1 list is (3,484,292 of 3,555,400 pairs).
    n_all = args.n_enrol * args.n_test
    n_trials = min(args.n_trials, n_all)
    keep = np.sort(rng.choice(n_all, size=n_trials, replace=False))
    e_idx, t_idx = keep // args.n_test, keep % args.n_test
    enrol_ids = [enrol.ids[i] for i in e_idx]
    test_ids = [test.ids[j] for j in t_idx]
    labels = spk_of_test[t_idx] == e_idx
    return enrol, test, coh_utts, coh_spk, enrol_ids, test_ids, labels


def recipe_style_loop(enrol, test, cohort, enrol_ids, test_ids, top_k):
    """Per-trial cosine + s-norm written the way the upstream recipe scores trials."""
    enrol_dict = {i: torch.from_numpy(enrol[i]).unsqueeze(0) for i in set(enrol_ids)}
    test_dict = {i: torch.from_numpy(test[i]).unsqueeze(0) for i in set(test_ids)}
    train_cohort = torch.from_numpy(cohort.vectors).unsqueeze(1)  # (n_cohort, 1, dim)
    similarity = torch.nn.CosineSimilarity(dim=-1, eps=1e-6)
    out = []
    for e_id, t_id in zip(enrol_ids, test_ids):
        e, t = enrol_dict[e_id], test_dict[t_id]
        s_e = similarity(e.repeat(train_cohort.shape[0], 1, 1), train_cohort)
        s_e = torch.topk(s_e, k=top_k, dim=0)[0]
        mu_e, sd_e = s_e.mean(dim=0), s_e.std(dim=0)
        s_t = similarity(t.repeat(train_cohort.shape[0], 1, 1), train_cohort)
        s_t = torch.topk(s_t, k=top_k, dim=0)[0]
        mu_t, sd_t = s_t.mean(dim=0), s_t.std(dim=0)
        score = similarity(e, t)[0]
        out.append(float(0.5 * ((score - mu_e) / sd_e + (score - mu_t) / sd_t)))
    return np.array(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--n-enrol", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=17777)
    parser.add_argument("--n-trials", type=int, default=3484292)
    parser.add_argument("--n-cohort", type=int, default=2800)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--top-k", type=int, default=300)
    parser.add_argument(
        "--loop-trials",
        type=int,
        default=2000,
        help="trials timed in the per-trial loop (then extrapolated)",
    )
    parser.add_argument("--metric-scores", type=int, default=100000)
    parser.add_argument(
        "--sb-eer-scores",
        type=int,
        default=100000,
        help="scores given to SpeechBrain's EER (extrapolated if fewer)",
    )
    parser.add_argument(
        "--sb-dcf-scores",
        type=int,
        default=6000,
        help="scores given to SpeechBrain's minDCF (O(N^2) memory)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each step of (a); the table gives the median")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default=None, metavar="FILE.md",
                        help="also write the printed output, under a header with the command, "
                        "commit, CPU, nproc, threads, load average and date (bench_report.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_enrol, args.n_test, args.n_trials = 20, 1000, 19000
        args.n_cohort, args.top_k, args.loop_trials = 300, 50, 300
        args.metric_scores, args.sb_eer_scores, args.sb_dcf_scores = 10000, 4000, 2000
    if args.threads:
        torch.set_num_threads(args.threads)
    with recorded(args.output, __file__, argv):
        return run(args)


def median_time(fn, repeats):
    """Median wall seconds of ``repeats`` calls of ``fn``, and its last result."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def time_parts(enrol, test, cohort, enrol_ids, test_ids, top_k):
    """Seconds of each step of ``score_trials`` with AS-norm, run one by one.

    The same steps as :func:`sb_angcl.evaluation.scoring.score_trials` (which runs the
    cohort part in blocks of rows and selects with several threads), here
    whole and timed apart.
    """
    parts = {}
    t0 = time.perf_counter()
    ei, ti = enrol.indices(enrol_ids), test.indices(test_ids)
    parts["id mapping (2 x trials)"] = time.perf_counter() - t0
    E = torch.from_numpy(_l2_normalize(enrol.vectors))
    T = torch.from_numpy(_l2_normalize(test.vectors))
    C = torch.from_numpy(_l2_normalize(cohort.vectors))
    t0 = time.perf_counter()
    _cosine(E, T, ei, ti, 2**24, "auto", False)
    parts["cosine of the trials"] = time.perf_counter() - t0
    rows = torch.cat([E[_used_rows(ei, len(E))[0]], T[_used_rows(ti, len(T))[0]]])
    t0 = time.perf_counter()
    S = (rows @ C.T).numpy()
    parts[f"cohort products ({len(rows)} x {len(C)})"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    S.partition(S.shape[1] - top_k, axis=1)
    parts[f"top-{top_k} selection (1 thread)"] = time.perf_counter() - t0
    return parts


def run(args):
    """Time (a), (b), (c) and print the table; return loop time / our time."""
    rng = np.random.default_rng(args.seed)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {sys.version.split()[0]}"
    )
    enrol, test, coh_utts, coh_spk, enrol_ids, test_ids, labels = make_data(args, rng)
    n = len(enrol_ids)
    rss_data = peak_rss_mb()
    rows = []

    # (a) ours -----------------------------------------------------------------
    t0 = time.perf_counter()
    cohort = speaker_cohort(coh_utts, [f"spk{s}" for s in coh_spk])
    t_cohort = time.perf_counter() - t0
    rows.append(
        (
            "cohort: speaker-averaged",
            f"{len(coh_utts)} utts -> {len(cohort)} spk",
            t_cohort,
            "",
        )
    )

    t_cos, _ = median_time(
        lambda: score_trials(enrol, test, enrol_ids, test_ids, progress=False), args.repeats
    )
    rows.append(("ours: cosine only", f"{n} trials", t_cos, f"median of {args.repeats}"))

    t_ours, scores = median_time(
        lambda: score_trials(
            enrol, test, enrol_ids, test_ids, cohort=cohort, top_k=args.top_k, progress=False
        ),
        args.repeats,
    )
    rows.append(
        ("(a) ours: cosine + AS-norm", f"{n} trials", t_ours,
         f"ids mapped, all trials; median of {args.repeats}")
    )
    parts = [time_parts(enrol, test, cohort, enrol_ids, test_ids, args.top_k)
             for _ in range(max(1, args.repeats))]
    for name in parts[0]:
        sec = float(np.median([p[name] for p in parts]))
        rows.append(("(a) part: " + name, "", sec, f"timed alone; median of {args.repeats}"))

    t0 = time.perf_counter()
    eer, _ = compute_eer(scores, labels)
    dcf, _ = compute_min_dcf(scores, labels, p_target=0.01)
    t_metrics_all = time.perf_counter() - t0
    rows.append(
        (
            "ours: EER + minDCF",
            f"{n} scores",
            t_metrics_all,
            f"EER {100 * eer:.2f}%, minDCF {dcf:.4f}",
        )
    )
    rss_ours = peak_rss_mb()

    # (b) per-trial loop --------------------------------------------------------
    sub = np.sort(rng.choice(n, size=min(args.loop_trials, n), replace=False))
    sub_e = [enrol_ids[i] for i in sub]
    sub_t = [test_ids[i] for i in sub]
    # One thread and a short warm-up: the loop's many tiny ops only lose from
    # intra-op threading on a shared machine, so this is its best case.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    recipe_style_loop(enrol, test, cohort, sub_e[:20], sub_t[:20], args.top_k)
    t0 = time.perf_counter()
    loop_scores = recipe_style_loop(enrol, test, cohort, sub_e, sub_t, args.top_k)
    t_loop_sub = time.perf_counter() - t0
    torch.set_num_threads(threads)
    t_loop = t_loop_sub / len(sub) * n
    max_diff = float(np.abs(loop_scores - scores[sub]).max())
    rows.append(
        (
            "(b) per-trial loop (recipe style)",
            f"{len(sub)} trials",
            t_loop_sub,
            f"1 thread, warmed up; max |diff| vs ours {max_diff:.1e}",
        )
    )
    rows.append(
        (
            "(b) ... extrapolated to all trials",
            f"{n} trials",
            t_loop,
            "EXTRAPOLATED linearly",
        )
    )

    # (c) metrics vs SpeechBrain ---------------------------------------------------
    from speechbrain.utils.metric_stats import EER, minDCF

    m = min(args.metric_scores, n)
    tar = np.flatnonzero(labels)
    pick = np.sort(
        np.concatenate(
            [
                rng.choice(tar, size=max(1, m * len(tar) // n), replace=False),
                rng.choice(
                    np.flatnonzero(~labels),
                    size=m - max(1, m * len(tar) // n),
                    replace=False,
                ),
            ]
        )
    )
    s_m = scores[pick].astype(np.float32)
    l_m = labels[pick]
    t0 = time.perf_counter()
    compute_eer(s_m, l_m)
    compute_min_dcf(s_m, l_m, p_target=0.01)
    t_ours_m = time.perf_counter() - t0
    rows.append(("(c) ours: EER + minDCF", f"{m} scores", t_ours_m, ""))

    def sb_subset(k):
        idx = np.sort(rng.choice(m, size=min(k, m), replace=False))
        if not l_m[idx].any():  # keep at least one target
            idx[0] = np.flatnonzero(l_m)[0]
        s, lab = torch.from_numpy(s_m[idx]), torch.from_numpy(l_m[idx])
        return s[lab], s[~lab], len(idx)

    pos, neg, k_eer = sb_subset(args.sb_eer_scores)
    t0 = time.perf_counter()
    sb_eer, _ = EER(pos, neg)
    t_sb_eer = time.perf_counter() - t0
    ours_eer_k, _ = compute_eer(
        torch.cat([pos, neg]).numpy(), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    )
    note = f"EER {100 * sb_eer:.3f}% (ours {100 * ours_eer_k:.3f}%)"
    if k_eer < m:
        t_sb_eer_m = t_sb_eer * (m / k_eer) ** 2
        rows.append(("(c) SpeechBrain EER", f"{k_eer} scores", t_sb_eer, note))
        rows.append(
            ("(c) ... extrapolated (N^2)", f"{m} scores", t_sb_eer_m, "EXTRAPOLATED")
        )
    else:
        t_sb_eer_m = t_sb_eer
        rows.append(("(c) SpeechBrain EER", f"{m} scores", t_sb_eer, note))

    pos, neg, k_dcf = sb_subset(args.sb_dcf_scores)
    t0 = time.perf_counter()
    sb_dcf, _ = minDCF(pos, neg, 1.0, 1.0, 0.01)
    t_sb_dcf = time.perf_counter() - t0
    ours_dcf_k, _ = compute_min_dcf(
        torch.cat([pos, neg]).numpy(),
        np.r_[np.ones(len(pos)), np.zeros(len(neg))],
        0.01,
    )
    rows.append(
        (
            "(c) SpeechBrain minDCF",
            f"{k_dcf} scores",
            t_sb_dcf,
            f"minDCF/0.01 {sb_dcf / 0.01:.4f} (ours {ours_dcf_k:.4f})",
        )
    )
    t_sb_dcf_m = t_sb_dcf * (m / k_dcf) ** 2
    gb = (2 * m) * m * 5 / 1e9  # thresholds x scores, float32 copy + bool mask
    rows.append(
        (
            "(c) ... extrapolated (N^2)",
            f"{m} scores",
            t_sb_dcf_m,
            f"EXTRAPOLATED; would need ~{gb:.0f} GB",
        )
    )
    t_sb_metrics = t_sb_eer_m + t_sb_dcf_m

    # report ---------------------------------------------------------------------
    print()
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}} {'size':>26} {'time [s]':>12}  note")
    print("-" * (width + 62))
    for name, size, sec, note in rows:
        print(f"{name:<{width}} {size:>26} {sec:>12.3f}  {note}")
    print("-" * (width + 62))
    print(f"peak RSS after data generation      {rss_data:10.0f} MiB")
    print(
        f"peak RSS after our scoring (a)      {rss_ours:10.0f} MiB  "
        f"(+{rss_ours - rss_data:.0f} MiB for scoring)"
    )
    print(f"peak RSS at end (incl. SB runs)     {peak_rss_mb():10.0f} MiB")
    print(
        f"full scoring speed-up, loop / ours  {t_loop / t_ours:10.1f} x "
        f"(loop time extrapolated from {len(sub)} trials)"
    )
    print(
        f"metrics speed-up on {m} scores, SB / ours {t_sb_metrics / t_ours_m:10.1f} x"
        f" (SB time partly extrapolated, see table)"
    )
    print(f"ratio {t_loop / t_ours:.1f}")
    return t_loop / t_ours


if __name__ == "__main__":
    main()
