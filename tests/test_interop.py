"""Interoperation with SpeechBrain's standard VoxCeleb recipes.

* Manifests written by upstream's ``recipes/VoxCeleb/voxceleb_prepare.py``
  (``ID,duration,wav,start,stop,spk_id``, IDs ``spk--video--utt``, no
  ``session`` column) train: the sampler takes each utterance's session from
  the video part of its ID. Always run on a CSV written here in that format;
  also on one written by upstream's own function when ``SPEECHBRAIN_CHECKOUT``
  names a SpeechBrain checkout.
* A model trained and exported here is scored by upstream's
  ``recipes/VoxCeleb/SpeakerRec/speaker_verification_cosine.py`` with its
  ``hparams/verification_ecapa.yaml`` (pretrainer pointed at the export):
  the same EER as ``verify.py`` with cosine scoring, trial by trial
  (``SPEECHBRAIN_CHECKOUT`` only).
* A folder laid out like ``speechbrain/spkrec-ecapa-voxceleb``, built with
  SpeechBrain's own ECAPA-TDNN and ``Classifier`` classes and label encoder,
  starts training through the YAML's ``pretrainer``: the weights arrive, the
  label encoder is adopted, a Hugging Face id and a missing folder are
  refused with the way out.
"""

import csv
import glob
import importlib.util
import os
import random
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOX = os.path.join(ROOT, "recipes", "VoxCeleb", "SpeakerRec")
SMALL_YAML = os.path.join(VOX, "hparams", "train_ecapa_angcl_small.yaml")
CHECKOUT = os.environ.get("SPEECHBRAIN_CHECKOUT")
needs_checkout = pytest.mark.skipif(
    not CHECKOUT,
    reason="SPEECHBRAIN_CHECKOUT is not set (it names an upstream SpeechBrain checkout "
    "whose recipes/VoxCeleb scripts these tests run)",
)
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def vox_corpus(tmp_path_factory):
    """A small built-in corpus in the VoxCeleb1 layout, every file at least 3.2 s
    (upstream's preparation cuts training files into 3 s chunks)."""
    from synthetic_corpus import generate_corpus

    out = str(tmp_path_factory.mktemp("interop_corpus"))
    generate_corpus(
        out, layout="voxceleb", num_speakers=10, num_utterances=6, num_sessions=3,
        num_languages=1, duration_min=3.2, duration_max=4.5, short_fraction=0.0,
        seed=11, overwrite=True, progress=False,
    )
    return os.path.join(out, "VoxCeleb1")


def trial_speakers(vox_root):
    """Speakers of the trial list (upstream keeps them out of training)."""
    with open(os.path.join(vox_root, "meta", "veri_test2.txt"), encoding="utf-8") as fin:
        return {line.split()[1].split("/")[0] for line in fin if line.strip()}


