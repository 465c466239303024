"""Tests for sb_angcl.data.sampler.SpeakerBalancedBatchSampler."""

import logging
import math
from collections import Counter

import numpy as np
import pytest
import torch
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer

import sb_angcl.data.sampler as sampler_module
from sb_angcl.data.sampler import SpeakerBalancedBatchSampler


def make_labels(sizes, seed=0, as_str=True):
    """Labels for speakers with the given utterance counts, items interleaved."""
    labels = [
        (f"spk{s:03d}" if as_str else s) for s, n in enumerate(sizes) for _ in range(n)
    ]
    order = np.random.default_rng(seed).permutation(len(labels))
    return [labels[i] for i in order]


def check_batch(batch, labels, P, K):
    """Every batch: P*K indices, P distinct speakers, K each, grouped."""
    assert len(batch) == P * K
    spk = [labels[i] for i in batch]
    rows = [spk[j * K : (j + 1) * K] for j in range(P)]
    for row in rows:
        assert len(set(row)) == 1, f"group not from one speaker: {row}"
    firsts = [row[0] for row in rows]
    assert len(set(firsts)) == P, f"speaker repeated in batch: {firsts}"


def max_steps_oracle(sizes, K, G):
    """Largest T with sum(min(c, T)) >= G*T, by linear scan."""
    c = [math.ceil(n / K) for n in sizes]
    best = 0
    for T in range(1, sum(c) + 1):
        if sum(min(x, T) for x in c) >= G * T:
            best = T
    return best


IMBALANCED = [1, 2, 3, 5, 7, 8, 9, 12, 4, 6, 1, 15, 3, 10, 2, 11]


