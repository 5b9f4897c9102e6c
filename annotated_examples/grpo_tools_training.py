r"""GRPO with tools: multi-turn rollouts that call functions, with TRL's `GRPOTrainer`

The same GRPO as `grpo_training.py` (a group of completions per prompt, rewards centred on their
group, the clipped surrogate), but a completion may now *call a tool*: the trainer parses the
call out of the generated text, runs the Python function, appends its result to the conversation
and lets the policy go on writing. The whole exchange (the model's call, the tool's result, the
model's answer) is one completion, and only the tokens the model wrote are trained: the tool's
tokens are masked out of the loss.

Tools come from an *environment* (`--environment`: a class; one instance per rollout, its public
methods are the tools, `reset` starts a rollout and an optional `get_reward` scores it) or are
plain functions (`--tools`). Both are loaded only from the dotted import paths you pass.

```bash { .no-run }
# Tiny CPU run on the offline fixture: the tool policy (its own tokenizer and chat template) and
# single-digit problems with a calculator (annotated_trl.tool_task), about a minute:
annotated-trl tiny tiny
python annotated_examples/grpo_tools_training.py \
    --config annotated_examples/recipes/grpo_tools_tiny.yaml

# One GPU: Qwen2.5-0.5B-Instruct (TRL knows its chat template and parses its tool calls) with the
# calculator on four-digit problems, written first (20,000 prompts, no network):
python -m annotated_trl.tool_task data/calculator --rows 20000 --low 100 --high 9999
python annotated_examples/grpo_tools_training.py --config annotated_examples/recipes/grpo_tools.yaml

# Eight GPUs, generating with vLLM on one of them (server mode):
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch --num_processes 7 \
    annotated_examples/grpo_tools_training.py --config annotated_examples/recipes/grpo_tools.yaml \
    --use_vllm --vllm_mode server

# LoRA:
python annotated_examples/grpo_tools_training.py \
    --config annotated_examples/recipes/grpo_tools.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear --learning_rate 1e-5

# Stateless tools instead of an environment, at most two rounds of calls per completion:
python annotated_examples/grpo_tools_training.py \
    --config annotated_examples/recipes/grpo_tools_tiny.yaml --environment none \
    --tools annotated_trl.tool_task.add annotated_trl.tool_task.multiply \
    --max_tool_calling_iterations 2
```
"""

import inspect
import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import (
    GRPOConfig,
    GRPOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)
from trl.chat_template_utils import add_response_schema, supports_tool_calling

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, import_reward_func, load_rewards

# ## 1. Arguments
#
# Everything of `grpo_training.py` (`GRPOConfig`, `ModelConfig`, `--reward_funcs`), plus where
# the tools come from. `GRPOConfig.max_tool_calling_iterations` caps the rounds of tool calls in
# one completion; unset, there is no cap (the trainer uses `sys.maxsize`), and only
# `max_completion_length` ends a model that keeps calling.


@dataclass
class GRPOToolsScriptArguments(ScriptArguments):
    environment: str | None = field(
        default="annotated_trl.tool_task.Calculator",
        metadata={
            "help": "Environment class, as a dotted import path: one instance per rollout, its "
            "public methods are the tools. `none`: no environment."
        },
    )
    tools: list[str] | None = field(
        default=None,
        metadata={"help": "Tool functions, as dotted import paths (package.module.function)."},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )


parser = TrlParser((GRPOToolsScriptArguments, GRPOConfig, ModelConfig))
parser.set_defaults(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="data/calculator")
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer: a chat template that knows tools
#
# Tool calling needs two things from the tokenizer, and both are checked here, before the model
# loads (the trainer would refuse only after loading it):
#
# - the chat template must *render* tools and tool calls: the tools' schemas into the prompt, an
#   assistant turn with `tool_calls`, a `tool` turn with a result;
# - a *response template* must parse generated text back into a message with `tool_calls`.
#   Qwen2.5's, Qwen3's, Llama 3.1's and a few others are known to TRL, which sets the response
#   template itself (`add_response_schema`); the tiny fixture's tokenizer carries its own.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)
model_name = model_args.model_name_or_path
if not supports_tool_calling(tokenizer):
    sys.exit(
        f"error: the chat template of {model_name} cannot render tool calls (an assistant turn "
        "with tool_calls and a tool turn); use an instruct model trained for tool use"
    )