def write_upstream_format_csv(vox_root, path, seg_dur=3.0):
    """A training CSV in the format of upstream's ``voxceleb_prepare.py``, written here.

    Columns ``ID,duration,wav,start,stop,spk_id``; one row per ``seg_dur``
    chunk of every non-test file, ID ``spk--video--utt_<start>_<stop>``
    (seconds), ``duration`` the whole file's, ``start``/``stop`` in samples.
    """
    import soundfile

    skip = trial_speakers(vox_root)
    rows = []
    for wav in sorted(glob.glob(os.path.join(vox_root, "wav", "*", "*", "*.wav"))):
        spk, video, utt = wav.split(os.sep)[-3:]
        if spk in skip:
            continue
        frames = soundfile.info(wav).frames
        seconds = frames / SAMPLE_RATE
        for i in range(int(seconds // seg_dur)):
            start, stop = i * seg_dur, (i + 1) * seg_dur
            rows.append([f"{spk}--{video}--{utt[:-4]}_{start}_{stop}", seconds, wav,
                         int(start * SAMPLE_RATE), int(stop * SAMPLE_RATE), spk])
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["ID", "duration", "wav", "start", "stop", "spk_id"])
        writer.writerows(rows)
    return path


def upstream_prepare(checkout):
    """Upstream's ``prepare_voxceleb``, imported from the checkout's file."""
    path = os.path.join(checkout, "recipes", "VoxCeleb", "voxceleb_prepare.py")
    spec = importlib.util.spec_from_file_location("upstream_voxceleb_prepare", path)
    module = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode, before = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module.prepare_voxceleb


def check_sampler_sessions(csv_path):
    """The sampler's (speaker, session) groups are exactly the (speaker, video folder) pairs."""
    from sb_angcl.data.dataio import load_manifest
    from sb_angcl.data.sampler import SpeakerBalancedBatchSampler

    data = load_manifest(csv_path)
    first = data.data[data.data_ids[0]]
    assert "session" not in first and set(first) >= {"wav", "start", "stop", "spk_id"}
    sampler = SpeakerBalancedBatchSampler.from_dataset(
        data, speakers_per_batch=2, utterances_per_speaker=2, seed=1,
        positives_across_sessions=True,
    )
    codes = sampler._planner.item_session
    truth = [(data.data[i]["spk_id"], data.data[i]["wav"].split(os.sep)[-2]) for i in data.data_ids]
    assert len(codes) == len(truth)
    pair_of_code = {}
    for code, pair in zip(codes.tolist(), truth):
        assert pair_of_code.setdefault(code, pair) == pair, "one session code, two videos"
    assert len(pair_of_code) == len(set(truth)), "two codes for one (speaker, video)"
    # Sessions really vary within speakers, so this checks something.
    assert len(set(truth)) > len({spk for spk, _ in truth})
    return sampler


def run_script(script, args, cwd, env_extra=None, timeout=600):
    """Run a recipe script; fail with its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.path.dirname(script) + os.pathsep + ROOT)
    env.update(env_extra or {})
    cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{shlex.join(cmd)}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n"
        f"{proc.stderr[-5000:]}"
    )
    return proc


def train_from_csv(csv_path, vox_root, out):
    """A short train.py run on a manifest without a session column (preparation skipped)."""
    os.makedirs(out, exist_ok=True)
    proc = run_script(os.path.join(VOX, "train.py"), [
        SMALL_YAML, f"--data_folder={vox_root}", f"--output_folder={out}", "--skip_prep=True",
        f"--train_annotation={csv_path}", f"--valid_annotation={csv_path}",
        "--speakers_per_batch=2", "--utterances_per_speaker=2", "--sentence_len=1.0",
        "--number_of_epochs=1", "--channels=32", "--device=cpu",
    ], cwd=out)
    log = proc.stdout + proc.stderr
    assert "sessions taken from the 'spk--video--utt' IDs" in log, log[-3000:]
    assert re.search(r"epoch: 1, .*train loss: \d", open(os.path.join(out, "train_log.txt")).read())
    assert os.path.isfile(os.path.join(out, "inference", "embedding_model.ckpt"))
    # The model card says how upstream's cosine scoring loads the export.
    with open(os.path.join(out, "inference", "README.md"), encoding="utf-8") as fin:
        card = fin.read()
    assert "speaker_verification_cosine.py hparams/verification_ecapa.yaml" in card
    assert "--pretrain_path=/path/to/this/folder" in card
    assert "'--embedding_model={input_size: 40, channels: [32, 32, 32, 32, 96]" in card


# ------------------------------------------------------------ upstream manifests
def test_sessions_parsed_from_upstream_ids_and_refused_otherwise():
    from sb_angcl.data.epoch_plan import session_from_id, sessions_from_ids

    assert session_from_id("id10001--1zcIwhmdeo4--00001") == "1zcIwhmdeo4"
    assert session_from_id("id10001--1zcIwhmdeo4--00001_3.0_6.0") == "1zcIwhmdeo4"
    for bad in ("id10001/1zcIwhmdeo4/00001", "id10001--00001", "a----b"):
        assert session_from_id(bad) is None
    with pytest.raises(ValueError, match=r"'id10001_00001'.*positives_across_sessions: False"):
        sessions_from_ids(["id10001--v--1", "id10001_00001"])


def test_manifest_without_session_or_parsable_id_is_refused(tmp_path):
    from sb_angcl.data.dataio import load_manifest
    from sb_angcl.data.sampler import SpeakerBalancedBatchSampler

    path = tmp_path / "plain.csv"
    path.write_text("ID,duration,wav,start,stop,spk_id\nu1,1.0,a.wav,0,16000,s1\n"
                    "u2,1.0,b.wav,0,16000,s2\n")
    data = load_manifest(str(path))
    with pytest.raises(ValueError, match="no 'session' column"):
        SpeakerBalancedBatchSampler.from_dataset(
            data, speakers_per_batch=2, utterances_per_speaker=1, positives_across_sessions=True)
    # Without the session constraint the same manifest is fine.
    sampler = SpeakerBalancedBatchSampler.from_dataset(
        data, speakers_per_batch=2, utterances_per_speaker=1)
    assert sampler.speakers == ["s1", "s2"]


def test_trains_from_csv_in_upstream_format(vox_corpus, tmp_path):
    """A CSV in the exact format upstream's preparation writes: right sessions, training runs."""
    csv_path = write_upstream_format_csv(vox_corpus, str(tmp_path / "train.csv"))
    check_sampler_sessions(csv_path)
    train_from_csv(csv_path, vox_corpus, str(tmp_path / "run"))


@needs_checkout
def test_trains_from_upstream_voxceleb_prepare(vox_corpus, tmp_path):
    """The CSVs of upstream's own prepare_voxceleb (chunks and whole files) train here."""
    prepare = upstream_prepare(CHECKOUT)
    trials = os.path.join(vox_corpus, "meta", "veri_test2.txt")
    for random_segment in (False, True):  # 3 s chunks, then whole files
        save = str(tmp_path / f"prep_{random_segment}")
        prepare(data_folder=vox_corpus, save_folder=save, verification_pairs_file=trials,
                splits=["train", "dev"], split_ratio=[90, 10], seg_dur=3.0,
                random_segment=random_segment)
        check_sampler_sessions(os.path.join(save, "train.csv"))
    # Only training speakers in it, as upstream writes it.
    rows = list(csv.DictReader(open(os.path.join(save, "train.csv"), encoding="utf-8")))
    assert not {r["spk_id"] for r in rows} & trial_speakers(vox_corpus)
    train_from_csv(os.path.join(save, "train.csv"), vox_corpus, str(tmp_path / "run"))


# ------------------------------------------------------- upstream cosine scoring
def _scores(path, upstream):
    """{(enrol, test): (score, label)} of a scores file (ours or upstream's)."""
    out = {}
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            parts = line.split()
            if not parts:
                continue
            if upstream:  # enrol test label score
                enrol, test, label, score = parts
            else:  # enrol test score label
                enrol, test, score, label = parts
            key = (enrol.removesuffix(".wav"), test.removesuffix(".wav"))
            out[key] = (float(score), int(label))
    return out


@needs_checkout
def test_upstream_cosine_scoring_matches_verify(vox_corpus, tmp_path):
    """Upstream's speaker_verification_cosine.py on our export: same EER as verify.py."""
    from sb_angcl.export import upstream_scoring_overrides

    run = str(tmp_path / "run")
    common = [f"--data_folder={vox_corpus}", f"--output_folder={run}", "--device=cpu",
              "--number_of_epochs=2", "--speakers_per_batch=4", "--utterances_per_speaker=2"]
    run_script(os.path.join(VOX, "train.py"), [SMALL_YAML, *common], cwd=str(tmp_path))
    # Cosine scoring, no calibration; eight utterances a batch, as upstream's YAML.
    ours = run_script(os.path.join(VOX, "verify.py"), [
        os.path.join(VOX, "hparams", "verification.yaml"), *common[:3], "--score_norm=null",
        "--calibration=none", "--eval_batch_size=8",
    ], cwd=str(tmp_path))
    ours_eer = float(re.search(r"^EER (\d+\.\d+)%", ours.stdout, re.M).group(1))

    status = _git_status(CHECKOUT)
    script_dir = os.path.join(CHECKOUT, "recipes", "VoxCeleb", "SpeakerRec")
    up_out = str(tmp_path / "upstream")
    n_train = sum(1 for line in open(os.path.join(run, "save", "train.csv"))) - 1
    upstream = run_script(os.path.join(script_dir, "speaker_verification_cosine.py"), [
        os.path.join(script_dir, "hparams", "verification_ecapa.yaml"),
        f"--data_folder={vox_corpus}", f"--output_folder={up_out}",
        f"--verification_file={os.path.join(vox_corpus, 'meta', 'veri_test2.txt')}",
        *upstream_scoring_overrides(os.path.join(run, "inference")),
        "--score_norm=null", f"--cohort_size={min(5, n_train)}", "--device=cpu",
    ], cwd=script_dir, env_extra={"PYTHONPATH": CHECKOUT})
    up_log = upstream.stdout + upstream.stderr
    up_eer = float(re.search(r"EER\(%\)=(\d+\.\d+)", up_log).group(1))
    assert _git_status(CHECKOUT) == status, "upstream's script wrote into the checkout"

    assert abs(ours_eer - up_eer) <= 0.05, (ours_eer, up_eer)
    # Trial by trial: the same trials, the same cosine scores.
    a = _scores(os.path.join(run, "scores.txt"), upstream=False)
    b = _scores(os.path.join(up_out, "scores.txt"), upstream=True)
    assert a.keys() == b.keys() and len(a) > 20
    assert all(a[k][1] == b[k][1] for k in a)
    diff = np.abs(np.array([a[k][0] - b[k][0] for k in a]))
    assert diff.max() < 1e-4, diff.max()
    print(f"\nEER verify.py {ours_eer:.2f}%, upstream speaker_verification_cosine.py "
          f"{up_eer:.4f}% ({len(a)} trials; largest score difference {diff.max():.2e})")


def _git_status(folder):
    """``git status`` of a checkout, ignored files included (None where it is no git tree)."""
    proc = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--ignored"],
                          capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


# --------------------------------------------- pretrained start, the upstream way
ARCH = {"n_mels": 40, "channels": 32, "attention_channels": 64, "emb_dim": 96}


def build_hub_style_folder(folder, speakers, seed=0):
    """A folder laid out like ``speechbrain/spkrec-ecapa-voxceleb``, made with
    SpeechBrain's own classes: ``hyperparams.yaml``, ``embedding_model.ckpt``,
    ``classifier.ckpt`` (state dicts, every tensor random so that nothing
    matches a fresh model by chance) and ``label_encoder.txt`` (CategoricalEncoder)."""
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    os.makedirs(folder, exist_ok=True)
    c = ARCH["channels"]
    encoder = ECAPA_TDNN(
        input_size=ARCH["n_mels"], channels=[c, c, c, c, 3 * c], kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1], attention_channels=ARCH["attention_channels"],
        lin_neurons=ARCH["emb_dim"],
    )
    classifier = Classifier(input_size=ARCH["emb_dim"], out_neurons=len(speakers))
    gen = torch.Generator().manual_seed(seed)
    states = {}
    for name, module in (("embedding_model", encoder), ("classifier", classifier)):
        state = module.state_dict()
        for value in state.values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                value.fill_(7)
        torch.save(state, os.path.join(folder, f"{name}.ckpt"))
        states[name] = {k: v.clone() for k, v in state.items()}
    labels = CategoricalEncoder()
    labels.update_from_iterable(speakers)
    labels.save(os.path.join(folder, "label_encoder.txt"))
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as fout:
        fout.write(f"""n_mels: {ARCH['n_mels']}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [{c}, {c}, {c}, {c}, {3 * c}]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {ARCH['attention_channels']}
    lin_neurons: {ARCH['emb_dim']}
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {ARCH['emb_dim']}
    out_neurons: {len(speakers)}
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
""")
    return states


