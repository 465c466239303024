"""Datasets and audio pipelines shared by the recipes.

Training items are cropped at load time (a fresh window each time a row is
drawn; shorter utterances are repeat-padded). Audio at another sample rate is
resampled on load, multi-channel audio averaged to mono.

Authors
 * sb-angcl contributors
"""

import csv
import logging
import math
import os
import random

import speechbrain as sb
import speechbrain.dataio.audio_io as audio_io
import torch
import torchaudio

# audio_io is the module itself, not speechbrain.dataio's lazy export of it: every
# attribute read on a SpeechBrain LazyModule inspects the caller's frame (about
# 0.1 ms, twice per training item).

logger = logging.getLogger(__name__)

#: Files already reported by the evaluation pipeline (one warning per process).
_REPORTED_NONFINITE = set()


class AudioReadError(RuntimeError):
    """An audio file named in a manifest cannot be read."""


def load_segment(path, start=0, stop=None, sample_rate=16000, return_rate=False):
    """Load samples ``[start, stop)`` of a file (at its own rate) as mono at ``sample_rate``.

    ``stop`` None reads to the end. Returns the 1-D float32 waveform (and the
    file's own rate, with ``return_rate``); raises :class:`AudioReadError`
    naming an unreadable file.

    Example
    -------
    >>> import soundfile, numpy, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(path, numpy.zeros(8000, dtype="float32"), 8000)
    >>> load_segment(path, sample_rate=16000).shape
    torch.Size([16000])
    """
    num_frames = -1 if stop is None else max(int(stop) - int(start), 0)
    try:
        signal, file_rate = audio_io.load(
            str(path), channels_first=True, frame_offset=int(start), num_frames=num_frames
        )
    except Exception as err:  # soundfile raises several error types
        raise AudioReadError(
            f"Cannot read audio file {path}: {err}. Check the file, or rerun data "
            "preparation (it skips unreadable files)."
        ) from err
    signal = signal[0].float() if signal.shape[0] == 1 else signal.float().mean(dim=0)
    if file_rate != sample_rate:
        signal = torchaudio.functional.resample(signal, file_rate, sample_rate)
    return (signal, file_rate) if return_rate else signal


