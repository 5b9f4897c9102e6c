"""What Nash-MD and XPO share: one step that samples two completions per prompt from two
different samplers, scores both, and hands them to a method-specific loss.

Both methods were subclasses of Online DPO in trl 1.12 and stay so here: `OnlineDPOTrainer`
(TRL 1.16, `trl.experimental.online_dpo`) loads the policy, copies the frozen reference (or
uses the policy with its LoRA adapters off), loads reward models, builds the sampling
`GenerationConfig` and logs the averaged `self.stats` every `logging_steps`. What differs from
Online DPO is the pair: Online DPO samples both completions from the policy; Nash-MD samples the
second from a mixture of policy and reference, XPO from the reference.

A subclass writes `training_step` from the pieces below, in this order: `prompt_batch`,
`sample` (twice), `scores`, `completion_logprobs`, then its loss and `backward`.
"""

from contextlib import contextmanager

import torch
from torch import nn
from transformers.training_args import OptimizerNames
from trl.data_utils import is_conversational, maybe_apply_chat_template
from trl.experimental.online_dpo import OnlineDPOTrainer
from trl.experimental.utils import get_reward, truncate_right
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import selective_log_softmax


def value_for_epoch(schedule: float | list[float], epoch: float) -> float:
    """A per-epoch hyper-parameter: `schedule[k]` during epoch k (counting from 0), the last
    entry once the list runs out; a plain number is constant.

    trl 1.12 indexed the list with `state.epoch` itself, a float after the first step
    (`[0.5, 0.2][0.125]`), which raises TypeError; we use the epoch's integer part.
    """
    if not isinstance(schedule, list):
        return schedule
    return schedule[min(int(epoch), len(schedule) - 1)]


