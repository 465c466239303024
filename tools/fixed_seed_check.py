"""Fixed-seed identity check for restructurings: the same outputs before and after.

``run`` trains and scores five short fixed-seed runs of a checkout on a small
generated corpus: the small recipe, the same with ``balancing: mgda``, the
full-size AAM-softmax and paper YAMLs (narrowed to C=32 and small batches so
that they run on a CPU) and the CN-Celeb small recipe. ``compare`` then says,
file by file, whether two such folders hold the same train logs (the epoch
times left out), scores, exported weights and manifests (the output folder's
own path left out)::

    python tools/fixed_seed_check.py run OLD_CHECKOUT OUT_OLD
    python tools/fixed_seed_check.py run NEW_CHECKOUT OUT_NEW
    python tools/fixed_seed_check.py compare OUT_OLD OUT_NEW

The last line of ``compare`` is ``identical <n>, different <m>``; it exits
with 1 when anything differs or is missing.

Authors
 * sb-angcl contributors
"""

import argparse
import glob
import hashlib
import os
import re
import subprocess
import sys

#: name -> (recipe, training YAML, overrides)
RUNS = {
    "small": ("VoxCeleb", "train_ecapa_angcl_small.yaml", ["--number_of_epochs=2"]),
    "mgda": ("VoxCeleb", "train_ecapa_angcl_small.yaml",
             ["--number_of_epochs=2", "--balancing=mgda"]),
    "aam": ("VoxCeleb", "train_ecapa_aam.yaml", []),
    "full": ("VoxCeleb", "train_ecapa_angcl.yaml", []),
    "cn": ("CNCeleb", "train_ecapa_angcl_small.yaml", ["--number_of_epochs=2"]),
}
#: What makes the full-size YAMLs run in a minute on a CPU.
NARROW = ["--number_of_epochs=1", "--channels=32", "--emb_dim=32", "--warmup_epochs=0",
          "--speakers_per_batch=4", "--utterances_per_speaker=2", "--num_workers=0"]
COMPARED = ("train_log.txt", "scores*.txt", "inference/*.ckpt", "save/*.csv")


def run(tree, out, corpus=None):
    """Trains and scores every run of :data:`RUNS` with ``tree``'s code into ``out``."""
    tree, out = os.path.abspath(tree), os.path.abspath(out)
    corpus = os.path.abspath(corpus or os.path.join(out, "corpus"))
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    os.makedirs(out, exist_ok=True)
    if not os.path.isdir(corpus):
        subprocess.run([sys.executable, "-m", "synthetic_corpus", "--output", corpus,
                        "--layout", "both", "--speakers", "12", "--utterances", "8",
                        "--seed", "5", "--no-progress"], cwd=tree, env=env, check=True)
    for name, (recipe, yaml, overrides) in RUNS.items():
        folder = os.path.join(tree, "recipes", recipe, "SpeakerRec")
        data = os.path.join(corpus, "VoxCeleb1") if recipe == "VoxCeleb" else corpus
        common = [f"--data_folder={data}", f"--output_folder={os.path.join(out, name)}",
                  "--noprogressbar"]
        extra = NARROW if name in ("aam", "full") else []
        for script, args in (("train.py", [f"hparams/{yaml}", "--seed=3", *common, *overrides,
                                           *extra]),
                             ("verify.py", ["hparams/verification.yaml", *common])):
            with open(os.path.join(out, f"{name}.{script}.log"), "w", encoding="utf-8") as log:
                subprocess.run([sys.executable, script, *args], cwd=folder, env=env,
                               stdout=log, stderr=subprocess.STDOUT, check=True)
        print(f"{name}: done", flush=True)


def digest(path, top):
    """sha256 of a file, without epoch times and without the folder ``top``'s path."""
    with open(path, "rb") as fin:
        data = fin.read()
    data = data.replace(os.path.abspath(top).encode(), b"<OUT>")
    if path.endswith("train_log.txt"):
        data = re.sub(rb"time_s: [0-9.e+-]+", b"time_s: -", data)
    return hashlib.sha256(data).hexdigest()


def compare(first, second):
    """Prints a line per differing or missing file and the totals; the number of problems."""
    same, problems = 0, 0
    for name in RUNS:
        files = sorted({os.path.relpath(p, first) for pattern in COMPARED
                        for p in glob.glob(os.path.join(first, name, pattern))})
        if not files:
            print(f"MISSING {name}: no outputs in {first}")
            problems += 1
        for rel in files:
            other = os.path.join(second, rel)
            if not os.path.isfile(other):
                print(f"MISSING {rel}")
                problems += 1
            elif digest(os.path.join(first, rel), first) != digest(other, second):
                print(f"DIFFERS {rel}")
                problems += 1
            else:
                same += 1
    print(f"identical {same}, different {problems}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train and score the fixed-seed runs")
    run_parser.add_argument("tree", help="a checkout of sb-angcl")
    run_parser.add_argument("out")
    run_parser.add_argument("--corpus", default=None, help="a corpus made before (reused)")
    compare_parser = sub.add_parser("compare", help="compare two run folders")
    compare_parser.add_argument("first")
    compare_parser.add_argument("second")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.tree, args.out, args.corpus)
        return 0
    return 1 if compare(args.first, args.second) else 0


if __name__ == "__main__":
    sys.exit(main())
