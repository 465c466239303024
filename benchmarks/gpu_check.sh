#!/usr/bin/env bash
# GPU check of the full-size recipe, for the first time a GPU machine is at hand.
#
#   bash benchmarks/gpu_check.sh            # ~10-20 min on one recent GPU
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # checks the script on a CPU
#
# 1. The machine (nvidia-smi, torch build).
# 2. Step time of AAM-softmax alone vs the paper's system (AM-SupCon + CAA +
#    MGDA-UB) at C = 1024, 128 utterances of 2 s, fp32 (benchmarks/step_overhead.py).
# 3. fp16, bf16 and fp32 training of both systems through train.py's entry on
#    the built-in corpus, a few hundred steps each: median step time, peak
#    memory, batches skipped for non-finite values, final losses and alpha
#    (benchmarks/gpu_probe.py). Paste the tables into the README.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda:0}"
QUICK="${QUICK:-0}"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"

echo "== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
"$PYTHON" -c "import torch, speechbrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'speechbrain', speechbrain.__version__, 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"

echo "== step time, AAM vs paper system"
if [ "$QUICK" = "1" ]; then
    "$PYTHON" benchmarks/step_overhead.py --device "$DEVICE" --quick --no-progress --variants aam mgda_ub \
        | tee "$OUT/step_overhead.txt"
else
    "$PYTHON" benchmarks/step_overhead.py --device "$DEVICE" --channels 1024 --n-mels 80 --emb-dim 192 \
        --batch 128 --seconds 2 --variants aam mgda_ub --threads 0 --no-progress \
        | tee "$OUT/step_overhead.txt"
fi

echo "== mixed-precision training on the built-in corpus"
if [ "$QUICK" = "1" ]; then
    "$PYTHON" benchmarks/gpu_probe.py --device "$DEVICE" --quick --precisions fp32 \
        --workdir "$OUT/probe" 2>"$OUT/gpu_probe.log" | tail -n 8 | tee "$OUT/gpu_probe.txt"
else
    "$PYTHON" benchmarks/gpu_probe.py --device "$DEVICE" --precisions fp16 bf16 fp32 \
        --workdir "$OUT/probe" 2>"$OUT/gpu_probe.log" | tail -n 12 | tee "$OUT/gpu_probe.txt"
fi
echo "== tables in $OUT/step_overhead.txt and $OUT/gpu_probe.txt"
