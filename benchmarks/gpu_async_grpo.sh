#!/usr/bin/env bash
# GPU check of the Async GRPO script (annotated_examples/async_grpo_training.py), which cannot run
# on a CPU: a vLLM server on GPU 0 and the trainer on GPU 1 (NCCL needs two devices: one GPU
# cannot hold both ends of the weight transfer), a few steps on the toy arithmetic prompts, then
# checks on what the trainer logged. Exit 0 only if every check holds.
#
#   bash benchmarks/gpu_async_grpo.sh                      # Qwen2.5-0.5B-Instruct, 5 steps
#   MODEL=/path/to/model STEPS=10 bash benchmarks/gpu_async_grpo.sh
#
# Needs: 2 CUDA GPUs (Hopper or newer for the FlashAttention-3 tree kernel), trl[vllm]==1.16.0
# installed beside this repository, and MODEL in the local Hugging Face cache or a folder.
# Wall time: about 5 minutes (server start, 5 steps), estimated, not measured.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
STEPS=${STEPS:-5}
OUT=${OUT:-runs/gpu-check-async_grpo}
PORT=${PORT:-8000}
PY=${PY:-python}

gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 2 ]; then
    echo "error: this check needs 2 CUDA GPUs (server + trainer); found $gpus" >&2
    exit 2
fi
$PY -c "import vllm" 2>/dev/null || {
    echo "error: vLLM is not installed: pip install 'trl[vllm]==1.16.0'" >&2
    exit 2
}
mkdir -p "$OUT"
[ -d tiny/data ] || annotated-trl tiny tiny  # the toy prompts (data/conversational_prompt_only)

# The server, in the trainer's dtype (AsyncGRPOConfig.dtype defaults to float32).
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model "$MODEL" --dtype float32 --port "$PORT" \
    >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://localhost:$PORT/health" >/dev/null && break
    kill -0 $server 2>/dev/null || { echo "error: the server died: $OUT/server.log" >&2; exit 1; }
    sleep 5
done

CUDA_VISIBLE_DEVICES=1 $PY annotated_examples/async_grpo_training.py \
    --config annotated_examples/recipes/async_grpo.yaml \
    --model_name_or_path "$MODEL" --vllm_server_base_url "http://localhost:$PORT" \
    --dataset_name tiny/data/conversational_prompt_only \
    --reward_funcs annotated_trl.toy_task.arithmetic_reward \
    --max_steps "$STEPS" --logging_steps 1 --save_strategy no \
    --per_device_train_batch_size 16 --max_completion_length 64 \
    --output_dir "$OUT/run" 2>&1 | tee "$OUT/train.log"

# What must hold: every step logged, finite loss, staleness within max_staleness (4), the first
# step's ratio and kl near 1 and 0 (same weights, same dtype on both sides), and the server's
# weights reached in time (a weight-sync time per step).
$PY - "$OUT/run/trainer_state.json" "$STEPS" <<'EOF'
import json, math, sys
state = json.load(open(sys.argv[1]))
steps = [row for row in state["log_history"] if "loss" in row]
assert len(steps) == int(sys.argv[2]), f"{len(steps)} logged steps, expected {sys.argv[2]}"
for row in steps:
    assert math.isfinite(row["loss"]), row
    assert row["sample/staleness_max"] <= 4, row
    assert row["perf/weight_sync_s"] > 0, row
first = steps[0]
assert abs(first["ratio"] - 1) < 0.05 and first["kl"] < 0.01, first
print("OK:", json.dumps({k: first[k] for k in ("ratio", "kl", "sample/staleness_mean", "reward")}))
EOF
