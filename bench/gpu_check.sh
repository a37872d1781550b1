#!/usr/bin/env bash
# GPU check: a short CUDA training with bf16 and torch.compile (and 2-process DDP when 2 GPUs exist),
# printing steps/s and peak memory. Run on a machine with a GPU from the repository root:
#   bash bench/gpu_check.sh            # uses .venv/bin/python if present, else python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
out=${OUT:-/tmp/febm-gpu-check}
mkdir -p "$out"
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
PY
common=(--div js --arch resnet --width 64 --stages 3 --batch-size 128 --langevin-steps 40 --max-steps 60
        --log-every 10 --checkpoint-every 1000 --sample-every 1000 --no-progress)
for compile in no-compile compile; do
  $PY -m training.run "${common[@]}" --$compile --bf16 --run-dir "$out/bf16-$compile"
  $PY - "$out/bf16-$compile" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/stats.jsonl") if '"step"' in l]
late = rows[len(rows) // 2:]
print(sys.argv[1], "steps/s %.2f" % (1 / (sum(r["step_time"] for r in late) / len(late))),
      "peak GPU memory %.0f MiB" % rows[-1]["peak_memory_mb"])
PY
done
if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  $PY -m torch.distributed.run --nproc-per-node=2 -m training.run "${common[@]}" --bf16 --run-dir "$out/ddp2"
fi
