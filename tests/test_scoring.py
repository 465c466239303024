"""Tests for sb_angcl.scoring: embedding tables, cosine scoring, AS-norm, EER/minDCF, tables, plots.

Oracles: SpeechBrain's own ``EER`` / ``minDCF`` (O(N^2)), and brute-force
float64 per-trial loops for cosine and AS-norm.
"""

import sys

import numpy as np
import pytest
import torch
from speechbrain.utils.metric_stats import EER, minDCF

from sb_angcl.scoring import (
    ASNorm,
    EmbeddingTable,
    as_norm,
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    det_curve,
    metrics_table,
    plot_det,
    plot_score_histogram,
    score_trials,
    speaker_cohort,
    write_scores,
)


def _table(prefix, n, dim, rng):
    return EmbeddingTable([f"{prefix}{i}" for i in range(n)], rng.normal(size=(n, dim)))


# ----------------------------------------------------------------- EER/minDCF
def _score_set(seed):
    """Random target/non-target scores; most sets are rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    n_pos = int(rng.integers(1, 80))
    n_neg = n_pos if seed % 4 == 0 else int(rng.integers(1, 300))
    pos, neg = rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)
    if seed % 3 == 0:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    elif seed % 3 == 1:
        pos, neg = np.round(pos * 2) / 2, np.round(neg * 2) / 2
    return torch.tensor(pos, dtype=torch.float32), torch.tensor(
        neg, dtype=torch.float32
    )


def _sb_check(pos, neg):
    scores = torch.cat([pos, neg]).numpy()
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    perm = np.random.default_rng(len(scores)).permutation(len(scores))
    scores, labels = scores[perm], labels[perm]

    sb_eer, sb_th = EER(pos, neg)
    eer, th = compute_eer(scores, labels)
    assert eer == pytest.approx(sb_eer, abs=1e-4)
    assert th == pytest.approx(sb_th, abs=1e-6)

    for p, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.2, 2, 1), (0.5, 1, 3)]:
        sb_dcf, sb_dcf_th = minDCF(pos, neg, c_miss, c_fa, p)
        dcf, dcf_th = compute_min_dcf(scores, labels.astype(int), p, c_miss, c_fa)
        assert dcf == pytest.approx(sb_dcf / min(c_miss * p, c_fa * (1 - p)), abs=1e-4)
        assert dcf_th == pytest.approx(sb_dcf_th, abs=1e-6)


@pytest.mark.parametrize("seed", range(24))
def test_eer_min_dcf_equal_speechbrain(seed):
    _sb_check(*_score_set(seed))


def test_eer_min_dcf_equal_speechbrain_heavy_ties():
    # Scores on a grid of 13 values: nearly every score ties with another.
    # (A seeded loop rather than hypothesis: hypothesis' pytest plugin walks
    # sys.modules and trips over SpeechBrain's lazy optional modules.)
    rng = np.random.default_rng(123)
    for _ in range(60):
        n_pos, n_neg = rng.integers(1, 26, size=2)
        pos = torch.tensor(rng.integers(-6, 7, n_pos), dtype=torch.float32) / 4
        neg = torch.tensor(rng.integers(-6, 7, n_neg), dtype=torch.float32) / 4
        _sb_check(pos, neg)


def test_eer_min_dcf_larger_set_and_invariances():
    rng = np.random.default_rng(5)
    pos = torch.tensor(np.round(rng.normal(2, 1, 400), 2), dtype=torch.float32)
    neg = torch.tensor(np.round(rng.normal(0, 1, 1600), 2), dtype=torch.float32)
    _sb_check(pos, neg)
    scores = torch.cat([pos, neg]).double().numpy()
    labels = np.r_[np.ones(400), np.zeros(1600)]
    eer, _ = compute_eer(scores, labels)
    # A strictly increasing transform keeps every operating point.
    eer2, _ = compute_eer(np.exp(scores), labels)
    assert eer2 == pytest.approx(eer, abs=1e-12)
    # Accepting exactly "score > threshold" reproduces the reported rates.
    dcf, th = compute_min_dcf(scores, labels, 0.01)
    p_miss = np.mean(scores[labels == 1] <= th)
    p_fa = np.mean(scores[labels == 0] > th)
    assert dcf == pytest.approx((0.01 * p_miss + 0.99 * p_fa) / 0.01, abs=1e-9)


def test_eer_hand_computed():
    # Targets 0.9, 0.4; non-targets 0.5, 0.1, 0.0 -> at threshold 0.4: miss 1/2, fa 1/3.
    eer, th = compute_eer([0.9, 0.4, 0.5, 0.1, 0.0], [1, 1, 0, 0, 0])
    assert eer == pytest.approx((0.5 + 1 / 3) / 2)
    assert th == pytest.approx(0.4)
    assert compute_eer([3, 2, 1, 0], [True, True, False, False]) == (0.0, 1.0)


def test_min_dcf_accept_all_and_normalisation():
    # p_target 0.9: the best real threshold costs 0.45 but accepting every
    # trial costs 0.1 (= the normaliser), so the normalised minDCF is 1.
    dcf, th = compute_min_dcf([0.0, 1.0, 2.0], [1, 0, 1], p_target=0.9)
    assert dcf == pytest.approx(1.0) and th == float("-inf")
    dcf, th = compute_min_dcf([0.0, 1.0, 2.0], [1, 0, 1], p_target=0.5)
    assert dcf == pytest.approx(0.5 * 0.5 / 0.5) and th == 1.0
    perfect, _ = compute_min_dcf([1.0, 2.0, 0.0], [1, 1, 0])
    assert perfect == 0.0


def test_det_curve_monotone_and_grouped_ties():
    th, p_miss, p_fa = det_curve([0.1, 0.4, 0.4, 0.4, 0.8], [0, 1, 0, 1, 1])
    assert th.tolist() == [0.1, 0.4, 0.8]
    assert p_miss.tolist() == [0.0, 2 / 3, 1.0]
    assert p_fa.tolist() == [0.5, 0.0, 0.0]


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 2], "0/1"),
        ([0.1, 0.2, 0.3], [1, 0], "labels"),
    ],
)
def test_metric_input_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        compute_min_dcf(scores, labels)


# --------------------------------------------------------------------- cosine
def _loop_cosine(enrol, test, enrol_ids, test_ids, mean=None):
    out = []
    for e, t in zip(enrol_ids, test_ids):
        a = enrol[e].astype(np.float64)
        b = test[t].astype(np.float64)
        if mean is not None:
            a, b = a - mean, b - mean
        out.append(float(a @ b / np.sqrt((a @ a) * (b @ b))))
    return np.array(out)


@pytest.mark.parametrize("method", ["auto", "dense", "gather"])
@pytest.mark.parametrize("layout", ["cross", "sparse"])
def test_cosine_scores_equal_python_loop(method, layout):
    rng = np.random.default_rng(1)
    enrol, test = _table("e", 12, 16, rng), _table("t", 40, 16, rng)
    if layout == "cross":  # CN-Celeb style: (nearly) every model against every test
        pairs = [(e, t) for e in enrol.ids for t in test.ids][::2]
    else:  # VoxCeleb style
        pairs = [
            (enrol.ids[i], test.ids[j])
            for i, j in rng.integers(0, [12, 40], size=(50, 2))
        ]
    rng.shuffle(pairs)
    e_ids, t_ids = [p[0] for p in pairs], [p[1] for p in pairs]
    mean = rng.normal(size=16).astype(np.float32) * 0.3
    for m in (None, mean):
        # Small chunk_size forces several blocks on every path.
        for chunk in (64, 1 << 20):
            got = cosine_scores(
                enrol, test, e_ids, t_ids, chunk_size=chunk, mean=m, method=method
            )
            ref = _loop_cosine(enrol, test, e_ids, t_ids, m)
            assert got.dtype == np.float64 and got.shape == (len(pairs),)
            np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_cosine_same_table_and_bad_method():
    rng = np.random.default_rng(2)
    t = _table("u", 5, 4, rng)
    got = cosine_scores(t, t, ["u0", "u3"], ["u0", "u1"])
    assert got[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="method"):
        cosine_scores(t, t, ["u0"], ["u1"], method="fast")
    with pytest.raises(ValueError, match="ragged"):
        cosine_scores(t, t, ["u0", "u1"], ["u1"])


def test_unknown_id_raises_key_error_naming_it():
    rng = np.random.default_rng(3)
    t = _table("u", 5, 4, rng)
    with pytest.raises(KeyError, match=r"1 unknown id.*ghost_utt"):
        cosine_scores(t, t, ["u0", "u1", "u2"], ["u1", "ghost_utt", "ghost_utt"])
    with pytest.raises(KeyError, match=r"2 unknown id.*'a'.*'b'"):
        t.indices(["a", "u0", "b", "a"])


# -------------------------------------------------------------------- AS-norm
def _loop_as_norm(scores, enrol, test, enrol_ids, test_ids, cohort, top_k, mean=None):
    C = cohort.vectors.astype(np.float64)
    if mean is not None:
        C = C - mean
    C = C / np.linalg.norm(C, axis=1, keepdims=True)

    def stats(v):
        v = v.astype(np.float64)
        if mean is not None:
            v = v - mean
        v = v / np.linalg.norm(v)
        top = np.sort(C @ v)[::-1][:top_k]
        return top.mean(), top.std(ddof=1)

    out = []
    for s, e, t in zip(scores, enrol_ids, test_ids):
        mu_e, sd_e = stats(enrol[e])
        mu_t, sd_t = stats(test[t])
        out.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    return np.array(out)


@pytest.mark.parametrize("use_mean", [False, True])
def test_as_norm_equals_per_trial_reference(use_mean):
    rng = np.random.default_rng(4)
    enrol, test = _table("e", 7, 12, rng), _table("t", 30, 12, rng)
    cohort = _table("c", 50, 12, rng)
    idx = rng.integers(0, [7, 30], size=(120, 2))
    e_ids = [enrol.ids[i] for i in idx[:, 0]]
    t_ids = [test.ids[j] for j in idx[:, 1]]
    mean = rng.normal(size=12).astype(np.float32) * 0.2 if use_mean else None
    raw = cosine_scores(enrol, test, e_ids, t_ids, mean=mean)
    ref = _loop_as_norm(raw, enrol, test, e_ids, t_ids, cohort, 10, mean)

    got = as_norm(raw, e_ids, t_ids, enrol, test, cohort, top_k=10, mean=mean)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # Tiny chunks (several cohort blocks) and the one-pass entry point agree.
    got_chunked = ASNorm(cohort, top_k=10, chunk_size=100)(
        raw, enrol, test, e_ids, t_ids, mean=mean
    )
    np.testing.assert_allclose(got_chunked, ref, atol=1e-5, rtol=0)
    got_once = score_trials(
        enrol, test, e_ids, t_ids, cohort=cohort, top_k=10, mean=mean
    )
    np.testing.assert_allclose(got_once, ref, atol=1e-5, rtol=0)
    # Normalisation changes the scores (the test could fail).
    assert np.abs(got - raw).max() > 0.1


def test_as_norm_top_k_checks(caplog):
    rng = np.random.default_rng(6)
    cohort = _table("c", 5, 4, rng)
    with pytest.raises(ValueError, match="top_k"):
        ASNorm(cohort, top_k=1)
    with caplog.at_level("WARNING"):
        norm = ASNorm(cohort, top_k=300)
    assert norm.top_k == 5 and "exceeds the cohort size" in caplog.text
    with pytest.raises(ValueError, match="scores for"):
        norm([0.1, 0.2], cohort, cohort, ["c0"], ["c1"])


def test_speaker_cohort():
    rng = np.random.default_rng(7)
    table = _table("u", 9, 6, rng)
    spk = {u: f"s{int(u[1:]) % 3}" for u in table.ids}
    expected = []
    for s in ["s0", "s1", "s2"]:
        rows = np.stack(
            [table[u] / np.linalg.norm(table[u]) for u in table.ids if spk[u] == s]
        )
        m = rows.astype(np.float64).mean(0)
        expected.append(m / np.linalg.norm(m))
    for how in (spk, lambda u: spk[u], [spk[u] for u in table.ids]):
        cohort = speaker_cohort(table, how)
        assert cohort.ids == ["s0", "s1", "s2"]
        np.testing.assert_allclose(cohort.vectors, np.stack(expected), atol=1e-6)
    # A mapping may cover only part of the table.
    part = speaker_cohort(table, {"u0": "a", "u1": "a"})
    assert part.ids == ["a"]
    with pytest.raises(ValueError, match="entries"):
        speaker_cohort(table, ["s0", "s1"])


# ------------------------------------------------------------ embedding table
def test_table_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    table = _table("spk/utt-", 6, 5, rng)
    prefix = tmp_path / "sub" / "emb"
    table.save(prefix)
    assert (tmp_path / "sub" / "emb.npy").is_file()
    assert (tmp_path / "sub" / "emb.ids.txt").read_text().splitlines() == table.ids
    back = EmbeddingTable.load(prefix)
    assert back.ids == table.ids
    assert back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, table.vectors)
    assert len(back) == 6 and "spk/utt-3" in back and "spk/utt-9" not in back

    (tmp_path / "sub" / "emb.ids.txt").write_text("only_one\n")
    with pytest.raises(ValueError, match="out of step"):
        EmbeddingTable.load(prefix)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        EmbeddingTable.load(tmp_path / "missing")


def test_table_construction_checks():
    with pytest.raises(ValueError, match="unique"):
        EmbeddingTable(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 ids but 3 vectors"):
        EmbeddingTable(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        EmbeddingTable(["a"], np.zeros(3))
    t = EmbeddingTable.from_dict({"x": torch.ones(1, 1, 3), "y": np.zeros(3)})
    assert t.vectors.shape == (2, 3) and t.vectors.dtype == np.float32


def test_table_mean_normalized_subtract_average():
    rng = np.random.default_rng(9)
    t = _table("u", 6, 4, rng)
    np.testing.assert_allclose(
        t.mean(), t.vectors.astype(np.float64).mean(0), atol=1e-6
    )
    np.testing.assert_allclose(
        np.linalg.norm(t.normalized().vectors, axis=1), 1.0, atol=1e-6
    )
    np.testing.assert_allclose(
        t.subtract_mean(t.mean()).vectors.mean(0), 0.0, atol=1e-6
    )

    groups = {"m1": ["u0", "u2", "u5"], "m2": ["u1"], "m3": ["u3", "u4"]}
    avg = t.average(groups)
    assert avg.ids == ["m1", "m2", "m3"]
    for m, utts in groups.items():
        np.testing.assert_allclose(
            avg[m], np.mean([t[u] for u in utts], axis=0), atol=1e-6
        )
    avg_n = EmbeddingTable.average(t, groups, normalize=True)
    np.testing.assert_allclose(
        avg_n["m3"],
        np.mean([t[u] / np.linalg.norm(t[u]) for u in groups["m3"]], axis=0),
        atol=1e-6,
    )
    with pytest.raises(KeyError, match="nobody"):
        t.average({"m": ["u0", "nobody"]})
    with pytest.raises(ValueError, match="no utterances"):
        t.average({"m": []})


# ---------------------------------------------------------- tables and files
def test_metrics_table_per_condition():
    rng = np.random.default_rng(10)
    n = 600
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.5 * labels
    genre = rng.choice(["drama", "interview", "singing"], size=n)
    genre[:5] = "solo"
    labels[:5] = True  # "solo": targets only -> NaN metrics
    df = metrics_table(scores, labels, {"genre": genre})
    assert list(df.columns) == [
        "condition",
        "value",
        "n_trials",
        "n_target",
        "EER",
        "minDCF",
    ]
    assert df.iloc[0][["condition", "value", "n_trials", "n_target"]].tolist() == [
        "all",
        "all",
        n,
        labels.sum(),
    ]
    assert df.iloc[0]["EER"] == pytest.approx(compute_eer(scores, labels)[0])
    assert df.iloc[0]["minDCF"] == pytest.approx(compute_min_dcf(scores, labels)[0])
    per = df[df.condition == "genre"].set_index("value")
    assert sorted(per.index) == ["drama", "interview", "singing", "solo"]
    assert per.n_trials.sum() == n
    for g in ["drama", "interview", "singing"]:
        m = genre == g
        assert per.loc[g, "EER"] == pytest.approx(compute_eer(scores[m], labels[m])[0])
        assert per.loc[g, "minDCF"] == pytest.approx(
            compute_min_dcf(scores[m], labels[m])[0]
        )
    assert np.isnan(per.loc["solo", "EER"]) and per.loc["solo", "n_target"] == 5
    with pytest.raises(ValueError, match="labels for"):
        metrics_table(scores, labels, {"bad": genre[:10]})


def test_write_scores(tmp_path):
    path = tmp_path / "out" / "scores.txt"
    write_scores(
        path,
        ["e1", "e2", "e2"],
        ["t1", "t1", "t9"],
        np.array([0.5, -1.25, 0.123456789]),
        [1, 0, True],
    )
    lines = [ln.split() for ln in path.read_text().splitlines()]
    assert lines == [
        ["e1", "t1", "0.500000", "1"],
        ["e2", "t1", "-1.250000", "0"],
        ["e2", "t9", "0.123457", "1"],
    ]
    write_scores(path, ["e1"], ["t1"], [0.25])
    assert path.read_text() == "e1 t1 0.250000\n"
    with pytest.raises(ValueError):
        write_scores(path, ["e1", "e2"], ["t1", "t2"], [0.25])


# --------------------------------------------------------------------- plots
def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(11)
    labels = np.arange(6000) < 1000
    scores = (
        rng.normal(size=6000) + 2.0 * labels
    )  # > 4000 thresholds: exercises thinning
    for fn, name in ((plot_det, "det.png"), (plot_score_histogram, "hist.png")):
        path = tmp_path / "plots" / name
        fn(scores, labels, path)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plots_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    for fn in (plot_det, plot_score_histogram):
        with pytest.raises(ImportError, match=r"pip install sb-angcl\[plot\]"):
            fn([0.1, 0.9], [0, 1], tmp_path / "x.png")