@pytest.mark.parametrize("P,K", [(4, 2), (3, 3), (5, 4), (16, 1)])
def test_batches_are_p_by_k_balanced(P, K):
    labels = make_labels(IMBALANCED, seed=1)
    sampler = SpeakerBalancedBatchSampler(labels, P, K, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        assert len(sampler) == max_steps_oracle(IMBALANCED, K, P)
        for batch in batches:
            assert all(isinstance(i, int) for i in batch)
            assert all(0 <= i < len(labels) for i in batch)
            check_batch(batch, labels, P, K)


def test_int_and_tensor_labels():
    sizes = [3, 4, 2, 5, 6]
    labels = make_labels(sizes, as_str=False)
    a = SpeakerBalancedBatchSampler(labels, 2, 2, seed=5)
    b = SpeakerBalancedBatchSampler(torch.tensor(labels), 2, 2, seed=5)
    assert list(a) == list(b)
    for batch in a:
        check_batch(batch, labels, 2, 2)


def test_determinism_by_seed_and_epoch():
    labels = make_labels(IMBALANCED, seed=2)
    s1 = SpeakerBalancedBatchSampler(labels, 4, 2, seed=11)
    s2 = SpeakerBalancedBatchSampler(labels, 4, 2, seed=11)
    s1.set_epoch(4)
    s2.set_epoch(4)
    first = list(s1)
    assert first == list(s1), "iterating twice in one epoch must repeat"
    assert first == list(s2), "fresh sampler, same (seed, epoch): same plan"
    assert s1.global_plan(epoch=4) == s2.global_plan(epoch=4)

    plans = set()
    for epoch in range(5):
        s1.set_epoch(epoch)
        plans.add(tuple(map(tuple, s1)))
        assert len(s1) == len(first), "len must not depend on the epoch"
    assert len(plans) == 5, "epochs must differ"

    s3 = SpeakerBalancedBatchSampler(labels, 4, 2, seed=12)
    s3.set_epoch(4)
    assert list(s3) != first, "seeds must differ"


def test_shuffle_false_is_fixed_and_valid():
    labels = make_labels(IMBALANCED, seed=3)
    sampler = SpeakerBalancedBatchSampler(labels, 4, 3, shuffle=False)
    sampler.set_epoch(0)
    plan0 = list(sampler)
    sampler.set_epoch(7)
    assert list(sampler) == plan0
    assert len(plan0) == max_steps_oracle(IMBALANCED, 3, 4)
    for batch in plan0:
        check_batch(batch, labels, 4, 3)


def test_coverage_when_nothing_is_dropped():
    # K=3, P=4: groups = 2+1+1+2+3+1+1+1+2+2 = 16 = 4 steps x 4 speakers.
    sizes = [6, 3, 1, 4, 9, 2, 3, 3, 5, 6]
    K, P = 3, 4
    labels = make_labels(sizes, seed=4)
    sampler = SpeakerBalancedBatchSampler(labels, P, K, seed=0)
    assert sampler.num_groups == 16
    assert sampler.num_dropped_groups == 0
    assert len(sampler) == 4
    by_speaker = {}
    for i, lab in enumerate(labels):
        by_speaker.setdefault(lab, []).append(i)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        uses = Counter(i for b in sampler for i in b)
        assert set(uses) == set(range(len(labels))), "every utterance used"
        for items in by_speaker.values():
            n = len(items)
            mult = sorted(uses[i] for i in items)
            assert sum(mult) == math.ceil(n / K) * K
            if n % K == 0:
                assert mult == [1] * n, "no top-up: exactly once"
            elif n >= K:
                twice = K - n % K
                assert mult == [1] * (n - twice) + [2] * twice
            else:
                assert set(mult) <= {K // n, -(-K // n)}


def test_coverage_bound_with_drops():
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 30, size=40).tolist()
    K, P = 2, 6
    labels = make_labels(sizes, seed=5)
    sampler = SpeakerBalancedBatchSampler(labels, P, K, seed=1)
    T = len(sampler)
    groups = [math.ceil(n / K) for n in sizes]
    assert max(groups) <= T  # no dominant speaker: drop < P groups
    assert 0 <= sampler.num_dropped_groups < P
    assert sampler.num_dropped_groups == sum(groups) - P * T
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        used = [i for b in batches for i in b]
        assert len(used) == K * (sampler.num_groups - sampler.num_dropped_groups)
        covered = len(set(used))
        assert covered >= len(labels) - K * sampler.num_dropped_groups
        # documented fraction: at most G / num_groups of the groups dropped
        assert sampler.num_dropped_groups / sampler.num_groups < P / sum(groups)


def test_dominant_speaker_is_capped():
    # One speaker with 40 utterances, 5 with 2: only 5 steps of 2 speakers fit
    # (the dominant speaker can appear once per step).
    sizes = [40, 2, 2, 2, 2, 2]
    labels = make_labels(sizes, seed=6)
    sampler = SpeakerBalancedBatchSampler(labels, 2, 2, seed=0)
    assert len(sampler) == max_steps_oracle(sizes, 2, 2) == 5
    assert sampler.num_dropped_groups == 25 - 10
    for batch in sampler:
        check_batch(batch, labels, 2, 2)
        assert "spk000" in {labels[i] for i in batch}


def test_single_utterance_speakers_repeat_k_times():
    sizes = [1, 1, 1, 2, 5, 1]
    K = 4
    labels = make_labels(sizes, seed=8)
    singles = {lab for lab, c in Counter(labels).items() if c == 1}
    sampler = SpeakerBalancedBatchSampler(labels, 3, K, seed=2)
    seen = Counter()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        for batch in sampler:
            check_batch(batch, labels, 3, K)
            for j in range(3):
                group = batch[j * K : (j + 1) * K]
                lab = labels[group[0]]
                if lab in singles:
                    assert len(set(group)) == 1, "single utterance K times"
                    seen[lab] += 1
                elif Counter(labels)[lab] == 2:
                    assert sorted(Counter(group).values()) == [2, 2]
    assert seen, "some single-utterance speaker must have been sampled"


def test_warning_counts_short_speakers(caplog):
    labels = make_labels([1, 1, 3, 5, 6], seed=9)
    with caplog.at_level(logging.WARNING, logger="sb_angcl.data.sampler"):
        SpeakerBalancedBatchSampler(labels, 2, 4)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 of 5 speakers" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sb_angcl.data.sampler"):
        SpeakerBalancedBatchSampler(labels, 2, 1)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_value_errors():
    labels = make_labels([2, 2, 2], seed=0)
    with pytest.raises(ValueError, match=r"speakers_per_batch=4.*\(3\).*at most 3"):
        SpeakerBalancedBatchSampler(labels, 4, 2)
    with pytest.raises(ValueError, match=r"2 \* 2 = 4.*only 3.*at most 1"):
        SpeakerBalancedBatchSampler(labels, 2, 2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank=2"):
        SpeakerBalancedBatchSampler(labels, 1, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="utterances_per_speaker"):
        SpeakerBalancedBatchSampler(labels, 2, 0)
    with pytest.raises(ValueError, match="empty"):
        SpeakerBalancedBatchSampler([], 2, 2)
    # P == number of speakers is allowed
    assert len(SpeakerBalancedBatchSampler(labels, 3, 2)) == 1


@pytest.mark.parametrize("R", [2, 3])
def test_ddp_split(R):
    P, K = 3, 2
    labels = make_labels(IMBALANCED + [4, 5, 2, 8], seed=10)
    ranks = [
        SpeakerBalancedBatchSampler(labels, P, K, seed=9, num_replicas=R, rank=r)
        for r in range(R)
    ]
    lengths = {len(s) for s in ranks}
    assert len(lengths) == 1
    n_sizes = IMBALANCED + [4, 5, 2, 8]
    assert lengths == {max_steps_oracle(n_sizes, K, R * P)}
    for epoch in (1, 2):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert {len(b) for b in per_rank} == lengths
        plan = ranks[0].global_plan()
        assert all(s.global_plan() == plan for s in ranks[1:])
        for t, step in enumerate(plan):
            speakers = []
            for r in range(R):
                batch = per_rank[r][t]
                check_batch(batch, labels, P, K)
                speakers.append({labels[i] for i in batch})
            # no speaker shared by two ranks within a step
            assert len(set().union(*speakers)) == R * P
            # the union over ranks of step t is the global step t
            concatenated = [i for r in range(R) for i in per_rank[r][t]]
            assert concatenated == step
            assert Counter(step) == sum(
                (Counter(per_rank[r][t]) for r in range(R)), Counter()
            )


def test_speakers_move_between_ranks_and_slots():
    # Within a step the speakers are shuffled: over epochs every speaker
    # visits both ranks and more than one slot of a batch.
    labels = make_labels([4] * 10, seed=14)
    ranks = [
        SpeakerBalancedBatchSampler(labels, 2, 2, seed=3, num_replicas=2, rank=r)
        for r in range(2)
    ]
    where = {lab: set() for lab in set(labels)}
    for epoch in range(8):
        for r, s in enumerate(ranks):
            s.set_epoch(epoch)
            for batch in s:
                for slot in range(2):
                    where[labels[batch[slot * 2]]].add((r, slot))
    for lab, places in where.items():
        assert {r for r, _ in places} == {0, 1}, lab
        assert len({slot for _, slot in places}) == 2, lab


def test_ddp_defaults_from_torch_distributed(monkeypatch):
    labels = make_labels([3] * 8, seed=11)
    assert SpeakerBalancedBatchSampler(labels, 2, 3).num_replicas == 1
    monkeypatch.setattr(sampler_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampler_module.dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(sampler_module.dist, "get_rank", lambda: 2)
    s = SpeakerBalancedBatchSampler(labels, 2, 3)
    assert (s.num_replicas, s.rank) == (3, 2)
    explicit = SpeakerBalancedBatchSampler(labels, 2, 3, num_replicas=3, rank=2)
    assert list(s) == list(explicit)


@pytest.mark.parametrize("R,rank", [(1, 0), (2, 1)])
def test_resume_mid_epoch_with_saveable_dataloader(tmp_path, R, rank):
    labels = make_labels(IMBALANCED, seed=12)
    dataset = list(range(len(labels)))
    k = 3

    def build():
        sampler = SpeakerBalancedBatchSampler(
            labels, 2, 2, seed=21, num_replicas=R, rank=rank
        )
        loader = SaveableDataLoader(dataset, batch_sampler=sampler)
        ckpt = Checkpointer(tmp_path / "ckpt", {"loader": loader, "sampler": sampler})
        return sampler, loader, ckpt

    sampler, loader, ckpt = build()
    sampler.set_epoch(5)
    full = list(sampler)
    assert len(full) > k + 1
    consumed, remaining = [], []
    for i, batch in enumerate(loader):
        if i < k:
            consumed.append(batch.tolist())
            if i == k - 1:
                ckpt.save_checkpoint(end_of_epoch=False)
        else:
            remaining.append(batch.tolist())
    assert consumed + remaining == full

    # A fresh process: new sampler at epoch 0, new loader, recover.
    sampler2, loader2, ckpt2 = build()
    assert sampler2.epoch == 0
    assert ckpt2.recover_if_possible() is not None
    assert sampler2.epoch == 5, "the sampler restores its epoch"
    resumed = [b.tolist() for b in loader2]
    assert resumed == remaining
    # The following epoch starts from the beginning again.
    sampler2.set_epoch(6)
    assert [b.tolist() for b in loader2] == list(sampler2)
    assert len(list(loader2)) == len(sampler2)


def test_sampler_checkpoint_warns_on_changed_settings(tmp_path, caplog):
    labels = make_labels([3] * 6, seed=13)
    s = SpeakerBalancedBatchSampler(labels, 2, 3, seed=1)
    s.set_epoch(9)
    s._save(tmp_path / "s.ckpt")
    other = SpeakerBalancedBatchSampler(labels, 2, 3, seed=2)
    with caplog.at_level(logging.WARNING, logger="sb_angcl.data.sampler"):
        other._recover(tmp_path / "s.ckpt", False)
    assert other.epoch == 9
    assert "seed=1" in caplog.text


def _dataset():
    data = {
        f"utt{i}": {
            "wav": f"/nonexistent/{i}.wav",
            "spk_id": f"s{i % 4}",
            "duration": float(i),
        }
        for i in range(12)
    }
    return DynamicItemDataset(data)


def test_from_dataset_static_key_does_not_load_audio():
    dataset = _dataset()

    def _fail(wav):
        raise AssertionError("audio must not be loaded")

    dataset.add_dynamic_item(_fail, takes="wav", provides="sig")
    dataset.set_output_keys(["id", "sig", "spk_id"])
    s = SpeakerBalancedBatchSampler.from_dataset(
        dataset, speakers_per_batch=2, utterances_per_speaker=3, seed=4
    )
    assert s.speakers == ["s0", "s1", "s2", "s3"]
    ref = SpeakerBalancedBatchSampler([f"s{i % 4}" for i in range(12)], 2, 3, seed=4)
    assert list(s) == list(ref)

    # A filtered/sorted view keeps its own order of data_ids.
    sub = dataset.filtered_sorted(key_min_value={"duration": 4.0}, reverse=True)
    s_sub = SpeakerBalancedBatchSampler.from_dataset(
        sub, speakers_per_batch=2, utterances_per_speaker=2
    )
    expected = [dataset.data[d]["spk_id"] for d in sub.data_ids]
    assert s_sub.speakers == list(dict.fromkeys(expected))
    assert s_sub.num_items == len(sub) == 8


def test_from_dataset_dynamic_key_and_errors():
    dataset = _dataset()

    def _upper(spk_id):
        return spk_id.upper()

    dataset.add_dynamic_item(_upper, takes="spk_id", provides="speaker")
    s = SpeakerBalancedBatchSampler.from_dataset(
        dataset, key="speaker", speakers_per_batch=2, utterances_per_speaker=3
    )
    assert s.speakers == ["S0", "S1", "S2", "S3"]
    with pytest.raises(ValueError, match="no key 'nope'"):
        SpeakerBalancedBatchSampler.from_dataset(
            dataset, key="nope", speakers_per_batch=2, utterances_per_speaker=3
        )
    with pytest.raises(TypeError, match="pass the labels directly"):
        SpeakerBalancedBatchSampler.from_dataset(
            list(range(4)), speakers_per_batch=2, utterances_per_speaker=3
        )


def _random_configs(n=40):
    """Random small settings (a seeded stand-in for a hypothesis strategy)."""
    rng = np.random.default_rng(2024)
    for _ in range(n):
        sizes = rng.integers(1, 13, size=rng.integers(2, 15)).tolist()
        yield (
            sizes,
            int(rng.integers(1, 5)),
            int(rng.integers(1, 5)),
            int(rng.integers(1, 4)),
            int(rng.integers(0, 2**32)),
            int(rng.integers(0, 51)),
        )


@pytest.mark.parametrize("sizes,P,K,R,seed,epoch", list(_random_configs()))
def test_invariants_property(sizes, P, K, R, seed, epoch):
    labels = make_labels(sizes, seed=seed % 1000)
    if R * P > len(sizes):
        with pytest.raises(ValueError):
            SpeakerBalancedBatchSampler(labels, P, K, num_replicas=R, rank=0)
        return
    T = max_steps_oracle(sizes, K, R * P)
    samplers = [
        SpeakerBalancedBatchSampler(labels, P, K, seed=seed, num_replicas=R, rank=r)
        for r in range(R)
    ]
    per_rank = []
    for s in samplers:
        assert len(s) == T
        s.set_epoch(epoch)
        per_rank.append(list(s))
        assert len(per_rank[-1]) == T
    used = Counter()
    for t in range(T):
        step_speakers = set()
        for r in range(R):
            check_batch(per_rank[r][t], labels, P, K)
            step_speakers |= {labels[i] for i in per_rank[r][t]}
            used.update(per_rank[r][t])
        assert len(step_speakers) == R * P
    dropped = samplers[0].num_dropped_groups
    assert sum(used.values()) == K * (samplers[0].num_groups - dropped)
    assert len(used) >= len(labels) - K * dropped
    if max(math.ceil(n / K) for n in sizes) <= T:
        assert dropped < R * P


# ------------------------------------------------ positives across sessions
def make_sessions(labels, per_speaker, seed=0):
    """A session label per item: speaker s has per_speaker[s] sessions, sizes uneven."""
    rng = np.random.default_rng(seed)
    sessions = []
    for lab in labels:
        m = per_speaker[int(lab[3:])]
        # uneven sizes: session j drawn with weight j + 1
        w = np.arange(1, m + 1, dtype=float)
        sessions.append(f"v{int(rng.choice(m, p=w / w.sum()))}")
    return sessions


def session_groups(batches, labels, sessions, K):
    for batch in batches:
        for j in range(0, len(batch), K):
            group = batch[j : j + K]
            yield labels[group[0]], [sessions[i] for i in group]


def test_positives_across_sessions_distinct_when_possible():
    sizes = [12, 16, 9, 20, 8, 14, 10, 18]
    K = 4
    labels = make_labels(sizes, seed=5)
    # every speaker has 6 sessions (>= K): all but top-up groups are distinct
    sessions = make_sessions(labels, [6] * 8, seed=1)
    s = SpeakerBalancedBatchSampler(
        labels, 3, K, seed=2, sessions=sessions, positives_across_sessions=True
    )
    plain = SpeakerBalancedBatchSampler(labels, 3, K, seed=2)
    assert len(s) == len(plain)
    distinct = plain_distinct = total = 0
    for epoch in range(4):
        s.set_epoch(epoch)
        plain.set_epoch(epoch)
        batches = list(s)
        for batch in batches:
            check_batch(batch, labels, 3, K)
        for _, group_sessions in session_groups(batches, labels, sessions, K):
            total += 1
            distinct += len(set(group_sessions)) == K
        plain_distinct += sum(
            len(set(g)) == K for _, g in session_groups(list(plain), labels, sessions, K)
        )
    # most groups are all-distinct (not: topped-up groups and the tails where
    # only a speaker's largest sessions have utterances left); random groups rarely
    # measured: 0.59 vs 0.23
    assert distinct / total > 0.5 and distinct > 2 * plain_distinct


def test_positives_across_sessions_fallback_and_exact_round_robin():
    # one speaker, 3 sessions of sizes 5, 2, 1 (8 items), K = 4, shuffle=False:
    # round-robin by size: a b c | a b | a | a | a -> groups [a b c a] [b a a a]
    labels = ["spk000"] * 8 + ["spk001"] * 4
    sessions = ["a", "a", "b", "a", "c", "a", "b", "a"] + ["x", "y", "x", "y"]
    s = SpeakerBalancedBatchSampler(
        labels, 1, 4, shuffle=False, sessions=sessions, positives_across_sessions=True
    )
    groups = sorted(
        "".join(g) for spk, g in session_groups(s.global_plan(), labels, sessions, 4)
        if spk == "spk000"
    )
    assert groups == ["abca", "baaa"]
    # a speaker with 2 sessions and K = 4: both sessions, twice each
    other = [g for spk, g in session_groups(s.global_plan(), labels, sessions, 4) if spk == "spk001"]
    assert all(sorted(g) == ["x", "x", "y", "y"] for g in other)


def test_positives_across_sessions_reproducible_ddp_and_resumable(tmp_path):
    labels = make_labels(IMBALANCED, seed=3)
    sessions = make_sessions(labels, [3] * len(IMBALANCED), seed=4)

    def build(rank, R=2):
        return SpeakerBalancedBatchSampler(
            labels, 2, 2, seed=7, num_replicas=R, rank=rank,
            sessions=sessions, positives_across_sessions=True,
        )

    a, b = build(0), build(1)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert a.global_plan() == b.global_plan() == build(0).global_plan(epoch)
        plan = a.global_plan()
        assert [x + y for x, y in zip(list(a), list(b))] == plan
    a.set_epoch(1)
    assert a.global_plan() != a.global_plan(2)

    # mid-epoch resume, as with the plain sampler
    dataset = list(range(len(labels)))
    sampler = build(0, R=1)
    loader = SaveableDataLoader(dataset, batch_sampler=sampler)
    ckpt = Checkpointer(tmp_path / "ckpt", {"loader": loader, "sampler": sampler})
    sampler.set_epoch(4)
    full = list(sampler)
    for i, _ in enumerate(loader):
        if i == 1:
            ckpt.save_checkpoint(end_of_epoch=False)
    sampler2 = build(0, R=1)
    loader2 = SaveableDataLoader(dataset, batch_sampler=sampler2)
    Checkpointer(tmp_path / "ckpt", {"loader": loader2, "sampler": sampler2}).recover_if_possible()
    assert [x.tolist() for x in loader2] == full[2:]


def test_positives_across_sessions_needs_sessions():
    labels = make_labels([4, 4], seed=0)
    with pytest.raises(ValueError, match="session"):
        SpeakerBalancedBatchSampler(labels, 2, 2, positives_across_sessions=True)
    with pytest.raises(ValueError, match="session labels"):
        SpeakerBalancedBatchSampler(
            labels, 2, 2, sessions=["a"], positives_across_sessions=True
        )
    data = {f"u{i}": {"wav": f"{i}.wav", "spk_id": lab} for i, lab in enumerate(labels)}
    with pytest.raises(ValueError, match="'session' column"):
        SpeakerBalancedBatchSampler.from_dataset(
            DynamicItemDataset(data), speakers_per_batch=2, utterances_per_speaker=2,
            positives_across_sessions=True,
        )
    seen = Counter()
    for item in data.values():  # each speaker: two utterances in each of v0, v1
        item["session"] = f"v{seen[item['spk_id']] % 2}"
        seen[item["spk_id"]] += 1
    s = SpeakerBalancedBatchSampler.from_dataset(
        DynamicItemDataset(data), speakers_per_batch=2, utterances_per_speaker=2,
        positives_across_sessions=True,
    )
    for batch in s:
        for j in (0, 2):
            assert {data[f"u{batch[j]}"]["session"], data[f"u{batch[j + 1]}"]["session"]} == {"v0", "v1"}