class OnlinePairTrainer(OnlineDPOTrainer):
    """Online DPO's machinery with a pluggable pair: two samplers, one score, one loss."""

    # Subclasses list the metrics they log; `self.stats` gets one list per name.
    metric_names: tuple[str, ...] = ()

    def __init__(self, model=None, ref_model=None, reward_funcs=None, args=None, **kwargs):
        if args is not None and args.use_vllm:
            # Both methods sample their second completion from another model (the reference,
            # or a mixture of two models' logits), which a vLLM engine serving the policy
            # cannot do; trl 1.12 never used vLLM here either, so we refuse the flag.
            raise ValueError(f"{type(self).__name__} does not support use_vllm=True")
        super().__init__(model, ref_model, reward_funcs, args, **kwargs)
        self.stats = {name: [] for name in self.metric_names}

    # ---- 1. prompts -> left-padded token ids ------------------------------------------------

    def prompt_batch(self, inputs: dict[str, list]) -> dict:
        """Render (chat template), tokenize and left-pad the batch's prompts.

        `inputs` is the collated batch: column -> list of values. Extra columns (e.g. `answer`)
        are kept for the reward functions.
        """
        columns = list(inputs)
        rows = [dict(zip(columns, v, strict=True)) for v in zip(*inputs.values(), strict=True)]
        texts = [maybe_apply_chat_template(row, self.processing_class)["prompt"] for row in rows]
        tokenized = [
            self.tokenize_row({"prompt": text}, False, self.processing_class) for text in texts
        ]
        padded = self._prepare_inputs(self.data_collator(tokenized))
        return {
            "input_ids": padded["prompt_input_ids"],
            "attention_mask": padded["prompt_attention_mask"],
            "raw": inputs["prompt"],
            "columns": {k: v for k, v in inputs.items() if k != "prompt"},
        }

    # ---- 2. sampling --------------------------------------------------------------------------

    @contextmanager
    def reference(self, model: nn.Module):
        """The frozen reference: the copy made at construction, or (LoRA) the policy itself
        with its adapters switched off for the duration of the block."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        policy = self.accelerator.unwrap_model(model)
        with policy.disable_adapter():
            yield policy

    def sample(self, model: nn.Module, prompts: dict, **generate_kwargs) -> torch.Tensor:
        """Sampled completion ids (B, T) with everything after the first EOS set to pad.

        `generate_kwargs` reach `generate` (Nash-MD passes its mixture logits processor and
        `use_cache=False`).
        """
        with unwrap_model_for_generation(
            model, self.accelerator, generation_kwargs=self.generation_kwargs
        ) as unwrapped:
            output = unwrapped.generate(
                input_ids=prompts["input_ids"],
                attention_mask=prompts["attention_mask"],
                generation_config=self.generation_config,
                **generate_kwargs,
            )
        completions = output[:, prompts["input_ids"].shape[1] :]
        completions, _ = truncate_right(
            completions, self.eos_token_ids, self.processing_class.pad_token_id
        )
        return completions

    # ---- 3. log-probabilities -----------------------------------------------------------------

    def completion_logprobs(self, model, prompts: dict, completions: torch.Tensor):
        """Per-token log pi(y_t | x, y_<t) of `completions`, 0 on padding; shape (B, T).

        The mask keeps the first EOS (it is a token the policy chose) and drops what follows.
        """
        mask = self.completion_mask(completions)
        input_ids = torch.cat([prompts["input_ids"], completions], dim=1)
        attention_mask = torch.cat([prompts["attention_mask"], mask], dim=1)
        logits = model(input_ids, attention_mask=attention_mask).logits
        # Position t-1 predicts token t: the logits of the completion start one step left.
        prompt_length = prompts["input_ids"].shape[1]
        logits = logits[:, prompt_length - 1 : -1]
        return selective_log_softmax(logits, completions).masked_fill(mask == 0, 0.0)

    def completion_mask(self, completions: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first EOS, 0 after it (truncate_right's convention)."""
        is_stop = torch.isin(
            completions, torch.tensor(self.eos_token_ids, device=completions.device)
        )
        after_stop = (is_stop.cumsum(dim=1) - is_stop.long()) > 0
        return (~after_stop).long()

    def contains_eos(self, completions: torch.Tensor) -> torch.Tensor:
        """Whether each completion (never the prompt) contains an EOS token."""
        stop_ids = torch.tensor(self.eos_token_ids, device=completions.device)
        return torch.isin(completions, stop_ids).any(dim=1)

    # ---- 4. scores ------------------------------------------------------------------------------

    def scores(self, prompts: dict, completions: torch.Tensor) -> torch.Tensor:
        """r(x, y) for each row: the weighted sum of every reward, minus `missing_eos_penalty`
        for a completion without EOS.

        A reward model reads the policy's own token ids (prompt + completion), so it must share
        the policy's tokenizer, as in trl 1.12. A reward function gets the decoded completion
        (a list with one assistant message for chat prompts) and the dataset's extra columns.
        """
        input_ids = torch.cat([prompts["input_ids"], completions], dim=1)
        prompt_length = prompts["input_ids"].shape[1]
        pad_id = self.processing_class.pad_token_id
        texts = self.processing_class.batch_decode(completions, skip_special_tokens=True)
        if is_conversational({"prompt": prompts["raw"][0]}):
            texts = [[{"role": "assistant", "content": text}] for text in texts]
        per_reward = []
        for reward in self.reward_funcs:
            if isinstance(reward, nn.Module):
                with torch.no_grad():
                    _, score, _ = get_reward(reward, input_ids, pad_id, prompt_length)
            else:
                values = reward(
                    prompts=prompts["raw"],
                    completions=texts,
                    completion_ids=[ids[ids != pad_id].tolist() for ids in completions],
                    trainer_state=self.state,
                    **prompts["columns"],
                )
                score = torch.tensor(
                    [torch.nan if v is None else v for v in values], device=input_ids.device
                )
            per_reward.append(score.float())
        weights = self.reward_weights.to(input_ids.device)
        total = (torch.stack(per_reward, dim=1) * weights).nansum(dim=1)
        if self.args.missing_eos_penalty is not None:
            # The fix to trl 1.12: EOS is looked for in the completion only. 1.12 searched the
            # prompt too, so a chat prompt (whose turns end in EOS) was never penalised.
            total = (
                total - self.args.missing_eos_penalty * (~self.contains_eos(completions)).float()
            )
        return total

    # ---- 5. backward ----------------------------------------------------------------------------

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Backpropagate; return the detached loss as `Trainer` expects from `training_step`."""
        kwargs = {}
        if self.args.optim in (OptimizerNames.LOMO, OptimizerNames.ADALOMO):
            kwargs["learning_rate"] = self._get_learning_rate()  # LOMO steps inside backward
        self.accelerator.backward(loss, **kwargs)
        return loss.detach() / self.args.gradient_accumulation_steps

    def log_mean(self, name: str, value) -> None:
        """Append the mean over every process of `value` (a tensor or a number) to a metric."""
        if isinstance(value, torch.Tensor):
            value = self.accelerator.gather_for_metrics(value.detach()).float().mean().item()
        self.stats[name].append(value)
