"""Run an example script under `accelerate launch` unchanged, then write what this rank did.

    accelerate launch ... tests/ddp_probe.py OUT_DIR annotated_examples/sft_training.py --config ...

The script runs through `runpy` exactly as `python script.py ...` would. Three probes watch it
from outside, the same for every trainer (TRL's, and our ports with their own training loops):
- the first batch this rank's prepared data loader yields is fingerprinted (the ranks must see
  different data);
- the parameters the optimiser holds are copied just before its first step and compared with
  their values at the end (training must move them);
- after training, every parameter of the model is fingerprinted (the ranks must end with
  identical weights: their gradients were averaged);
- for PRM and GKD, whose loss normalisers are the question under several processes, the first
  micro-batch's loss is measured against the rank's own token sum and count, recomputed from
  the same inputs, and so is the gradient of the final norm's weight (see `loss_scale`);
- for GRPO, the first generation round's gathered rewards, this rank's advantages, completion
  lengths and token count, and the first micro-batch's loss (see `grpo_round`). The probe's
  own flag `--probe_eos_boost X` (removed before the script sees its arguments) adds X to the
  policy's EOS logits for the whole run, so that the random tiny policy ends some completions
  early and their lengths differ.
The rank writes all of it to `OUT_DIR/rank<k>.json`.
"""

import hashlib
import json
import runpy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.data_loader import DataLoaderShard
from parity_scenarios.per_process import exit_skipping_gloo_teardown
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import Trainer

out_dir, script, *script_args = sys.argv[1:]
eos_boost = 0.0
if "--probe_eos_boost" in script_args:
    at = script_args.index("--probe_eos_boost")
    eos_boost = float(script_args[at + 1])
    del script_args[at : at + 2]
first_batch: list[str] = []
before_first_step: list[torch.Tensor] = []


def fingerprint(obj) -> str:
    def plain(x):
        if torch.is_tensor(x):
            return x.tolist()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in sorted(x.items())}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x if isinstance(x, (str, int, float, bool, type(None))) else repr(x)

    return hashlib.sha256(json.dumps(plain(obj), default=repr).encode()).hexdigest()


def optimised(optimizer) -> list[torch.Tensor]:
    return [p.detach() for group in optimizer.param_groups for p in group["params"]]


original_iter = DataLoaderShard.__iter__


def recording_iter(self):
    for batch in original_iter(self):
        if not first_batch:
            first_batch.append(fingerprint(batch))
        yield batch


def snapshot_before_first_step(optimizer, args, kwargs):
    if not before_first_step:
        before_first_step.extend(p.clone() for p in optimised(optimizer))


def token_sum(trainer, model, inputs) -> tuple[torch.Tensor, int] | None:
    """This rank's summed per-token loss on `inputs` (a tensor with a graph) and its token
    count, computed here from the logits: PRM's cross-entropy on labelled positions, GKD's
    generalised JSD on the shifted labels. None for the other trainers."""
    kind = type(trainer).__name__
    if kind not in ("PRMTrainer", "GKDTrainer"):
        return None
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    logits = model(input_ids=ids, attention_mask=mask).logits
    if kind == "PRMTrainer":
        flat = logits.float().view(-1, logits.shape[-1])
        total = F.cross_entropy(flat, labels.view(-1), ignore_index=-100, reduction="sum")
        return total, int((labels != -100).sum())
    with torch.no_grad():
        teacher = trainer.teacher_model(input_ids=ids, attention_mask=mask).logits
    shifted = labels[:, 1:]
    total = trainer.generalized_jsd_loss(
        logits[:, :-1], teacher[:, :-1], labels=shifted, beta=trainer.beta, reduction="sum"
    )
    return total, int((shifted != -100).sum())


loss_scale: dict = {}
original_training_step = Trainer.training_step


