#!/usr/bin/env bash
# GPU check of the server distillation script (annotated_examples/server_distillation_training.py),
# which cannot run on a CPU: a teacher served by vLLM, then a few training steps for each of the
# two supports (reverse KL on the sampled token, forward KL on the teacher's top 8), then checks
# on what the server answered and what the trainer logged. Exit 0 only if every check holds.
#
#   bash benchmarks/gpu_server_distillation.sh                 # 0.5B student, 1.5B teacher, 3 steps
#   TEACHER=Qwen/Qwen2.5-7B-Instruct STEPS=5 bash benchmarks/gpu_server_distillation.sh
#
# Needs: 1 CUDA GPU with at least 24 GB (the teacher's server takes 40% of it and the student
# trains beside it; with 2 GPUs the server gets GPU 0 and the student GPU 1), trl[vllm]==1.16.0
# installed beside this repository, and both models in the local Hugging Face cache or folders.
# Wall time: about 5 minutes (server start, 2 x STEPS steps), estimated, not measured: not run yet.
set -euo pipefail
STUDENT=${STUDENT:-Qwen/Qwen2.5-0.5B-Instruct}
TEACHER=${TEACHER:-Qwen/Qwen2.5-1.5B-Instruct}
STEPS=${STEPS:-3}
OUT=${OUT:-runs/gpu-check-server_distillation}
PORT=${PORT:-8000}
PY=${PY:-python}

gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 1 ]; then
    echo "error: this check needs a CUDA GPU; found none" >&2
    exit 2
fi
$PY -c "import vllm" 2>/dev/null || {
    echo "error: vLLM is not installed: pip install 'trl[vllm]==1.16.0'" >&2
    exit 2
}
if [ "$gpus" -ge 2 ]; then server_gpu=0 train_gpu=1 share=0.9; else server_gpu=0 train_gpu=0 share=0.4; fi
mkdir -p "$OUT"
[ -d tiny/data ] || annotated-trl tiny tiny  # the toy prompts (data/prompt_only)

# The teacher's server: `trl vllm-serve` adds --logprobs-mode processed_logprobs and
# --max-logprobs -1, which exact top-k scores need.
CUDA_VISIBLE_DEVICES=$server_gpu trl vllm-serve --model "$TEACHER" --port "$PORT" \
    --gpu_memory_utilization "$share" >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://localhost:$PORT/health" >/dev/null && break
    kill -0 $server 2>/dev/null || { echo "error: the server died: $OUT/server.log" >&2; exit 1; }
    sleep 5
done

# 1. The server's scores are the teacher's: its top-8 log-probs on a sequence equal a local
# transformers forward of the same teacher (bf16 kernels differ: 0.05 nats of slack).
CUDA_VISIBLE_DEVICES=$train_gpu $PY - "$TEACHER" "http://localhost:$PORT" <<'PYEOF'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.generation.vllm_client import VLLMClient
teacher, url = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(teacher)
prompt = tok("What is 12 + 30?")["input_ids"]
sequence = prompt + tok(" 12 + 30 = 42, the answer.")["input_ids"]
answer = VLLMClient(base_url=url, connection_timeout=60).get_sequence_logprobs([sequence], [len(prompt)], top_logprobs=8)
model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32).cuda()
with torch.no_grad():
    logp = model(torch.tensor([sequence]).cuda()).logits[0, :-1].float().log_softmax(-1).cpu()
local = logp[len(prompt) - 1 :]
server_top = torch.tensor(answer["logprobs"][0])
local_top = local.topk(8, dim=-1).values
actual = torch.tensor(answer["actual_logprobs"][0])[:, 0]
local_actual = local.gather(-1, torch.tensor(sequence[len(prompt):])[:, None])[:, 0]
assert server_top.shape == local_top.shape, (server_top.shape, local_top.shape)
assert (server_top - local_top).abs().max() < 0.05, (server_top - local_top).abs().max()
assert (actual - local_actual).abs().max() < 0.05, (actual - local_actual).abs().max()
print("OK server scores:", float((server_top - local_top).abs().max()))
PYEOF

# 2. A few steps of each support.
run() {  # name, extra flags
    CUDA_VISIBLE_DEVICES=$train_gpu $PY annotated_examples/server_distillation_training.py \
        --config annotated_examples/recipes/server_distillation.yaml \
        --model_name_or_path "$STUDENT" --teacher_model_server_url "http://localhost:$PORT" \
        --dataset_name tiny/data/prompt_only --max_steps "$STEPS" --logging_steps 1 \
        --save_strategy no --per_device_train_batch_size 4 --gradient_accumulation_steps 1 \
        --max_completion_length 64 --output_dir "$OUT/$1" "${@:2}" 2>&1 | tee "$OUT/$1.log"
}
run reverse_top1
run forward_top8 --beta 0.0 --loss_top_k 8

# What must hold: every step logged with a finite, positive loss and no entropy key (this
# trainer's compute_loss does not log it), for both supports.
for name in reverse_top1 forward_top8; do
$PY - "$OUT/$name/trainer_state.json" "$STEPS" <<'PYEOF'
import json, math, sys
state = json.load(open(sys.argv[1]))
steps = [row for row in state["log_history"] if "loss" in row]
assert len(steps) == int(sys.argv[2]), f"{len(steps)} logged steps, expected {sys.argv[2]}"
for row in steps:
    assert math.isfinite(row["loss"]) and row["loss"] > 0, row
    assert "entropy" not in row and row["completions/mean_length"] > 0, row
print("OK:", sys.argv[1], [round(row["loss"], 4) for row in steps])
PYEOF
done
