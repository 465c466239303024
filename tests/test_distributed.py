"""DDP tests on CPU (gloo): negatives gathered from every rank, same alpha, same weights.

Two processes are spawned with a ``file://`` rendezvous; each drives
:class:`~sb_angcl.training.brain.AngularContrastiveBrain` (SpeechBrain's own DDP
wrapping) on its half of a global batch. The oracle is the same Brain in this
(non-distributed) process on the concatenated batch: losses, ``alpha`` (for
``mgda_ub`` and ``mgda``) and the weights after a few SGD steps must match.
A last test runs the small VoxCeleb recipe under ``torchrun`` with 2 processes.
"""

import datetime
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import speechbrain as sb
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from sb_angcl.data.sampler import SpeakerBalancedBatchSampler
from sb_angcl.objective.balancing import make_balancer
from sb_angcl.objective.distributed import gather_no_grad, gather_with_grad
from sb_angcl.objective.joint import JointObjective
from sb_angcl.objective.losses import AngularSupConLoss
from sb_angcl.training.brain import AngularContrastiveBrain

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
FEAT, FRAMES = 6, 10
SPEAKERS_PER_RANK, UTTS = 2, 2
CLASSES = 5
STEPS = 3
LR = 0.2
# (balancing, gradient_normalization, gather_across_ranks)
CONFIGS = [
    ("mgda_ub", "none", True),
    ("mgda", "none", True),
    ("mgda_ub", "loss", True),
    ("mgda", "loss", True),
    ("fixed", "none", True),
    ("mgda_ub", "none", False),
]
BF16_CONFIG = ("mgda_ub", "none", True)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- tiny model
class Frames(torch.nn.Module):
    """Waveform ``[B, FEAT * FRAMES]`` to "features" ``[B, FRAMES, FEAT]``."""

    def forward(self, wavs):
        return wavs.reshape(wavs.shape[0], -1, FEAT)


class CentreFrames(torch.nn.Module):
    """Per-utterance mean removal, with mean_var_norm's signature."""

    def forward(self, feats, lens):
        return feats - feats.mean(dim=1, keepdim=True)


class TinyEncoder(torch.nn.Module):
    """Frame-wise MLP and mean pooling to ``[B, 1, 8]``."""

    def __init__(self):
        super().__init__()
        self.frame = torch.nn.Linear(FEAT, 16)
        self.out = torch.nn.Linear(16, 8)

    def forward(self, feats, lens=None):
        return self.out(torch.tanh(self.frame(feats)).mean(dim=1)).unsqueeze(1)


class RecordingBrain(AngularContrastiveBrain):
    """Keeps the two objectives of every training batch."""

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if "objective" in outputs:
            parts = outputs["objective"]
            self.parts.append((float(parts.loss_cls.detach()), float(parts.loss_con.detach())))
        super().on_fit_batch_end(batch, outputs, loss, should_step)


def objective_hparams(balancing, normalization, gather):
    """The Brain's hparams: the recipe's objective, no augmentation, schedule or logs."""
    return {
        # A moderate AAM scale keeps alpha inside (0, 1) on these batches,
        # so that the alpha comparisons are not between two clipped values.
        "objective": JointObjective(
            LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 5)),
            AngularSupConLoss(0.2, 0.1, attention_temperature=1.0),
            make_balancer(balancing, 0.3, normalization),
            gather,
        ),
        "augmentation": "none",
        "positive_views": 1,
        "lr_annealing": None,
        "error_stats": None,
        "train_logger": None,
    }


def make_brain(balancing, normalization, gather, precision="fp32", dtype=torch.float64):
    torch.manual_seed(0)
    # Float64 weights keep rounding differences (the all-reduce sums in
    # another order than one process does) far below the tolerance; the
    # objectives themselves still run in float32 inside the Brain.
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": CentreFrames(),
        "embedding_model": TinyEncoder().to(dtype),
        "classifier": Classifier(8, out_neurons=CLASSES).to(dtype),
    }
    brain = RecordingBrain(
        modules,
        lambda params: torch.optim.SGD(params, lr=LR),
        objective_hparams(balancing, normalization, gather),
        run_opts={
            "device": "cpu",
            "distributed_backend": "gloo",
            "max_grad_norm": 1e9,
            "precision": precision,
        },
    )
    brain.parts = []
    return brain


