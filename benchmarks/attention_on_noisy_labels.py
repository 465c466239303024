"""Does class-aware attention discount the mislabelled training utterances?

A run trained with ``label_noise`` (its ``<save_folder>/train_derived.csv``),
or on a corpus generated with ``--label-noise``, marks the relabelled
training utterances (``label_noise`` = 1, ``true_spk_id``). This script
loads a trained run (its best checkpoint), embeds every training utterance,
computes each one's confidence ``a_j`` (the classifier's posterior for its
*given* label at ``T_att``) and the class-aware attention weights ``w_in`` of
every negative pair over the whole training set, and compares the relabelled
utterances with the clean ones: mean confidence, mean weight as a negative,
and the share of each group among the 10 % lowest-weighted negatives.

    python benchmarks/attention_on_noisy_labels.py --run-dir RUN [RUN ...] [--hparams YAML] [--output MD]

``RUN`` is a run folder of ``benchmarks/ablation.py`` (its ``result.json``
gives the overrides) or of ``train.py`` (then pass the same ``--override``
values as the training). The report has a row per run; its last line is
``ratio <mean over the runs of the weight of relabelled negatives / that of
clean ones>`` (below 1: attention discounts them).

Authors
 * sb-angcl contributors
"""

import argparse
import json
import os

import pandas as pd
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HPARAMS = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SpeakerRec", "hparams", "train_ecapa_angcl_small.yaml"
)


def group_statistics(confidence, weights, labels, noisy):
    """Confidence and negative-pair weight of the noisy vs the clean samples.

    Arguments
    ---------
    confidence : torch.Tensor
        ``[N]`` confidences.
    weights : torch.Tensor
        ``[N, N]`` attention weights (mean one over each row's negatives).
    labels : torch.Tensor
        ``[N]`` given labels.
    noisy : torch.Tensor
        ``[N]`` bool, True for relabelled samples.

    Returns
    -------
    dict
        ``group -> (n, mean confidence, mean weight as a negative, share of
        the group among the 10 % lowest-weighted negative pairs)``.

    Example
    -------
    >>> from sb_angcl.objective.losses import pair_weights_from_confidence
    >>> conf = torch.tensor([0.9, 0.9, 0.9, 0.1])
    >>> labels = torch.tensor([0, 1, 2, 0])
    >>> w = pair_weights_from_confidence(conf, labels)
    >>> stats = group_statistics(conf, w, labels, torch.tensor([False, False, False, True]))
    >>> stats["relabelled"][0], round(stats["relabelled"][1], 2), stats["relabelled"][2] < 1
    (1, 0.1, True)
    """
    negative = labels.unsqueeze(0) != labels.unsqueeze(1)
    values = weights[negative]
    low = values <= torch.quantile(values, 0.1)
    column_noisy = noisy.unsqueeze(0).expand_as(weights)[negative]
    out = {}
    for name, mask in (("relabelled", noisy), ("clean", ~noisy)):
        col = column_noisy if name == "relabelled" else ~column_noisy
        out[name] = (
            int(mask.sum()),
            float(confidence[mask].mean()) if mask.any() else float("nan"),
            float(values[col].mean()) if col.any() else float("nan"),
            float((low & col).sum() / low.sum()),
        )
    return out


def measure(run_dir, hparams_file, attention_temperature=None, max_seconds=4.0):
    """``(utterances, T_att, group statistics)`` of one trained run (:func:`group_statistics`)."""
    import speechbrain as sb

    from sb_angcl.evaluation.scoring import embed_manifest
    from sb_angcl.hyperparams import load_trained_hparams
    from sb_angcl.objective.losses import class_confidence, pair_weights_from_confidence

    overrides = {"output_folder": run_dir}
    result = os.path.join(run_dir, "result.json")
    if os.path.isfile(result):
        with open(result, encoding="utf-8") as fin:
            overrides = json.load(fin)["overrides"]
        # Only the training YAML's keys (the scoring ones went to verification.yaml).
        from ablation import yaml_top_keys

        keys = yaml_top_keys(hparams_file)
        overrides = {k: v for k, v in overrides.items() if k in keys}
    hparams, device = load_trained_hparams(hparams_file, overrides), "cpu"
    if hparams["checkpointer"].recover_if_possible(min_key="ErrorRate") is None:
        raise SystemExit(f"No checkpoint in {hparams['save_folder']}: train first")
    # A run with the label_noise option trained on <save_folder>/train_derived.csv.
    train_csv = os.path.join(hparams["save_folder"], "train_derived.csv")
    if not os.path.isfile(train_csv):
        train_csv = hparams["train_annotation"]
    manifest = pd.read_csv(train_csv)
    if "label_noise" not in manifest:
        raise SystemExit(f"{train_csv} has no label_noise column: train with label_noise > 0 "
                         "(or generate the corpus with --label-noise and prepare it again)")
    if "speed" in manifest and (manifest["speed"] != 1.0).any():
        # Only the utterances as recorded: speed copies are other classes.
        manifest = manifest[manifest["speed"] == 1.0]
        train_csv = os.path.join(run_dir, "train_unperturbed.csv")
        manifest.to_csv(train_csv, index=False)
    table = embed_manifest(train_csv, hparams, device, max_seconds=max_seconds)
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(os.path.join(hparams["save_folder"], "label_encoder.txt"))
    given = dict(zip(manifest["ID"], manifest["spk_id"]))
    noisy_of = dict(zip(manifest["ID"], manifest["label_noise"].astype(bool)))
    labels = torch.tensor([encoder.lab2ind[given[i]] for i in table.ids])
    noisy = torch.tensor([noisy_of[i] for i in table.ids])
    classifier = hparams["classifier"].to(device).eval()
    with torch.no_grad():
        cosine = classifier(torch.as_tensor(table.vectors).unsqueeze(1).to(device)).squeeze(1)
    t_att = attention_temperature or hparams["attention_temperature"] or 1.0 / hparams["aam_scale"]
    confidence = class_confidence(cosine, labels, t_att)
    weights = pair_weights_from_confidence(confidence, labels)
    return len(labels), t_att, group_statistics(confidence, weights, labels, noisy)