def assert_same_state(module, state):
    got = module.state_dict()
    assert got.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(got[key], state[key], rtol=0, atol=0, msg=key)


def _recipe_hparams(yaml_file, tmp_path, **overrides):
    base = {"data_folder": str(tmp_path / "data"), "output_folder": str(tmp_path / "out"),
            "channels": ARCH["channels"]}
    with open(yaml_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, dict(base, **overrides))


def test_pretrainer_loads_hub_style_folder(tmp_path, one_thread):
    """The YAML's pretrainer puts the folder's encoder and classifier weights in ours."""
    from sb_angcl.recipe import start_from_pretrained

    folder = str(tmp_path / "spkrec-ecapa-voxceleb")
    speakers = [f"id1{i:04d}" for i in range(7)]
    states = build_hub_style_folder(folder, speakers)
    hparams = _recipe_hparams(SMALL_YAML, tmp_path, out_n_neurons=len(speakers),
                              pretrained_model=folder, pretrained_classifier=True)
    with pytest.raises(AssertionError):  # a fresh encoder differs from the folder's
        assert_same_state(hparams["embedding_model"], states["embedding_model"])
    loaded = start_from_pretrained(hparams["pretrainer"], hparams["pretrained_model"])
    assert loaded == ["classifier", "embedding_model"]
    assert_same_state(hparams["embedding_model"], states["embedding_model"])
    assert_same_state(hparams["classifier"], states["classifier"])
    assert os.path.exists(os.path.join(hparams["save_folder"], "pretrained", "classifier.ckpt"))

    # pretrained_classifier: False (the training YAMLs' default): the encoder only.
    hparams = _recipe_hparams(SMALL_YAML, tmp_path, out_n_neurons=len(speakers),
                              pretrained_model=folder, output_folder=str(tmp_path / "o2"))
    fresh = {k: v.clone() for k, v in hparams["classifier"].state_dict().items()}
    assert start_from_pretrained(hparams["pretrainer"], folder) == ["embedding_model"]
    assert_same_state(hparams["classifier"], fresh)


