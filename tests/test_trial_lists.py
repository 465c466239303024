"""benchmarks/trial_lists.py: every pair of test utterances and the union list of a corpus."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "trial_lists", os.path.join(ROOT, "benchmarks", "trial_lists.py"))
trial_lists = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trial_lists)


def corpus(tmp_path):
    vox = tmp_path / "vox"
    (vox / "meta").mkdir(parents=True)
    rows = ["vox_path\tspeaker\tsplit"]
    rows += [f"wav/{s}/v/{i}.wav\t{s}\ttest" for s in ("a", "b", "c") for i in (1, 2)]
    rows += ["wav/d/v/1.wav\td\tdev"]
    (vox / "meta" / "utterances.tsv").write_text("\n".join(rows) + "\n")
    (vox / "veri_test2.txt").write_text("1 a/v/1.wav a/v/2.wav\n0 b/v/2.wav a/v/1.wav\n")
    return vox


def test_all_pairs_subsets_and_union(tmp_path):
    vox = corpus(tmp_path)
    other = tmp_path / "std.txt"
    other.write_text("0 c/v/1.wav a/v/2.wav\n1 c/v/1.wav c/v/2.wav\n")
    trial_lists.main([str(vox), "--own-name", "small", "--include", f"std={other}"])
    pairs = (vox / "meta" / "veri_test2_all.txt").read_text().splitlines()
    assert len(pairs) == 15 and sum(p.startswith("1 ") for p in pairs) == 3
    assert (vox / "meta" / "veri_test2_small.txt").read_text().startswith("1 a/v/1.wav a/v/2.wav")
    union = (vox / "veri_test2.txt").read_text().splitlines()
    keys = [tuple(line.split()[1:3]) for line in union]
    assert len(keys) == len(set(keys)) == 15 + 2  # the reversed-order trials join the pairs
    assert ("b/v/2.wav", "a/v/1.wav") in keys and ("c/v/1.wav", "a/v/2.wav") in keys
    assert (vox / "meta" / "veri_test2.txt").read_text() == (vox / "veri_test2.txt").read_text()
    # Run again: the corpus's own list is kept, not replaced by the union.
    trial_lists.main([str(vox), "--own-name", "small", "--include", f"std={other}"])
    assert len((vox / "meta" / "veri_test2_small.txt").read_text().splitlines()) == 2


def test_a_list_of_another_corpus_is_refused(tmp_path):
    vox = corpus(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("1 x/v/1.wav x/v/2.wav\n")
    with pytest.raises(ValueError, match="outside the test split"):
        trial_lists.main([str(vox), "--include", f"x={other}"])