if getattr(tokenizer, "response_template", None) is None:
    try:
        add_response_schema(tokenizer)
    except ValueError:
        sys.exit(
            f"error: no response template to parse tool calls from {model_name}'s completions; "
            "set tokenizer.response_template (see the transformers response-parsing docs)"
        )

# ## 3. Tools, environment and rewards
#
# A tool is a Python function with type hints and a docstring whose `Args:` section describes
# each argument: transformers turns it into the JSON schema that the chat template shows the
# model (`get_json_schema`). An environment is a class; the trainer makes one instance per
# rollout (and reuses them, calling `reset(**row)` with the dataset row before each rollout), so
# its tools can keep state for one rollout. Its `get_reward()`, if any, is one more reward
# function, weight 1, logged under the class name (`rewards/Calculator/mean`).


def import_named(path: str, what: str):
    """`import_reward_func`'s checks, with the error naming what was asked for."""
    try:
        return import_reward_func(path)
    except RewardError as error:
        sys.exit(f"error: {str(error).replace('reward function', what, 1)}")


environment = None
if script_args.environment and script_args.environment.lower() != "none":
    environment = import_named(script_args.environment, "environment")
    if not inspect.isclass(environment) or not callable(getattr(environment, "reset", None)):
        sys.exit(
            f"error: environment {script_args.environment!r} is not a class with a reset method"
        )
tools = [import_named(path, "tool") for path in script_args.tools or []]
if environment is None and not tools:
    sys.exit("error: no tools: pass --environment package.module.Class or --tools a.b.f")

# Rewards are as in `grpo_training.py`: each function gets the completions (lists of messages:
# assistant, tool, assistant, ...) and every extra column of the dataset, and returns one float
# per completion. Reward the model's own last message, not the last message (after a truncated
# turn that may be the tool's result: the model would be paid for what the tool said).
try:
    reward_funcs = load_rewards(script_args.reward_funcs, None, training_args.reward_weights)
except RewardError as error:
    sys.exit(f"error: {error}")
if not reward_funcs and not callable(getattr(environment, "get_reward", None)):
    sys.exit(
        "error: no reward: pass --reward_funcs package.module.function, or an --environment "
        "whose class has a get_reward method"
    )

# ## 4. Data
#
# Prompts only, as for GRPO: `{"prompt": [{"role": "user", "content": "What is 7 * 8?"}], ...}`.
# The extra columns (here `answer`) go to the reward functions and to the environment's `reset`.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="grpo_tools",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

train_dataset = dataset[script_args.dataset_train_split]
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

# ## 5. Model
#
# Loaded by the trainer from its name, as in `grpo_training.py`; with `beta = 0` (the default),
# no reference model.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer: the tool loop
#
# For each prompt the trainer samples $G$ completions. Then, while some completion ends in a
# tool call (and fewer than `max_tool_calling_iterations` rounds have run):
#
# 1. parse the call (`tokenizer.parse_response`), run the tool; an exception becomes the result
#    `{"error": "..."}`, so a malformed call teaches instead of crashing;
# 2. append the template's tokens for the tool turn (its header, the result, the next assistant
#    header) to the completion, marked `tool_mask = 0`;
# 3. generate the model's next turn from the whole conversation, marked `tool_mask = 1`.
#
# A tool result that would push the completion past `max_completion_length` is dropped and the
# completion ends there. The loss is GRPO's, with the mask $m_{i,t}$ = completion mask ×
# `tool_mask`: a tool token has no log-probability under the policy that anything should push.
#
# $$\mathcal{L} = -\frac{1}{\sum_{i,t} m_{i,t}} \sum_{i,t} m_{i,t}
#   \min\big(\rho_{i,t} A_i,\; \operatorname{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon) A_i\big)$$
#
# (`loss_type: dapo`; `reference_guides/grpo_tools.md` derives it and tests it token by token).

trainer = GRPOTrainer(
    model=model_args.model_name_or_path,
    reward_funcs=reward_funcs or None,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    tools=tools or None,
    environment_factory=environment,
    peft_config=get_peft_config(model_args),
    quantization_config=get_quantization_config(model_args),
)

# ## 7. Train
#
# Logged besides GRPO's metrics: `tools/call_frequency` (tool calls per completion, all rounds
# counted), `tools/failure_frequency` (the share of calls that raised: unknown tool, bad
# arguments), one `rewards/<name>/mean` per reward (the environment's under its class name).
# `completions/mean_length` counts only the model's tokens, not the tools'.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 8. Save

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
