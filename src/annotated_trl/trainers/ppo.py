r"""PPO for language models (RLHF), written on `transformers.Trainer` for TRL 1.16.

TRL removed its `PPOTrainer` in 1.13.0. This module is our own implementation with trl 1.12.0's
names (`PPOConfig`, `PPOTrainer`, the same constructor and config fields), so migrating is one
import line; `tests/test_ppo_parity.py` checks that it logs what 1.12 logs, step by step.

One PPO *update* (Schulman et al. 2017, as applied to language by Ziegler et al. 2019, with the
details catalogued by Huang et al. 2024, "The N+ implementation details of RLHF with PPO"):

1. **rollout** — sample a response $y$ for each prompt $x$ of the batch at temperature $T$;
   record the policy's log-probabilities, the reference model's, the value model's estimates
   $V(s_t)$ and the reward model's score of the (truncated) response;
2. **rewards** — a per-token KL penalty $-\beta\,\mathrm{KL}_t$ everywhere, plus the score at
   the end of the response;
3. **advantages** — generalised advantage estimation (GAE), backwards over the response;
4. **optimisation** — `num_ppo_epochs` passes over the batch in shuffled mini-batches,
   minimising the clipped policy surrogate plus `vf_coef` times the clipped value loss, with the
   policy and the value model in one optimiser.

The pure functions below are the math; `PPOTrainer.train` strings them together.
"""