def crop_or_pad(signal, num_samples, rng=None):
    """Cut a window of ``num_samples``, or repeat-pad a short signal.

    The window's offset is drawn from ``rng`` (None: the centre window).

    Example
    -------
    >>> crop_or_pad(torch.arange(3.0), 7)
    tensor([0., 1., 2., 0., 1., 2., 0.])
    >>> crop_or_pad(torch.arange(10.0), 4)
    tensor([3., 4., 5., 6.])
    """
    length = signal.shape[0]
    if length == 0:
        raise AudioReadError("empty waveform: nothing to crop or pad")
    if length < num_samples:
        repeats = -(-num_samples // length)
        return signal.repeat(repeats)[:num_samples]
    if length == num_samples:
        return signal
    if rng is None:
        offset = (length - num_samples) // 2
    else:
        offset = rng.randint(0, length - num_samples)
    return signal[offset : offset + num_samples]


class CropRandom:
    """Crop positions that are fresh in every worker and epoch, yet reproducible.

    One ``random.Random(seed)`` would be copied into every DataLoader worker
    and, with non-persistent workers, afresh every epoch: the same crops again.
    Each draw is seeded from ``(seed, epoch, worker, item id, occurrence)``
    instead, the epoch read from ``epoch_source.current`` (the checkpointed
    ``EpochCounter``; None: epoch 0), so an utterance drawn ``K`` times in a
    batch gets ``K`` crops and no generator state needs saving. ``seed`` None
    draws one from the OS.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> counter = SimpleNamespace(current=1)
    >>> crops = CropRandom(7, counter)
    >>> a, b = crops.for_item("u1").random(), crops.for_item("u1").random()
    >>> a != b  # second occurrence in the same epoch: a new crop
    True
    >>> counter.current = 2
    >>> crops.for_item("u1").random() in (a, b)
    False
    >>> CropRandom(7, SimpleNamespace(current=1)).for_item("u1").random() == a
    True
    """

    def __init__(self, seed=None, epoch_source=None):
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        self.epoch_source = epoch_source
        self._counts = {}
        self._key = None

    def epoch(self):
        """The current epoch (0 without an epoch source)."""
        return 0 if self.epoch_source is None else int(self.epoch_source.current)

    def for_item(self, item_id):
        """A generator for the next draw of ``item_id`` in this worker and epoch."""
        info = torch.utils.data.get_worker_info()
        key = (self.epoch(), 0 if info is None else info.id)
        if key != self._key:
            self._key, self._counts = key, {}
        occurrence = self._counts.get(item_id, 0)
        self._counts[item_id] = occurrence + 1
        # Kept so that a draw can start over: ``rng.seed(crops.last_seed)``.
        self.last_seed = f"{self.seed}|{key[0]}|{key[1]}|{item_id}|{occurrence}"
        return random.Random(self.last_seed)


def make_train_pipeline(
    crop_seconds, sample_rate=16000, seed=None, epoch_source=None, with_speed=False
):
    """Dynamic item taking ``id, wav, start, stop`` and providing a random crop ``sig``.

    Only the crop's samples are read, at a position from :class:`CropRandom`
    (``seed``, ``epoch_source``). NaN and inf samples become zeros, counted in
    ``sig_nonfinite`` (the Brain names the file). ``with_speed`` also takes
    the rows' ``speed`` (:func:`derive_training_set`): the crop is played that
    many times faster.

    Example
    -------
    >>> make_train_pipeline(1.0, with_speed=True).takes
    ('id', 'wav', 'start', 'stop', 'speed')
    """
    crops = CropRandom(seed, epoch_source)
    num_samples = int(round(crop_seconds * sample_rate))
    rates = {}  # the files (seen by this process) that are not at sample_rate

    def crop(item_id, wav, start, stop, speed=1.0):
        rng = crops.for_item(item_id)
        start, stop, speed = int(start), int(stop), float(speed)
        # A file's rate is taken to be sample_rate (no header read per item); the read
        # tells: where it is another, the window is drawn again, from the same seed,
        # at the file's rate and read again.
        file_rate = rates.get(wav, sample_rate)
        for _ in range(2):
            # A copy played `speed` times faster needs `speed` times the audio.
            want = int(round(crop_seconds * file_rate * speed))
            first, last = start, stop
            if stop - start > want:
                first = rng.randint(start, stop - want)
                last = first + want
            signal, read_rate = load_segment(wav, first, last, sample_rate, return_rate=True)
            if read_rate == file_rate:
                break
            rates[wav] = file_rate = read_rate
            rng.seed(crops.last_seed)
        signal, bad = replace_nonfinite(signal)
        if speed != 1.0:
            # Read at sample_rate * speed, played at sample_rate: `speed` times faster.
            signal = torchaudio.functional.resample(
                signal, int(round(sample_rate * speed)), sample_rate
            )
        return crop_or_pad(signal, num_samples, rng), bad

    @sb.utils.data_pipeline.takes("id", "wav", "start", "stop", *(["speed"] if with_speed else []))
    @sb.utils.data_pipeline.provides("sig", "sig_nonfinite")
    def train_audio(*row):
        yield from crop(*row)

    return train_audio


def replace_nonfinite(signal):
    """``(signal, count)``: NaN and inf samples set to 0 (the input itself if none), and how many.

    Example
    -------
    >>> replace_nonfinite(torch.tensor([0.5, float("nan"), float("inf")]))
    (tensor([0.5000, 0.0000, 0.0000]), 2)
    """
    if math.isfinite(float(signal.sum())):  # one reduction; a NaN or inf makes the sum one
        return signal, 0
    finite = torch.isfinite(signal)  # (or finite values whose sum overflows: counted here)
    count = int(finite.numel() - finite.sum())
    if count == 0:
        return signal, 0
    return torch.where(finite, signal, torch.zeros_like(signal)), count


def make_eval_pipeline(sample_rate=16000, max_seconds=None, min_seconds=0.5):
    """Dynamic item taking ``wav, start, stop`` and providing the whole row as ``sig``.

    Only the centre ``max_seconds`` are kept (None: all); shorter signals than
    ``min_seconds`` are repeat-padded (the encoder needs a few frames).
    """

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def eval_audio(wav, start, stop):
        start, stop = int(start), int(stop)
        signal = load_segment(wav, start, stop if stop > start else None, sample_rate)
        signal, bad = replace_nonfinite(signal)
        if bad and wav not in _REPORTED_NONFINITE:
            _REPORTED_NONFINITE.add(wav)
            logger.warning(
                "%s holds %d non-finite (NaN/inf) samples; they were replaced by "
                "zeros. Re-convert or remove the file.", wav, bad,
            )
        if signal.shape[0] == 0:
            raise AudioReadError(f"Empty audio in {wav}; remove it from the manifest.")
        if max_seconds is not None and signal.shape[0] > max_seconds * sample_rate:
            signal = crop_or_pad(signal, int(max_seconds * sample_rate))
        minimum = int(min_seconds * sample_rate)
        if signal.shape[0] < minimum:
            signal = crop_or_pad(signal, minimum)
        return signal

    return eval_audio


def speaker_label_pipeline(label_encoder):
    """Dynamic item providing ``spk_id`` and ``spk_id_encoded`` (by ``label_encoder``)."""

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        yield spk_id
        yield torch.LongTensor([label_encoder.encode_label(spk_id)])

    return label_pipeline


def load_manifest(csv_path, data_root=None):
    """Read a manifest into a ``DynamicItemDataset`` (``$data_root`` replaced by ``data_root``).

    Example
    -------
    >>> load_manifest("/no/such.csv")
    Traceback (most recent call last):
     ...
    FileNotFoundError: Manifest /no/such.csv not found: run data preparation first (the recipe's *_prepare.py, or drop --skip_prep).
    """
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(
            f"Manifest {csv_path} not found: run data preparation first "
            "(the recipe's *_prepare.py, or drop --skip_prep)."
        )
    replacements = {"data_root": data_root} if data_root else {}
    return sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=csv_path, replacements=replacements
    )