def measuring_training_step(self, model, inputs, num_items_in_batch=None):
    """The first micro-batch: this rank's token sum S, count n and the gradient of S for the
    final norm's weight, computed on the unwrapped model from the inputs `training_step` gets
    (GKD's after any generation); then the step itself, and what it back-propagated and what
    DDP left in that weight's `.grad` (the average over ranks)."""
    if loss_scale:
        return original_training_step(self, model, inputs, num_items_in_batch)
    model.train()  # as `training_step` does first: a model fresh from disk is in eval mode
    unwrapped = self.accelerator.unwrap_model(model)
    norm = dict(unwrapped.named_parameters()).get("model.norm.weight")
    measured = token_sum(self, unwrapped, inputs) if norm is not None else None
    if measured is None or not norm.requires_grad:
        loss_scale["measured"] = False
        return original_training_step(self, model, inputs, num_items_in_batch)
    total, count = measured
    (grad_of_sum,) = torch.autograd.grad(total, norm)  # fills no .grad, fires no DDP hook
    loss = original_training_step(self, model, inputs, num_items_in_batch)
    items = num_items_in_batch
    loss_scale.update(
        measured=True,
        token_sum=total.item(),
        tokens=count,
        num_items_in_batch=int(items) if items is not None else None,
        loss=loss.item(),
        grad_of_sum=grad_of_sum.tolist(),
        ddp_grad=norm.grad.tolist(),
        accumulation=self.args.gradient_accumulation_steps,
    )
    return loss


grpo_round: dict = {}


def record_grpo_round() -> None:
    """Wrap three GRPOTrainer methods to keep, from the first generation round: the rewards
    `_calculate_rewards` returns (gathered from every process), what
    `_generate_and_score_completions` leaves this rank (advantages, completion lengths, the
    token count), and the first micro-batch's inputs and loss."""
    from trl import GRPOTrainer

    calculate, score, compute = (
        GRPOTrainer._calculate_rewards,
        GRPOTrainer._generate_and_score_completions,
        GRPOTrainer._compute_loss,
    )

    def calculate_rewards(self, inputs, prompts, *args, **kwargs):
        rewards = calculate(self, inputs, prompts, *args, **kwargs)
        if "rewards_per_func" not in grpo_round:
            grpo_round.update(rewards_per_func=rewards.tolist(), prompts=[str(p) for p in prompts])
        return rewards

    def generate_and_score(self, inputs):
        if eos_boost and "advantages" not in grpo_round:
            model = self.accelerator.unwrap_model(self.model)
            boost = torch.zeros(model.config.vocab_size)
            boost[self.eos_token_ids] = eos_boost
            model.lm_head.register_forward_hook(lambda module, args, out: out + boost)
        out = score(self, inputs)
        if "advantages" not in grpo_round:
            grpo_round.update(
                advantages=out["advantages"].tolist(),
                lengths=out["completion_mask"].sum(1).tolist(),
                num_items_in_batch=int(out["num_items_in_batch"]),
                reward_weights=self.reward_weights.tolist(),
                num_generations=self.num_generations,
                loss_type=self.loss_type,
                scale_rewards=self.scale_rewards,
                beta=self.beta,
                steps_per_generation=self.args.steps_per_generation,
            )
        return out

    def compute_loss(self, model, inputs):
        loss = compute(self, model, inputs)
        if "loss" not in grpo_round:
            grpo_round.update(
                loss=loss.item(),
                micro_advantages=inputs["advantages"].tolist(),
                micro_lengths=inputs["completion_mask"].sum(1).tolist(),
                old_logps_kept=inputs.get("old_per_token_logps") is not None,
                accumulation=self.current_gradient_accumulation_steps,
            )
        return loss

    GRPOTrainer._calculate_rewards = calculate_rewards
    GRPOTrainer._generate_and_score_completions = generate_and_score
    GRPOTrainer._compute_loss = compute_loss


if Path(script).name == "grpo_training.py":
    record_grpo_round()
Trainer.training_step = measuring_training_step
DataLoaderShard.__iter__ = recording_iter
register_optimizer_step_pre_hook(snapshot_before_first_step)

sys.argv = [script, *script_args]
trainer = runpy.run_path(script, run_name="__main__")["trainer"]

model = trainer.accelerator.unwrap_model(trainer.model)
after = optimised(trainer.optimizer)
report = {
    "rank": trainer.accelerator.process_index,
    "world_size": trainer.accelerator.num_processes,
    "steps": trainer.state.global_step,
    "first_batch": first_batch[0] if first_batch else None,
    "weights": fingerprint({n: p.detach() for n, p in model.named_parameters()}),
    "optimised": len(after),
    "moved": sum(not torch.equal(a, b) for a, b in zip(before_first_step, after, strict=True)),
    "loss_scale": loss_scale if loss_scale.get("measured") else None,
    "logged_losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
    "grpo_round": grpo_round or None,
}
Path(out_dir, f"rank{report['rank']}.json").write_text(json.dumps(report))
exit_skipping_gloo_teardown()  # the script has finished; see per_process.py