def test_pretrainer_off_and_refusals(tmp_path):
    from sb_angcl.recipe import prepare_and_size, start_from_pretrained

    # Off: every recipe YAML loads with only data_folder given (no !PLACEHOLDER for an
    # optional path) and its pretrainer has nothing to load...
    yamls = sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "SpeakerRec", "hparams", "*.yaml")))
    yamls = [p for p in yamls if os.path.basename(p) != "verification.yaml"]  # scoring: no model
    assert len(yamls) == 8
    for path in yamls:
        text = open(path, encoding="utf-8").read()
        assert re.findall(r"^(\w+): !PLACEHOLDER", text, re.M) == ["data_folder"], path
        assert "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer" in text
        if "finetune" in path:
            continue
        hparams = _recipe_hparams(path, tmp_path)
        assert hparams["pretrained_model"] is None
        assert start_from_pretrained(hparams["pretrainer"], None) == []
    # ... except the fine-tuning YAMLs, which need a model: refused naming the key,
    # by train.py before data preparation and by the pretrainer step.
    for path in [p for p in yamls if "finetune" in p]:
        def prepare(hparams):
            raise AssertionError("data preparation ran before the check")

        with pytest.raises(ValueError, match=r"pretrained_model is null.*--pretrained_model="):
            prepare_and_size(path, {"data_folder": str(tmp_path)}, prepare)
        hparams = _recipe_hparams(path, tmp_path)
        with pytest.raises(ValueError, match="pretrained_model is null"):
            start_from_pretrained(hparams["pretrainer"], hparams["pretrained_model"])
    # A Hugging Face id: no network, the way to download it instead.
    hub = "speechbrain/spkrec-ecapa-voxceleb"
    hparams = _recipe_hparams(SMALL_YAML, tmp_path, pretrained_model=hub)
    with pytest.raises(FileNotFoundError, match=r"Hugging Face id.*huggingface-cli download "
                                                r"speechbrain/spkrec-ecapa-voxceleb"):
        start_from_pretrained(hparams["pretrainer"], hub)
    # A local folder without the files.
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    hparams = _recipe_hparams(SMALL_YAML, tmp_path, pretrained_model=empty)
    with pytest.raises(FileNotFoundError, match=r"embedding_model.ckpt not found"):
        start_from_pretrained(hparams["pretrainer"], empty)