def build_label_encoder(train_data, path):
    """The encoder of ``train_data``'s ``spk_id``: loaded from ``path``, or fitted and saved there."""
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load_or_create(path=path, from_didatasets=[train_data], output_key="spk_id")
    return encoder


def speaker_datasets(hparams):
    """``(train, valid, label_encoder)`` of a speaker recipe's ``hparams``.

    The training set is derived (:func:`derive_training_set`); both sets crop
    ``sentence_len`` seconds (validation with fixed crops) and encode speakers.
    """
    sample_rate = hparams["sample_rate"]
    train_data = derive_training_set(
        load_manifest(hparams["train_annotation"], hparams["data_folder"]),
        hparams["speed_perturb_speakers"], hparams["label_noise"], hparams["seed"],
    )
    valid_data = load_manifest(hparams["valid_annotation"], hparams["data_folder"])
    encoder_file = f"{hparams['save_folder']}/label_encoder.txt"
    label_encoder = build_label_encoder(train_data, encoder_file)
    absent = sorted({row["spk_id"] for row in train_data.data.values()} - set(label_encoder.lab2ind))
    if absent:
        raise ValueError(
            f"{encoder_file} lacks training speakers ({absent[:5]}...): it was made for other "
            "training labels (speed_perturb_speakers or label_noise changed?). Delete it, or "
            "use another save_folder."
        )
    unknown = sorted(
        {row["spk_id"] for row in valid_data.data.values()}
        - set(label_encoder.lab2ind)
    )
    if unknown:
        raise ValueError(
            f"{hparams['valid_annotation']} has speakers absent from training "
            f"({unknown[:5]}...); validation must use training speakers."
        )
    train_pipeline = make_train_pipeline(
        hparams["sentence_len"], sample_rate, seed=hparams["seed"],
        epoch_source=hparams["epoch_counter"],
        with_speed=bool(hparams["speed_perturb_speakers"]),
    )
    sb.dataio.dataset.add_dynamic_item([train_data], train_pipeline)
    valid_pipeline = make_train_pipeline(hparams["sentence_len"], sample_rate, seed=0)
    sb.dataio.dataset.add_dynamic_item([valid_data], valid_pipeline)
    sb.dataio.dataset.add_dynamic_item(
        [train_data, valid_data], speaker_label_pipeline(label_encoder)
    )
    sb.dataio.dataset.set_output_keys(
        [train_data, valid_data], ["id", "wav", "sig", "sig_nonfinite", "spk_id_encoded"]
    )
    return train_data, valid_data, label_encoder


#: How a speed-perturbed pseudo-speaker is named: ``<speaker>@sp<factor>``.
PSEUDO_SPEAKER = "{speaker}@sp{factor:g}"