import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import (
    DataCollatorWithPadding,
    GenerationConfig,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.integrations import get_reporting_integration_callbacks
from transformers.trainer import DEFAULT_CALLBACKS, DEFAULT_PROGRESS_CALLBACK
from transformers.trainer_callback import CallbackHandler, ExportableState, PrinterCallback
from trl.models.utils import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import disable_dropout_in_model, pad, selective_log_softmax

# The log-probability written at padding positions. Any finite value would do: every use is
# masked. 1.0 (not 0.0) makes a forgotten mask visible, since no real log-probability is > 0.
INVALID_LOGPROB = 1.0


@dataclass
class PPOConfig(TrainingArguments):
    r"""Configuration of [`PPOTrainer`]: trl 1.12.0's `PPOConfig` field for field.

    Batch sizes: one PPO update samples `batch_size` = `per_device_train_batch_size` ×
    `gradient_accumulation_steps` × processes responses (`local_batch_size` per process), splits
    them into `num_mini_batches` mini-batches of micro-batches of `per_device_train_batch_size`,
    and passes over them `num_ppo_epochs` times. As in trl 1.12 (kept for parity), gradients
    accumulate over all `gradient_accumulation_steps` micro-batches of a pass, so the optimiser
    steps once per PPO epoch whatever `num_mini_batches` is; more steps per rollout come from
    `num_ppo_epochs`. (accelerate also steps on every micro-batch while the dataloader sits on
    its last batch.) The fields
    `world_size`, `num_total_batches`, `micro_batch_size`, `local_batch_size`, `batch_size`,
    `local_mini_batch_size` and `mini_batch_size` are computed by the trainer; leave them unset.

    Defaults that differ from `TrainingArguments`: `learning_rate` 3e-6, `logging_steps` 10,
    `gradient_checkpointing` True and `bf16` True unless `fp16` is set (trl's defaults). As in
    1.12, the PPO loop logs every update and does not read `logging_steps`, and does not turn on
    gradient checkpointing: both fields are kept for compatibility of configs and command lines.
    """

    learning_rate: float = field(default=3e-6, metadata={"help": "AdamW's initial learning rate."})
    logging_steps: float = field(default=10, metadata={"help": "Kept for compatibility."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Kept for compatibility (the PPO loop does not use it)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to True unless fp16."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for dataset preparation (scripts)."}
    )
    num_mini_batches: int = field(
        default=1,
        metadata={"help": "Mini-batches per PPO epoch; as in trl 1.12 they add no optimiser step."},
    )
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Responses to sample in all; default num_train_epochs × dataset size."},
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per no-grad forward pass during the rollout."}
    )
    num_sample_generations: int = field(
        default=10,
        metadata={"help": "How many times to print sample completions of the eval set."},
    )
    response_length: int = field(default=53, metadata={"help": "Tokens sampled per response."})
    stop_token: Literal["eos"] | None = field(
        default=None,
        metadata={"help": "'eos' stops responses at the tokenizer's EOS; excludes stop_token_id."},
    )
    stop_token_id: int | None = field(
        default=None, metadata={"help": "Token id that ends a response; excludes stop_token."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of responses without an EOS token."},
    )
    sft_model_path: str = field(
        default="EleutherAI/pythia-160m", metadata={"help": "The SFT policy (scripts)."}
    )
    world_size: int | None = field(default=None, metadata={"help": "Computed: processes."})
    num_total_batches: int | None = field(default=None, metadata={"help": "Computed: PPO updates."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Computed: per-device batch × processes."}
    )
    local_batch_size: int | None = field(
        default=None, metadata={"help": "Computed: prompts per update and process."}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Computed: prompts per update, all processes."}
    )
    local_mini_batch_size: int | None = field(
        default=None, metadata={"help": "Computed: mini-batch per process."}
    )
    mini_batch_size: int | None = field(
        default=None, metadata={"help": "Computed: mini-batch, all processes."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the model after training."})
    reward_model_path: str = field(
        default="EleutherAI/pythia-160m", metadata={"help": "The reward model (scripts)."}
    )
    model_adapter_name: str | None = field(
        default=None, metadata={"help": "PEFT adapter to train, with several adapters."}
    )
    ref_adapter_name: str | None = field(
        default=None, metadata={"help": "PEFT adapter that acts as the reference policy."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten the per-token rewards before GAE."}
    )
    kl_coef: float = field(default=0.05, metadata={"help": "β, the weight of the KL penalty."})
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1",
        metadata={"help": "Per-token KL estimator: 'k1' = log-ratio, 'k3' = (r - 1) - log r."},
    )
    cliprange: float = field(default=0.2, metadata={"help": "ε of the clipped policy ratio."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "How far a value may move from its rollout estimate."}
    )
    gamma: float = field(default=1.0, metadata={"help": "γ, the discount factor."})
    lam: float = field(default=0.95, metadata={"help": "λ of GAE."})
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={"help": "DeepSpeed ZeRO-3: gather the policy's weights to generate."},
    )

    def __post_init__(self):
        self.bf16 = not self.fp16 if self.bf16 is None else self.bf16
        super().__post_init__()


# ## The math, one function per equation (tests/test_ppo_math.py checks each)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true."""
    if axis is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(axis=axis) / mask.sum(axis=axis)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is true, Bessel-corrected by default."""
    centred = values - masked_mean(values, mask)
    variance = masked_mean(centred**2, mask)
    if unbiased:
        count = mask.sum()
        if count == 0:
            raise ValueError("cannot whiten an empty mask: increase the mini-batch size")
        variance = variance * (count / (count - 1))  # Bessel's correction
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True):
    """(x - mean) / std over the masked entries; `shift_mean=False` adds the mean back."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + 1e-8)
    return whitened if shift_mean else whitened + mean


def per_token_kl(logprobs, ref_logprobs, estimator: str) -> torch.Tensor:
    r"""KL(π‖π_ref) estimated per sampled token, with $\log r = \log π_\text{ref} - \log π$.

    k1 = $-\log r$ (unbiased, can be negative); k3 = $(r - 1) - \log r$ (unbiased, never negative,
    lower variance). Schulman, "Approximating KL divergence" (2020).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    return (log_ratio.exp() - 1) - log_ratio


def response_masks(sequence_lengths: torch.Tensor, length: int):
    """(padding_mask, padding_mask_p1): True where a response position is padding.

    `sequence_lengths` holds the index of each response's last kept token. The policy's mask
    hides everything after it; the value mask hides one position less, keeping the position
    just after the last token, where `add_score` credits the score.
    """
    positions = torch.arange(length, device=sequence_lengths.device)
    positions = positions.repeat(len(sequence_lengths), 1)
    padding_mask = positions > sequence_lengths.unsqueeze(1)
    padding_mask_p1 = positions > (sequence_lengths + 1).unsqueeze(1)
    return padding_mask, padding_mask_p1


def add_score(non_score_reward: torch.Tensor, scores: torch.Tensor, sequence_lengths):
    """Per-token rewards: the KL penalty everywhere, plus each response's score one position
    after its last kept token, or on the last position when the response fills the window."""
    rewards = non_score_reward.clone()
    rows = torch.arange(rewards.size(0), device=rewards.device)
    score_at = sequence_lengths + 1
    score_at = torch.where(score_at < rewards.size(1), score_at, sequence_lengths)
    rewards[rows, score_at] += scores
    return rewards


def generalized_advantages(rewards, values, gamma: float, lam: float):
    r"""GAE, backwards over the response: $δ_t = r_t + γV_{t+1} - V_t$,
    $A_t = δ_t + γλA_{t+1}$, with $V_{T} = 0$ past the last token. Returns (advantages, returns),
    returns $= A_t + V_t$ (the value model's regression target)."""
    length = rewards.shape[1]
    next_advantage = 0
    advantages = [None] * length
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[t] = next_advantage
    advantages = torch.stack(advantages, dim=1)
    return advantages, advantages + values


def clipped_value_loss(new_values, old_values, returns, mask, clip: float):
    r"""The clipped value loss over `mask` and the fraction of tokens where clipping won:
    $\tfrac12\,\mathrm{mean}\,\max\big((V - R)^2,
    (\mathrm{clip}(V, V_\text{old} - ε_V, V_\text{old} + ε_V) - R)^2\big)$."""
    clipped = torch.clamp(new_values, old_values - clip, old_values + clip)
    unclipped_loss = torch.square(new_values - returns)
    clipped_loss = torch.square(clipped - returns)
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def clipped_policy_loss(new_logprobs, old_logprobs, advantages, mask, clip: float):
    r"""PPO's clipped surrogate, $\mathrm{mean}\,\max(-A\rho, -A\,\mathrm{clip}(\rho, 1 \pm ε))$
    with $\rho = π_θ / π_\text{old}$ per token, over `mask`; also the clip fraction and ρ."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac, ratio


# ## Sequences: generation, truncation, forward passes


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row; the row length where there is none."""
    length = bools.size(-1)
    positions = torch.arange(length, device=bools.device)
    return torch.min(torch.where(bools, positions, length), dim=-1).values


def truncate_response(stop_token_id: int, pad_token_id: int, responses: torch.Tensor):
    """Replace everything after the first stop token with padding (the stop token stays)."""
    stop_at = first_true_indices(responses == stop_token_id).unsqueeze(-1)
    positions = torch.arange(responses.shape[1], device=responses.device)
    return torch.masked_fill(responses, positions > stop_at, pad_token_id)


def model_inputs(query_responses: torch.Tensor, pad_token_id: int) -> dict:
    """Attention mask, position ids and input ids for a left-padded batch of sequences."""
    attention_mask = query_responses != pad_token_id
    return {
        "input_ids": torch.masked_fill(query_responses, ~attention_mask, 0),
        "attention_mask": attention_mask,
        "position_ids": attention_mask.cumsum(1) - attention_mask.long(),
    }


def forward(model, query_responses: torch.Tensor, pad_token_id: int):
    """One forward pass of a causal LM (or of the policy-and-value wrapper)."""
    inputs = model_inputs(query_responses, pad_token_id)
    return model(**inputs, return_dict=True, output_hidden_states=True)


def token_scores(model, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The scalar head of a sequence classifier applied at *every* position, shape (B, L, 1).

    `AutoModelForSequenceClassification` only returns the score at the last token, so we run
    its backbone and apply its `score` layer ourselves: the value model needs one value per
    token, and the reward model's score is read at a position we choose.
    """
    backbone = getattr(model, model.base_model_prefix)
    inputs = model_inputs(query_responses, pad_token_id)
    output = backbone(**inputs, return_dict=True, output_hidden_states=True, use_cache=False)
    return model.score(output.hidden_states[-1])


def sequence_scores(model, query_responses, pad_token_id: int, context_length: int):
    """The reward model's score at the last non-padding token of each response."""
    scores = token_scores(model, query_responses, pad_token_id)
    responses = query_responses[:, context_length:]
    last = first_true_indices(responses == pad_token_id) - 1 + context_length
    return scores[torch.arange(scores.size(0), device=scores.device), last].squeeze(-1)


@torch.no_grad()
def sample_responses(policy, queries, chunk_size: int, pad_token_id: int, generation_config):
    """Sample a response for every query, `chunk_size` queries at a time.

    Returns the query+response sequences and the logits `generate` sampled from (after its
    temperature warper), right-padded when chunks stopped at different lengths.
    """
    context_length = queries.shape[1]
    sequences, logits = [], []
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size]
        inputs = model_inputs(chunk, pad_token_id)
        output = policy.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            generation_config=generation_config,
            return_dict_in_generate=True,
            output_scores=True,
        )
        sequences.append(torch.cat((chunk, output.sequences[:, context_length:]), dim=1))
        logits.append(torch.stack(output.scores, 1))
    sequences = pad(sequences, padding_value=pad_token_id, padding_side="right")
    logits = pad(logits, padding_value=0, padding_side="right")
    rows = queries.shape[0]
    sequences = sequences.view(-1, sequences.shape[-1])[:rows]
    return sequences, logits.view(-1, *logits.shape[2:])[:rows]


class PolicyAndValueWrapper(torch.nn.Module):
    """Policy and value model as one module: one `accelerator.prepare`, one optimiser."""

    def __init__(self, policy, value_model):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.critic_backbone = getattr(value_model, value_model.base_model_prefix)

    # Read by trl's `unwrap_model_for_generation`, which pauses checkpointing to generate.
    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.policy.is_gradient_checkpointing

    def gradient_checkpointing_enable(self, **kwargs):
        self.policy.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self):
        self.policy.gradient_checkpointing_disable()

    def forward(self, **kwargs):
        hidden = self.critic_backbone(**kwargs).hidden_states[-1]
        return self.policy(**kwargs), self.value_model.score(hidden)


@dataclass
class OnlineTrainerState(TrainerState):
    """`TrainerState` plus the number of responses sampled so far."""

    episode: int = 0


class PPOTrainer(Trainer):
    """Proximal Policy Optimization for a causal LM, with a reward model and a value model.

    Same constructor as trl 1.12.0's `trl.experimental.ppo.PPOTrainer`: `train_dataset` holds
    tokenized prompts (`input_ids`), `reward_model` and `value_model` are
    `AutoModelForSequenceClassification` models with one label, `ref_model=None` makes a
    frozen copy of the policy (or, with PEFT, uses the policy with its adapter disabled).

    Our one addition: `reward_model` may also be a Python function
    `f(prompts: list[str], responses: list[str]) -> list[float]`, called on the decoded text
    (special tokens removed, responses cut at the stop token), for verifiable rewards.

    `transformers.Trainer` supplies the optimiser and scheduler, logging, callbacks and saving;
    `train` is our own loop, since PPO alternates rollouts and optimisation.
    """

    def __init__(
        self,
        args: PPOConfig,
        processing_class,
        model,
        ref_model,
        reward_model,
        train_dataset,
        value_model,
        data_collator=None,
        eval_dataset=None,
        optimizers=(None, None),
        callbacks=None,
        peft_config=None,
    ):
        # Trainer.__init__ is not called: it builds an accelerator, samplers and a training loop
        # for supervised batches. We set up what PPO needs and reuse Trainer's other methods.
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        if ref_model is model:
            raise ValueError("`ref_model` must be a copy of `model` (or None), not the same object")
        if args.stop_token and args.stop_token_id:
            raise ValueError("You cannot set both `stop_token` and `stop_token_id`.")
        if args.stop_token not in (None, "eos"):
            raise ValueError(f"Unknown `stop_token` {args.stop_token!r}; expected 'eos' or None")
        if args.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"`kl_estimator` must be 'k1' or 'k3', got {args.kl_estimator!r}")

        self.args = args
        self.processing_class = processing_class
        # Generation stops at the stop token, if any. Without one it always samples
        # `response_length` tokens: the model's own EOS is switched off too.
        self.stop_token_id = args.stop_token_id
        if args.stop_token == "eos":
            self.stop_token_id = processing_class.eos_token_id
        model.generation_config.eos_token_id = self.stop_token_id

        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.policy_model = model
        self.is_peft_model = hasattr(model, "peft_config")
        if ref_model is None and not self.is_peft_model:
            ref_model = self._frozen_copy(model)
        self.ref_model = ref_model  # None with PEFT: the policy without its adapter
        self.reward_model = reward_model
        self.value_model = value_model
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.train_dataset_len = len(train_dataset)
        self.data_collator = data_collator or DataCollatorWithPadding(processing_class)
        self.optimizer, self.lr_scheduler = optimizers
        self.optimizer_cls_and_kwargs = None

        # Batch sizes (see PPOConfig): one update = local_batch_size prompts per process.
        if args.total_episodes is None:
            args.total_episodes = int(args.num_train_epochs * self.train_dataset_len)
        # trl 1.12 left out mixed_precision, so `bf16: true` gave no autocast unless an accelerate
        # config set it; None keeps that config's (or ACCELERATE_MIXED_PRECISION's) choice.
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else None
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=precision
        )
        args.world_size = self.accelerator.num_processes
        args.local_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        args.micro_batch_size = args.per_device_train_batch_size * args.world_size
        args.batch_size = args.local_batch_size * args.world_size
        args.mini_batch_size = _exact_div(args.batch_size, args.num_mini_batches, "batch_size")
        args.local_mini_batch_size = _exact_div(
            args.local_batch_size, args.num_mini_batches, "local_batch_size"
        )
        if args.whiten_rewards and args.local_mini_batch_size < 8:
            raise ValueError(
                f"whiten_rewards needs at least 8 responses per mini-batch and process, got "
                f"{args.local_mini_batch_size}"
            )
        args.num_total_batches = math.ceil(args.total_episodes / args.batch_size)
        self.local_seed = args.seed + self.accelerator.process_index * 100003  # a prime
        if args.num_sample_generations > 0:
            self.sample_generations_freq = max(
                1, args.num_total_batches // args.num_sample_generations
            )

        # Dropout off everywhere: the log-probabilities and values of the rollout must be what
        # the same weights give again in the optimisation phase (the ratio starts at 1).
        for module in (self.policy_model, self.ref_model, self.value_model, self.reward_model):
            if isinstance(module, torch.nn.Module):
                disable_dropout_in_model(module)
        self.model = PolicyAndValueWrapper(self.policy_model, self.value_model)
        self.model.config = self.policy_model.config
        # One optimiser over policy *and* value parameters; the scheduler steps once per update.
        self.create_optimizer_and_scheduler(num_training_steps=args.num_total_batches)

        self._set_up_callbacks_and_state(callbacks)
        self.current_flos, self.hp_search_backend = 0, None
        state = self.accelerator.state
        self.is_deepspeed_enabled = getattr(state, "deepspeed_plugin", None) is not None
        self.is_fsdp_enabled = getattr(state, "fsdp_plugin", None) is not None
        self.hub_model_id = None
        # Read by Trainer._save on every process; Trainer.__init__ would set it (False unless the
        # model was sharded by from_pretrained). Without it `accelerate launch` fails at saving.
        self.is_distributed_loading_by_transformers = False
        if args.push_to_hub:
            self.init_hf_repo()
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)

        # Prompts in random order, whole batches only (a ragged last batch is dropped). The
        # shuffle is seeded with `seed` on every process, the sampling with a per-process seed.
        self.dataloader = torch.utils.data.DataLoader(
            train_dataset,
            batch_size=args.local_batch_size,
            shuffle=True,
            collate_fn=self.data_collator,
            drop_last=True,
        )
        torch.manual_seed(args.seed)
        self.model, self.optimizer, self.dataloader = self.accelerator.prepare(
            self.model, self.optimizer, self.dataloader
        )
        torch.manual_seed(self.local_seed)
        self.eval_dataloader = None  # only for the sample completions, in order
        if eval_dataset is not None:
            self.eval_dataloader = self.accelerator.prepare(
                torch.utils.data.DataLoader(
                    eval_dataset,
                    batch_size=args.per_device_eval_batch_size,
                    collate_fn=self.data_collator,
                    drop_last=True,
                )
            )
        for name in ("reward_model", "ref_model"):
            module = getattr(self, name)
            if isinstance(module, torch.nn.Module):
                if self.is_deepspeed_enabled:
                    setattr(self, name, prepare_deepspeed(module, self.accelerator))
                else:
                    setattr(self, name, module.to(self.accelerator.device))

    @staticmethod
    def _frozen_copy(model):
        import copy

        reference = copy.deepcopy(model)
        for parameter in reference.parameters():
            parameter.requires_grad = False
        return reference.eval()

    def _set_up_callbacks_and_state(self, callbacks):
        default = DEFAULT_CALLBACKS + get_reporting_integration_callbacks(self.args.report_to)
        self.callbacks = default + (callbacks or [])
        self.callback_handler = CallbackHandler(
            self.callbacks, self.model, self.processing_class, self.optimizer, self.lr_scheduler
        )
        self.add_callback(PrinterCallback if self.args.disable_tqdm else DEFAULT_PROGRESS_CALLBACK)
        self.control = TrainerControl()
        handlers = self.callback_handler.callbacks + [self.control]
        self.state = OnlineTrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=[cb for cb in handlers if isinstance(cb, ExportableState)],
        )

    def get_train_dataloader(self):
        return self.dataloader

    def get_eval_dataloader(self, eval_dataset=None):
        return self.eval_dataloader

    @contextmanager
    def null_ref_context(self):
        """With PEFT and no reference model, the reference is the policy without its adapter."""
        policy = self.accelerator.unwrap_model(self.model).policy
        use_base = self.is_peft_model and not self.args.ref_adapter_name
        with policy.disable_adapter() if use_base else nullcontext():
            if self.args.ref_adapter_name:
                policy.set_adapter(self.args.ref_adapter_name)
            yield
            if self.args.ref_adapter_name:
                policy.set_adapter(self.args.model_adapter_name or "default")

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save the policy only (not the value model): it is what the run was for."""
        wrapper = self.model
        self.model = self.accelerator.unwrap_model(wrapper).policy
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self.model = wrapper

    @torch.no_grad()
    def score(self, queries: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """One score per response: the reward model's at the last response token, or the
        reward function's on the decoded text."""
        pad_id = self.processing_class.pad_token_id
        if isinstance(self.reward_model, torch.nn.Module):
            sequences = torch.cat((queries, responses), 1)
            return sequence_scores(self.reward_model, sequences, pad_id, queries.shape[1])
        decode = self.processing_class.batch_decode
        prompts = decode(queries, skip_special_tokens=True)
        texts = decode(responses, skip_special_tokens=True)
        scores = self.reward_model(prompts, texts)
        return torch.tensor(scores, dtype=torch.float32, device=queries.device)

    @torch.no_grad()
    def rollout(self, queries: torch.Tensor, generation_config, generation_kwargs) -> dict:
        """Sample responses and score them: everything the optimisation phase needs."""
        args, pad_id = self.args, self.processing_class.pad_token_id
        context_length = queries.shape[1]
        chunk = args.local_rollout_forward_batch_size
        with unwrap_model_for_generation(
            self.model,
            self.accelerator,
            gather_deepspeed3_params=args.ds3_gather_for_generation,
            generation_kwargs=generation_kwargs,
        ) as unwrapped:
            query_responses, sampled_logits = sample_responses(
                unwrapped.policy, queries, chunk, pad_id, generation_config
            )
        value_model = self.accelerator.unwrap_model(self.model).value_model

        out = {k: [] for k in ("responses", "postprocessed", "logprobs", "ref_logprobs")}
        out |= {k: [] for k in ("values", "scores", "sequence_lengths")}
        for start in range(0, queries.shape[0], chunk):
            query = queries[start : start + chunk]
            query_response = query_responses[start : start + chunk]
            response = query_response[:, context_length:]
            # log π_old(y_t | ...): from the very logits the tokens were sampled from.
            logprob = selective_log_softmax(sampled_logits[start : start + chunk], response)
            # log π_ref(y_t | ...), at the same temperature as the sampling.
            if self.ref_model is None:
                with self.null_ref_context():
                    policy = self.accelerator.unwrap_model(self.model).policy
                    ref_output = forward(policy, query_response, pad_id)
            else:
                ref_output = forward(self.ref_model, query_response, pad_id)
            ref_logits = ref_output.logits[:, context_length - 1 : -1]
            ref_logits /= args.temperature + 1e-7
            ref_logprob = selective_log_softmax(ref_logits, response)
            # The reward model judges the response as a user would see it: cut after the stop
            # token. The value model sees the untruncated sequence, one value per position.
            postprocessed = response
            if self.stop_token_id is not None:
                postprocessed = truncate_response(self.stop_token_id, pad_id, response)
            value = token_scores(value_model, query_response, pad_id)
            score = self.score(query, postprocessed)
            out["responses"].append(response)
            out["postprocessed"].append(postprocessed)
            out["logprobs"].append(logprob)
            out["ref_logprobs"].append(ref_logprob)
            out["values"].append(value[:, context_length - 1 : -1].squeeze(-1))
            out["scores"].append(score)
            # Index of the last kept token (-1 for an empty response).
            out["sequence_lengths"].append(first_true_indices(postprocessed == pad_id) - 1)
        out = {k: torch.cat(v, 0) for k, v in out.items()}
        out["query_responses"] = query_responses
        out["context_length"] = context_length
        return out

    def train(self):
        """The PPO loop: rollout → rewards → GAE → `num_ppo_epochs` of mini-batch updates."""
        args, accelerator, model = self.args, self.accelerator, self.model
        tokenizer, device = self.processing_class, accelerator.device

        def forever():
            while True:
                yield from self.dataloader

        batches = forever()
        generation_kwargs = {
            "max_new_tokens": args.response_length,
            "temperature": args.temperature + 1e-7,
            "top_k": 0.0,
            "top_p": 1.0,
            "do_sample": True,
        }
        generation_config = GenerationConfig(**generation_kwargs)

        accelerator.print("===training policy===")
        start_time = time.time()
        # One slot per (epoch, mini-batch, micro-batch) for each statistic, averaged at the end
        # of the update. The last axis has `gradient_accumulation_steps` slots but a mini-batch
        # has gradient_accumulation_steps / num_mini_batches micro-batches: with
        # num_mini_batches > 1 some slots stay 0 and pull the logged averages towards 0.
        # trl 1.12 logs exactly this, so we keep it (see the walkthrough's metrics section).
        stats_shape = (args.num_ppo_epochs, args.num_mini_batches, args.gradient_accumulation_steps)
        stat_names = ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac")
        stats = {name: torch.zeros(stats_shape, device=device) for name in stat_names}
        stats |= {name: torch.zeros(stats_shape, device=device) for name in ("entropy", "ratio")}
        model.train()

        self.state.global_step = 0
        self.state.episode = 0
        self.state.max_steps = args.num_total_batches
        self.state.num_train_epochs = args.total_episodes / self.train_dataset_len
        for name in ("logging_steps", "eval_steps", "save_steps"):
            value = getattr(args, name)
            if value is not None:
                value = math.ceil(self.state.max_steps * value) if value < 1 else value
                setattr(self.state, name, value)
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if self.is_deepspeed_enabled:
            self.deepspeed = self.model_wrapped = self.model

        for update in range(1, args.num_total_batches + 1):
            self.state.episode += args.batch_size
            queries = next(batches)["input_ids"].to(device)
            with torch.no_grad():
                # 1. Rollout.
                roll = self.rollout(queries, generation_config, generation_kwargs)
                context_length = roll["context_length"]
                responses, scores = roll["responses"], roll["scores"]
                sequence_lengths = roll["sequence_lengths"]

                # 2. Responses that never produced EOS lose `missing_eos_penalty`.
                contains_eos = torch.any(roll["postprocessed"] == tokenizer.eos_token_id, dim=-1)
                if args.missing_eos_penalty is not None:
                    scores[~contains_eos] -= args.missing_eos_penalty

                # 3. Masks: padding_mask for the policy, one position longer for the value.
                padding_mask, padding_mask_p1 = response_masks(sequence_lengths, responses.shape[1])
                logprobs = torch.masked_fill(roll["logprobs"], padding_mask, INVALID_LOGPROB)
                ref_logprobs = torch.masked_fill(
                    roll["ref_logprobs"], padding_mask, INVALID_LOGPROB
                )
                values = torch.masked_fill(roll["values"], padding_mask_p1, 0)

                # 4. Rewards: -β KL_t on every token, plus the score at the end.
                kl = per_token_kl(logprobs, ref_logprobs, args.kl_estimator)
                non_score_reward = -args.kl_coef * kl
                rewards = add_score(non_score_reward, scores, sequence_lengths)
                if args.whiten_rewards:
                    rewards = masked_whiten(rewards, ~padding_mask_p1, shift_mean=False)
                    rewards = torch.masked_fill(rewards, padding_mask_p1, 0)

                # 5. Advantages by GAE, whitened over the response tokens; returns A + V.
                advantages, returns = generalized_advantages(rewards, values, args.gamma, args.lam)
                advantages = masked_whiten(advantages, ~padding_mask)
                advantages = torch.masked_fill(advantages, padding_mask, 0)

            # 6. Optimisation: num_ppo_epochs passes, each in a fresh random order. Gradients
            # accumulate over all gradient_accumulation_steps micro-batches of a pass: one
            # optimiser step per pass, as in trl 1.12 (mini-batches only group micro-batches).
            batch = {
                "query_responses": roll["query_responses"],
                "responses": responses,
                "logprobs": logprobs,
                "values": values,
                "returns": returns,
                "advantages": advantages,
                "padding_mask": padding_mask,
                "padding_mask_p1": padding_mask_p1,
            }
            mini_size, micro_size = args.local_mini_batch_size, args.per_device_train_batch_size
            for epoch in range(args.num_ppo_epochs):
                order = np.random.permutation(args.local_batch_size)
                for mini, mini_start in enumerate(range(0, args.local_batch_size, mini_size)):
                    mini_inds = order[mini_start : mini_start + mini_size]
                    for micro, micro_start in enumerate(range(0, mini_size, micro_size)):
                        inds = mini_inds[micro_start : micro_start + micro_size]
                        with accelerator.accumulate(model):
                            micro_stats = self.optimisation_step(
                                {k: v[inds] for k, v in batch.items()}, context_length
                            )
                        for name, value in micro_stats.items():
                            stats[name][epoch, mini, micro] = value

            # 7. Metrics of the update.
            with torch.no_grad():
                mean_kl = kl.sum(1).mean()
                mean_entropy = ((-logprobs) * (~padding_mask).float()).sum(1).mean()
                mean_non_score_reward = non_score_reward.sum(1).mean()

                def average(x):
                    return accelerator.gather_for_metrics(x).mean().item()

                metrics = {
                    "eps": int(self.state.episode / (time.time() - start_time)),
                    "objective/kl": average(mean_kl),
                    "objective/entropy": average(mean_entropy),
                    "objective/non_score_reward": average(mean_non_score_reward),
                    "objective/rlhf_reward": average(mean_non_score_reward + scores.mean()),
                    "objective/scores": average(scores.mean()),
                    "policy/approxkl_avg": average(stats["approxkl"]),
                    "policy/clipfrac_avg": average(stats["pg_clipfrac"]),
                    "loss/policy_avg": average(stats["pg_loss"]),
                    "loss/value_avg": average(stats["vf_loss"]),
                    "val/clipfrac_avg": average(stats["vf_clipfrac"]),
                    "policy/entropy_avg": average(stats["entropy"]),
                    "val/ratio": average(stats["ratio"]),
                    "val/ratio_var": accelerator.gather_for_metrics(stats["ratio"]).var().item(),
                    "val/num_eos_tokens": (responses == tokenizer.eos_token_id).sum().item(),
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "episode": self.state.episode,
                }
                self.state.epoch = self.state.episode / self.train_dataset_len
                self.state.global_step += 1
                self.log(metrics)

            self.lr_scheduler.step()
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_save:
                self._save_checkpoint(model, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if args.num_sample_generations > 0 and (update - 1) % self.sample_generations_freq == 0:
                self.generate_completions(sampling=True)

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        if self.control.should_save:
            self._save_checkpoint(model, trial=None)
            self.control = self.callback_handler.on_save(args, self.state, self.control)

    def optimisation_step(self, micro_batch: dict, context_length: int) -> dict:
        """Loss, backward and optimiser call for one micro-batch of the rollout; its statistics.

        Inside `accelerator.accumulate` (built with the full `gradient_accumulation_steps`),
        `optimizer.step()` acts on every gradient_accumulation_steps-th micro-batch, once per PPO
        epoch, and on every micro-batch while the dataloader is at its last batch (accelerate's
        end-of-data sync); the others add their gradients (scaled by 1/GA).
        """
        args, mb = self.args, micro_batch
        pad_id = self.processing_class.pad_token_id
        output, value_scores = forward(self.model, mb["query_responses"], pad_id)
        # The same temperature as the rollout, so that the ratio starts at 1.
        logits = output.logits[:, context_length - 1 : -1]
        logits /= args.temperature + 1e-7
        new_logprobs = selective_log_softmax(logits, mb["responses"])
        new_logprobs = torch.masked_fill(new_logprobs, mb["padding_mask"], INVALID_LOGPROB)
        new_values = value_scores[:, context_length - 1 : -1].squeeze(-1)
        new_values = torch.masked_fill(new_values, mb["padding_mask_p1"], 0)

        vf_loss, vf_clipfrac = clipped_value_loss(
            new_values, mb["values"], mb["returns"], ~mb["padding_mask_p1"], args.cliprange_value
        )
        pg_loss, pg_clipfrac, ratio = clipped_policy_loss(
            new_logprobs, mb["logprobs"], mb["advantages"], ~mb["padding_mask"], args.cliprange
        )
        loss = pg_loss + args.vf_coef * vf_loss
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad()

        with torch.no_grad():
            log_ratio = new_logprobs - mb["logprobs"]
            probs = torch.nn.functional.softmax(logits, dim=-1)
            entropy = torch.logsumexp(logits, dim=-1) - torch.sum(probs * logits, dim=-1)
            return {
                "approxkl": 0.5 * (log_ratio**2).mean(),
                "pg_clipfrac": pg_clipfrac,
                "pg_loss": pg_loss,
                "vf_loss": vf_loss,
                "vf_clipfrac": vf_clipfrac,
                "entropy": entropy.mean(),
                "ratio": ratio.mean(),
            }

    @torch.no_grad()
    def generate_completions(self, sampling: bool = False):
        """Print near-greedy completions (temperature 0.01) of eval prompts with their scores;
        `sampling=True` stops after the first eval batch."""
        if self.eval_dataset is None:
            return
        tokenizer = self.processing_class
        generation_kwargs = {
            "max_new_tokens": self.args.response_length,
            "temperature": 0.01 + 1e-7,
            "top_k": 0.0,
            "top_p": 1.0,
            "do_sample": True,
        }
        rows = []
        with unwrap_model_for_generation(
            self.model,
            self.accelerator,
            gather_deepspeed3_params=self.args.ds3_gather_for_generation,
            generation_kwargs=generation_kwargs,
        ) as unwrapped:
            for batch in self.eval_dataloader:
                query = batch["input_ids"]
                query_response, _ = sample_responses(
                    unwrapped.policy,
                    query,
                    query.shape[0],
                    tokenizer.pad_token_id,
                    GenerationConfig(**generation_kwargs),
                )
                response = query_response[:, query.shape[1] :]
                if self.stop_token_id is not None:
                    response = truncate_response(
                        self.stop_token_id, tokenizer.pad_token_id, response
                    )
                score = self.score(query, response)
                queries = gather_object(tokenizer.batch_decode(query, skip_special_tokens=True))
                answers = gather_object(tokenizer.batch_decode(response))
                scores = self.accelerator.gather_for_metrics(score).float().cpu().tolist()
                rows += list(zip(queries, answers, scores, strict=True))
                if sampling:
                    break
        if self.accelerator.is_main_process:
            for query, answer, score in rows[:5]:
                print(f"[score {score:+.3f}] {query!r} -> {answer!r}")


def _exact_div(a: int, b: int, name: str) -> int:
    if a % b:
        raise ValueError(f"`{name}` ({a}) must be a multiple of `num_mini_batches` ({b})")
    return a // b