def make_batch(step, rank, world, dtype=torch.float64):
    """Rank ``rank``'s part of global step ``step`` (speakers in rank order)."""
    g = torch.Generator().manual_seed(100 + step)
    n_global = 2 * SPEAKERS_PER_RANK * UTTS
    wavs = torch.randn(n_global, FEAT * FRAMES, generator=g, dtype=torch.float64)
    labels = [(i // UTTS + step) % CLASSES for i in range(n_global)]
    # Same speaker, similar signal: gives the encoder something to learn.
    wavs += 2.0 * torch.stack(
        [torch.sin(torch.arange(FEAT * FRAMES, dtype=torch.float64) * (1 + y)) for y in labels]
    )
    wavs = wavs.to(dtype)
    n_local = n_global // world
    lo = rank * n_local
    return sb.dataio.batch.PaddedBatch(
        [
            {
                "id": f"s{step}u{i}",
                "sig": wavs[i],
                "spk_id_encoded": torch.LongTensor([labels[i]]),
            }
            for i in range(lo, lo + n_local)
        ]
    )


def train_config(config, rank, world, steps=STEPS, precision="fp32", dtype=torch.float64):
    balancing, normalization, gather = config
    brain = make_brain(balancing, normalization, gather, precision, dtype)
    brain.on_fit_start()
    wrapped = isinstance(brain.modules.embedding_model, torch.nn.parallel.DistributedDataParallel)
    alphas = []
    for step in range(steps):
        brain.fit_batch(make_batch(step, rank, world, dtype))
        alphas.append(brain.last_alpha)
    params = {
        name: p.detach().clone()
        for key in ("embedding_model", "classifier")
        for name, p in getattr(brain.modules[key], "module", brain.modules[key]).named_parameters(
            prefix=key
        )
    }
    return {"parts": brain.parts, "alpha": alphas, "params": params, "ddp": wrapped}


# ---------------------------------------------------------------- worker
def _worker(rank, world, init_file, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {"configs": {cfg: train_config(cfg, rank, world) for cfg in CONFIGS}}
        results["bf16"] = train_config(BF16_CONFIG, rank, world, 2, "bf16", torch.float32)
        results.update(_checks(rank, world))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _checks(rank, world):
    """Smaller things that need a live process group."""
    out = {}
    # Gather with gradient: d(sum(w * gathered))/dx = sum over ranks of w[slice].
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (weights * (rank + 1) * gathered).sum().backward()
    out["gathered"] = gathered.detach()
    out["gather_grad"] = x.grad.clone()
    out["labels"] = gather_no_grad(torch.tensor([10 * rank, 10 * rank + 1]))
    # Unequal local batches: a clear error on every rank, not a hang.
    try:
        gather_with_grad(torch.zeros(rank + 1, 2))
        out["unequal_error"] = ""
    except RuntimeError as err:
        out["unequal_error"] = str(err)
    # The sampler reads rank / world from the process group.
    labels = [s for s in range(6) for _ in range(5)]
    sampler = SpeakerBalancedBatchSampler(labels, SPEAKERS_PER_RANK, UTTS, seed=3)
    sampler.set_epoch(1)
    out["sampler"] = {
        "rank": sampler.rank,
        "replicas": sampler.num_replicas,
        "batches": [[labels[i] for i in b] for b in sampler],
    }
    # The Brain's DDP wrapping of a BatchNorm model on CPU (SpeechBrain's own
    # converts to SyncBatchNorm, which PyTorch refuses on CPU).
    torch.manual_seed(0)
    brain = AngularContrastiveBrain(
        {"enc": torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))},
        lambda params: torch.optim.SGD(params, lr=LR),
        objective_hparams("mgda_ub", "none", True),
        run_opts={"device": "cpu", "distributed_backend": "gloo"},
    )
    brain.on_fit_start()
    enc = brain.modules["enc"]
    y = enc(torch.randn(5, 3, generator=torch.Generator().manual_seed(rank)))
    y.square().sum().backward()
    out["bn_wrapped"] = type(enc).__name__
    out["bn_grad"] = enc.module[0].weight.grad.clone()
    return out


@pytest.fixture(scope="module")
def ddp_results():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.spawn(_worker, args=(WORLD, init_file, tmp), nprocs=WORLD, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    single = {cfg: train_config(cfg, 0, 1) for cfg in CONFIGS}
    single["bf16"] = train_config(BF16_CONFIG, 0, 1, 2, "bf16", torch.float32)
    return ranks, single


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if c[2]], ids=lambda c: "-".join(map(str, c))
)
def test_gathered_losses_and_alpha_equal_single_process(ddp_results, config):
    ranks, single = ddp_results
    ref = single[config]
    assert not ref["ddp"]
    for r in range(WORLD):
        assert ranks[r]["configs"][config]["ddp"], "the Brain did not wrap its modules in DDP"
    for step in range(STEPS):
        ref_cls, ref_con = ref["parts"][step]
        for r in range(WORLD):
            _, con = ranks[r]["configs"][config]["parts"][step]
            assert con == pytest.approx(ref_con, rel=1e-5, abs=1e-6), (step, r)
            alpha = ranks[r]["configs"][config]["alpha"][step]
            assert alpha == pytest.approx(ref["alpha"][step], abs=1e-5), (step, r)
        # Local classification loss: mean over the local batch, so the mean
        # over ranks is the single-process (global) mean.
        cls = sum(ranks[r]["configs"][config]["parts"][step][0] for r in range(WORLD)) / WORLD
        assert cls == pytest.approx(ref_cls, rel=1e-5), step
        # Every rank applies exactly the same alpha.
        assert len({ranks[r]["configs"][config]["alpha"][step] for r in range(WORLD)}) == 1
    if config[0] != "fixed":
        # The comparison means something only if alpha is not clipped.
        assert any(0.02 < a < 0.98 for a in ref["alpha"]), ref["alpha"]