def derive_training_set(train_data, speed_factors=(), label_noise=0.0, seed=0):
    """The training set with speed-perturbed pseudo-speakers and noisy labels.

    Returns ``train_data`` itself when neither is asked for.

    * ``label_noise``: a seeded fraction of the rows is filed under another
      training speaker (uniformly); ``true_spk_id`` keeps the truth and
      ``label_noise`` says 1.
    * ``speed_factors`` (e.g. ``[0.9, 1.1]``, WeSpeaker's ``speed_perturb``):
      every row gets a copy per factor, played ``factor`` times faster, filed
      under the new speaker ``<speaker>@sp<factor>``; rows gain a ``speed``
      column that the training pipeline applies.

    The result depends on the rows and ``seed`` alone, so every process of a
    run derives the same set.

    Example
    -------
    >>> data = sb.dataio.dataset.DynamicItemDataset({
    ...     f"u{i}": {"spk_id": f"s{i % 4}", "duration": 2.0} for i in range(8)})
    >>> out = derive_training_set(data, [0.9, 1.1], label_noise=0.25, seed=3)
    >>> len(out), len({row["spk_id"] for row in out.data.values()})
    (24, 12)
    >>> sum(row["label_noise"] for row in out.data.values())  # 2 rows and their copies
    6
    >>> out.data["u1@sp1.1"]["duration"], out.data["u1@sp1.1"]["speed"]
    (1.8181818181818181, 1.1)
    """
    factors = [float(f) for f in speed_factors or ()]
    bad = [f for f in factors if f <= 0 or f == 1.0]
    if bad or len(set(factors)) != len(factors):
        raise ValueError(
            f"speed_perturb_speakers must be distinct positive factors other than 1 "
            f"(e.g. [0.9, 1.1]), got {list(speed_factors)}"
        )
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1), got {label_noise}")
    if not factors and label_noise == 0.0:
        return train_data
    rows = {uid: dict(row) for uid, row in train_data.data.items()}
    for row in rows.values():
        row.setdefault("true_spk_id", row["spk_id"])
        row["label_noise"] = int(str(row.get("label_noise", 0)) == "1")
    if label_noise > 0.0:
        _relabel(rows, label_noise, seed)
    if factors:
        for row in rows.values():
            row["speed"] = 1.0
        for uid, row in list(rows.items()):
            for factor in factors:
                copy = dict(row, speed=factor, duration=float(row["duration"]) / factor)
                copy["spk_id"] = PSEUDO_SPEAKER.format(speaker=row["spk_id"], factor=factor)
                copy["true_spk_id"] = PSEUDO_SPEAKER.format(
                    speaker=row["true_spk_id"], factor=factor
                )
                rows[f"{uid}@sp{factor:g}"] = copy
    return sb.dataio.dataset.DynamicItemDataset(rows)


def _relabel(rows, fraction, seed):
    """File ``round(fraction * len(rows))`` rows under another speaker (in place)."""
    speakers = sorted({row["spk_id"] for row in rows.values()})
    if len(speakers) < 2:
        raise ValueError("label_noise needs at least two training speakers")
    rng = random.Random(f"label-noise|{seed}")
    chosen = rng.sample(sorted(rows), int(round(fraction * len(rows))))
    for uid in chosen:
        row = rows[uid]
        others = [s for s in speakers if s != row["spk_id"]]
        row["spk_id"] = rng.choice(others)
        row["label_noise"] = 1
    logger.info(
        "label_noise: %d of %d training utterances (%.1f %%) relabelled to another speaker "
        "(seed %s); true labels in the column true_spk_id.",
        len(chosen), len(rows), 100.0 * len(chosen) / len(rows), seed,
    )


def write_dataset_csv(dataset, path):
    """Write a dataset's rows as a manifest CSV (``ID`` first, then every column).

    Example
    -------
    >>> import tempfile
    >>> data = sb.dataio.dataset.DynamicItemDataset({"u1": {"spk_id": "s1", "duration": 2.0}})
    >>> path = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> write_dataset_csv(data, path)
    >>> open(path).read().splitlines()
    ['ID,spk_id,duration', 'u1,s1,2.0']
    """
    columns = []
    for row in dataset.data.values():
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["ID"] + columns)
        for uid, row in dataset.data.items():
            writer.writerow([uid] + [row.get(c, "") for c in columns])