def test_train_starts_from_hub_style_folder(vox_corpus, tmp_path):
    """train.py from such a folder, classifier included (as the fine-tuning YAMLs do): its
    label encoder is adopted (the classifier sized from it) and the weights at step 0 (no
    epoch run) are the folder's."""
    speakers = sorted(os.listdir(os.path.join(vox_corpus, "wav"))) + ["id19998", "id19999"]
    random.Random(3).shuffle(speakers)  # rows in an order of their own
    folder = str(tmp_path / "spkrec-ecapa-voxceleb")
    states = build_hub_style_folder(folder, speakers, seed=5)
    out = str(tmp_path / "run")
    run_script(os.path.join(VOX, "train.py"), [
        SMALL_YAML, f"--data_folder={vox_corpus}", f"--output_folder={out}",
        f"--pretrained_model={folder}", "--pretrained_classifier=True",
        f"--channels={ARCH['channels']}",
        "--number_of_epochs=0", "--speakers_per_batch=2", "--utterances_per_speaker=2",
        "--sentence_len=1.0", "--device=cpu",
    ], cwd=str(tmp_path))
    with open(os.path.join(folder, "label_encoder.txt"), encoding="utf-8") as fin:
        source_labels = fin.read()
    with open(os.path.join(out, "save", "label_encoder.txt"), encoding="utf-8") as fin:
        assert fin.read() == source_labels
    for name in ("embedding_model", "classifier"):
        exported = torch.load(os.path.join(out, "inference", f"{name}.ckpt"))
        assert exported.keys() == states[name].keys()
        for key in exported:
            torch.testing.assert_close(exported[key], states[name][key], rtol=0, atol=0)
    assert exported["weight"].shape[0] == len(speakers)