def report(runs, command, about=""):
    """The Markdown report of measured runs (``[(run_dir, utterances, T_att, stats)]``) and its ratio.

    One row per run; ``about`` (a sentence: which runs) follows the title;
    the last line is ``ratio <mean over runs of relabelled / clean weight as a
    negative>``.

    Example
    -------
    >>> stats = {"relabelled": (2, 0.1, 0.2, 1.0), "clean": (8, 0.9, 1.0, 0.0)}
    >>> text, mean = report([("runs/default/seed1", 10, 1 / 30, stats)], "cmd")
    >>> text.splitlines()[-1]
    'ratio 0.200'
    >>> [line for line in text.splitlines() if line.startswith("| runs/")]
    ['| runs/default/seed1 | 10 (2) | 0.0333 | 0.100 | 0.900 | 0.200 | 1.000 | 100.0 % | 0.200 |']
    """
    ratios = [stats["relabelled"][2] / stats["clean"][2] for *_, stats in runs]
    lines = [
        "# Does class-aware attention discount the mislabelled training utterances?", "",
        *([about, ""] if about else []),
        f"- Command: `{command}`",
        "- Per run: its training utterances (relabelled in brackets); `a_j` is the classifier's "
        "posterior for the *given* label at T_att; the weight is the class-aware attention "
        "weight of the utterance as a negative, averaged over every anchor of the training set "
        "(mean one over an anchor's negatives).", "",
        "| run | utterances (relabelled) | T_att | a_j relabelled | a_j clean | weight as a "
        "negative, relabelled | weight, clean | relabelled share of the 10 % lowest-weighted "
        "negatives | ratio (relabelled / clean weight) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (run_dir, n, t_att, stats), ratio in zip(runs, ratios):
        bad, clean = stats["relabelled"], stats["clean"]
        lines.append(f"| {run_dir} | {n} ({bad[0]}) | {t_att:.4f} | {bad[1]:.3f} | {clean[1]:.3f} "
                     f"| {bad[2]:.3f} | {clean[2]:.3f} | {100 * bad[3]:.1f} % | {ratio:.3f} |")
    mean = sum(ratios) / len(ratios)
    a_bad, a_clean = (sum(stats[g][1] for *_, stats in runs) / len(runs) for g in ("relabelled", "clean"))
    lines += ["", f"Mean over the {len(runs)} run(s): a_j {a_bad:.3f} relabelled, {a_clean:.3f} clean; "
              f"a relabelled utterance weighs {mean:.3f} of a clean one as a negative (range "
              f"{min(ratios):.3f}-{max(ratios):.3f}).", "",
              f"ratio {mean:.3f}"]
    return "\n".join(lines) + "\n", mean


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Arguments.

    Returns
    -------
    float
        Mean over the runs of the weight of relabelled negatives over clean ones.
    """
    import shlex
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, nargs="+", help="one or more run folders")
    parser.add_argument("--hparams", default=DEFAULT_HPARAMS)
    parser.add_argument("--attention-temperature", type=float, default=None,
                        help="T_att (default: the YAML's, 1 / aam_scale)")
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--output", default=None, help="Markdown file (default: print only)")
    parser.add_argument("--about", default="", help="a sentence under the report's title")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = ("python benchmarks/attention_on_noisy_labels.py "
               + " ".join(shlex.quote(a) for a in argv))
    runs = [(run_dir, *measure(run_dir, args.hparams, args.attention_temperature,
                               args.max_seconds)) for run_dir in args.run_dir]
    text, mean = report(runs, command, args.about)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fout:
            fout.write(text)
    print(text, end="")
    return mean


if __name__ == "__main__":
    main()