@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if c[2]], ids=lambda c: "-".join(map(str, c))
)
def test_weights_after_ddp_steps_equal_single_process(ddp_results, config):
    ranks, single = ddp_results
    ref = single[config]["params"]
    moved = max(float((ref[k] - make_reference_init()[k]).abs().max()) for k in ref)
    assert moved > 1e-2, "the optimiser barely moved: the comparison would be vacuous"
    for r in range(WORLD):
        params = ranks[r]["configs"][config]["params"]
        for name, value in ref.items():
            torch.testing.assert_close(params[name], value, rtol=1e-5, atol=1e-5, msg=name)
    for name in ref:
        assert torch.equal(
            ranks[0]["configs"][config]["params"][name],
            ranks[1]["configs"][config]["params"][name],
        )


def make_reference_init():
    brain = make_brain("fixed", "none", True)
    return {
        name: p.detach().clone()
        for key in ("embedding_model", "classifier")
        for name, p in brain.modules[key].named_parameters(prefix=key)
    }


def test_without_gathering_each_rank_sees_only_its_own_negatives(ddp_results):
    ranks, _ = ddp_results
    config = ("mgda_ub", "none", False)
    for r in range(WORLD):
        # Oracle: one process on this rank's slice only (first step, same init).
        brain = make_brain(*config)
        brain.on_fit_start()
        brain.fit_batch(make_batch(0, r, WORLD))
        local_con = brain.parts[0][1]
        assert ranks[r]["configs"][config]["parts"][0][1] == pytest.approx(local_con, rel=1e-5)
    gathered = ("mgda_ub", "none", True)
    assert ranks[0]["configs"][config]["parts"][0][1] != pytest.approx(
        ranks[0]["configs"][gathered]["parts"][0][1], rel=1e-3
    )


def test_gather_helpers_under_gloo(ddp_results):
    ranks, _ = ddp_results
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    weights = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["gathered"], expected)
        # Loss on rank q is (q + 1) * sum(w * gathered): the gradient of rank
        # r's slice is the sum over ranks, (1 + 2) * w[slice].
        torch.testing.assert_close(ranks[r]["gather_grad"], 3.0 * weights[2 * r : 2 * r + 2])
        assert ranks[r]["labels"].tolist() == [0, 1, 10, 11]
        assert "same local batch size" in ranks[r]["unequal_error"]


def test_sampler_gives_each_rank_its_own_speakers(ddp_results):
    ranks, _ = ddp_results
    infos = [ranks[r]["sampler"] for r in range(WORLD)]
    assert [i["rank"] for i in infos] == list(range(WORLD))
    assert all(i["replicas"] == WORLD for i in infos)
    n_batches = {len(i["batches"]) for i in infos}
    assert len(n_batches) == 1 and n_batches.pop() > 0
    for step in range(len(infos[0]["batches"])):
        speakers = [set(i["batches"][step]) for i in infos]
        assert all(len(s) == SPEAKERS_PER_RANK for s in speakers)
        assert not speakers[0] & speakers[1], step


def test_ddp_wrapping_handles_batchnorm_on_cpu(ddp_results):
    ranks, _ = ddp_results
    assert ranks[0]["bn_wrapped"] == "DistributedDataParallel"
    # DDP averaged the gradients: both ranks hold the same one.
    torch.testing.assert_close(ranks[0]["bn_grad"], ranks[1]["bn_grad"])


def test_bf16_autocast_under_ddp(ddp_results):
    """bf16 embeddings are gathered over gloo; ranks stay identical."""
    ranks, single = ddp_results
    ref = single["bf16"]
    for r in range(WORLD):
        res = ranks[r]["bf16"]
        assert all(torch.isfinite(torch.tensor(p)).all() for p in res["parts"])
        for step in range(2):
            assert res["parts"][step][1] == pytest.approx(ref["parts"][step][1], rel=1e-2)
            assert res["alpha"][step] == pytest.approx(ref["alpha"][step], abs=2e-2)
        for name, value in ref["params"].items():
            assert value.dtype == torch.float32
            torch.testing.assert_close(res["params"][name], value, rtol=1e-2, atol=1e-3)
    for name in ref["params"]:
        assert torch.equal(ranks[0]["bf16"]["params"][name], ranks[1]["bf16"]["params"][name])


def _nonfinite_worker(rank, world, init_file, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=20),
    )
    result = {"error": ""}
    try:
        brain = make_brain("mgda_ub", "none", True)
        aam = brain.hparams.objective.classification_loss
        calls = []

        def poisoned(*args):
            calls.append(1)
            loss = aam(*args)
            # Only rank 0, only its second batch: a local non-finite loss.
            return loss * float("inf") if rank == 0 and len(calls) == 2 else loss

        brain.on_fit_start()
        brain.hparams.objective.classification_loss = poisoned
        for step in range(3):
            brain.fit_batch(make_batch(step, rank, world))
        result["skipped"] = brain.skipped_nonfinite
        result["params"] = [p.detach().clone() for p in brain.modules.parameters()]
    except Exception as err:  # a desynchronised rank times out in gloo
        result["error"] = f"{type(err).__name__}: {err}"[:300]
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_nonfinite_loss_on_one_rank_is_skipped_by_every_rank():
    """A batch skipped on one rank only would leave the others waiting forever."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.spawn(_nonfinite_worker, args=(WORLD, init_file, tmp), nprocs=WORLD, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    for r in range(WORLD):
        assert not ranks[r]["error"], (
            f"rank {r}: {ranks[r]['error']} -- AngularContrastiveBrain.fit_batch must "
            "decide to skip a non-finite loss on all ranks together "
            "(sb_angcl.training.nonfinite.all_ranks_finite)"
        )
        assert ranks[r]["skipped"] == 1
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- recipe
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_COUNTING_LAUNCHER = """
import os, runpy, sys
recipe = sys.argv[1]
sys.path.insert(0, recipe)
import voxceleb_prepare
real_prepare = voxceleb_prepare.prepare_voxceleb
def counting_prepare(*args, **kwargs):
    with open(os.environ["PREP_MARK"], "a") as fout:
        fout.write(os.environ.get("RANK", "?") + "\\n")
    return real_prepare(*args, **kwargs)
voxceleb_prepare.prepare_voxceleb = counting_prepare
sys.argv = [os.path.join(recipe, "train.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_small_recipe_under_torchrun_two_processes(tmp_path):
    """``torchrun --nproc_per_node=2 train.py`` on a generated corpus (gloo, ~20 s).

    ``train.py`` runs unchanged through a tiny launcher that only counts the
    calls of the data preparation (it must run on rank 0 alone).
    """
    if AngularContrastiveBrain._wrap_distributed is sb.Brain._wrap_distributed:
        pytest.fail(
            "AngularContrastiveBrain must override _wrap_distributed for CPU: "
            "SpeechBrain's own wrapping converts BatchNorm to SyncBatchNorm, which "
            "fails on CPU."
        )
    python = sys.executable
    subprocess.run(
        [
            python,
            "-m",
            "synthetic_corpus",
            "--output",
            str(tmp_path / "corpus"),
            "--layout",
            "voxceleb",
            "--speakers",
            "8",
            "--utterances",
            "6",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    out = tmp_path / "out"
    recipe = REPO / "recipes" / "VoxCeleb" / "SpeakerRec"
    launcher = tmp_path / "launch.py"
    launcher.write_text(_COUNTING_LAUNCHER)
    mark = tmp_path / "prepare_calls.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PREP_MARK=str(mark))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        python,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(launcher),
        str(recipe),
        "hparams/train_ecapa_angcl_small.yaml",
        f"--data_folder={tmp_path / 'corpus' / 'VoxCeleb1'}",
        f"--output_folder={out}",
        "--distributed_backend=gloo",
        "--device=cpu",
        "--number_of_epochs=1",
        "--speakers_per_batch=2",
        "--utterances_per_speaker=2",
        "--channels=32",
        "--n_mels=24",
        "--emb_dim=32",
        "--attention_channels=16",
    ]
    proc = subprocess.run(
        cmd,
        check=False,
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert mark.read_text().split() == ["0"], "data preparation must run on rank 0 only"
    assert (out / "save" / "train.csv").exists()
    checkpoints = list((out / "save").glob("CKPT+*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "embedding_model.ckpt").exists()
    for name in (
        "hyperparams.yaml",
        "embedding_model.ckpt",
        "classifier.ckpt",
        "label_encoder.txt",
    ):
        assert (out / "inference" / name).exists(), name
    train_log = (out / "train_log.txt").read_text()
    assert train_log.count("epoch: 1") == 1 and "train alpha" in train_log
    assert "per rank (2 ranks)" in log  # the sampler split the speakers between ranks
