r"""XPO (Xie et al., 2024, "Exploratory Preference Optimization"), on TRL 1.16.

TRL removed `XPOTrainer` in 1.14.0. This is our implementation, with trl 1.12.0's class,
config and metric names, so migrating is one import line:

    from trl.experimental.xpo import XPOConfig, XPOTrainer             # trl <= 1.12
    from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer

XPO is online DPO with one pair per prompt made of a policy sample and a reference sample, plus
an exploration bonus: $\alpha \log \pi_\theta(\tilde y \mid x)$ on the reference sample
$\tilde y$ is *added* to the loss, so minimising it lowers the policy's probability of what the
reference would say and pushes it to explore elsewhere (optimism in the face of uncertainty).
tests/test_xpo_parity.py checks every logged metric against trl 1.12.0's original.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from trl.experimental.online_dpo import OnlineDPOConfig

from annotated_trl.trainers.online_pair import OnlinePairTrainer, value_for_epoch


@dataclass
class XPOConfig(OnlineDPOConfig):
    r"""Configuration for [`XPOTrainer`]: every `OnlineDPOConfig` field, plus the bonus weight.

    Parameters:
        alpha (`float` or `list[float]`, *optional*, defaults to `1e-5`):
            Weight $\alpha$ of the exploration term $\alpha \log \pi_\theta(\tilde y \mid x)$,
            $\tilde y$ the reference model's sample. A list gives one value per epoch; the last
            one is kept once the list runs out.
    """

    alpha: list[float] = field(
        default_factory=lambda: [1e-5],
        metadata={
            "help": "Weight of the exploration term alpha * log pi(y_ref | x). A list gives one "
            "value per epoch; the last value is kept for the remaining epochs."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.alpha, list) and len(self.alpha) == 1:
            self.alpha = self.alpha[0]  # as trl 1.12: one value is a number


class XPOTrainer(OnlinePairTrainer):
    r"""XPO: DPO on (policy sample, reference sample), the higher-scored one chosen, plus
    $\alpha \log \pi_\theta(\tilde y \mid x)$ for the reference sample $\tilde y$.

    Same constructor as trl 1.12's `XPOTrainer` (and 1.16's `OnlineDPOTrainer`).
    `reward_funcs` may be a reward model (path or sequence classifier sharing the policy's
    tokenizer), reward functions, or several of both, weighted by `reward_weights`; trl 1.12
    took exactly one reward model. `loss_type` is `"sigmoid"` (DPO) or `"ipo"`.
    """

    _tag_names = ["trl", "xpo", "annotated-trl"]
    _name = "XPO"

    metric_names = (
        "loss/dpo",
        "loss/xpo",
        "objective/kl",
        "objective/entropy",
        "objective/model_scores",
        "objective/ref_scores",
        "objective/scores_margin",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "val/model_contain_eos_token",
        "val/ref_contain_eos_token",
        "alpha",
        "beta",
    )

    def __init__(self, model=None, ref_model=None, reward_funcs=None, args=None, **kwargs):
        if args is not None and args.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(
                f"XPOTrainer supports loss_type 'sigmoid' or 'ipo', not {args.loss_type!r}"
            )
        super().__init__(model, ref_model, reward_funcs, args, **kwargs)

    @property
    def alpha(self) -> float:
        return value_for_epoch(self.args.alpha, self.state.epoch)

    def xpo_loss(self, policy_on_own, policy_on_ref, ref_on_own, ref_on_ref, policy_wins):
        r"""Per-pair DPO loss, exploration term, and the chosen and rejected log-ratios.

        Every log-prob is a sequence sum, (B,): `policy_on_own` is $\log \pi_\theta(y)$ of the
        policy's sample, `policy_on_ref` $\log \pi_\theta(\tilde y)$ of the reference's, and
        so on; `policy_wins` (B,) says which sample is chosen.
        """

        own_ratio = policy_on_own - ref_on_own  # log pi / pi_ref of the policy's sample
        ref_ratio = policy_on_ref - ref_on_ref  # ... and of the reference's
        chosen_ratio = torch.where(policy_wins, own_ratio, ref_ratio)
        rejected_ratio = torch.where(policy_wins, ref_ratio, own_ratio)
        # h = log-ratio of chosen minus log-ratio of rejected, as in DPO.
        h = chosen_ratio - rejected_ratio
        if self.args.loss_type == "sigmoid":
            dpo = -F.logsigmoid(self.beta * h)
        else:  # ipo: regress h onto 1 / (2 beta)
            dpo = (h - 1 / (2 * self.beta)) ** 2
        # The bonus is on the reference's sample whether it won or lost.
        exploration = self.alpha * policy_on_ref
        return dpo, exploration, chosen_ratio, rejected_ratio

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        prompts = self.prompt_batch(inputs)

        # 1. One completion from the policy, one from the reference.
        completions = self.sample(model, prompts)
        with self.reference(model) as reference:
            ref_completions = self.sample(reference, prompts)

        # 2. The policy's sample is chosen when it scores at least as well (ties go to it).
        scores = self.scores(prompts, completions)
        ref_scores = self.scores(prompts, ref_completions)
        policy_wins = scores >= ref_scores

        # 3. Per-token log-probs of both samples under both models, then sequence sums.
        tokens = {
            "policy_on_own": self.completion_logprobs(model, prompts, completions),
            "policy_on_ref": self.completion_logprobs(model, prompts, ref_completions),
        }
        with torch.no_grad(), self.reference(model) as reference:
            tokens["ref_on_own"] = self.completion_logprobs(reference, prompts, completions)
            tokens["ref_on_ref"] = self.completion_logprobs(reference, prompts, ref_completions)
        policy_on_own, policy_on_ref, ref_on_own, ref_on_ref = (
            tokens[name].sum(dim=1)
            for name in ("policy_on_own", "policy_on_ref", "ref_on_own", "ref_on_ref")
        )

        dpo, exploration, chosen_ratio, rejected_ratio = self.xpo_loss(
            policy_on_own, policy_on_ref, ref_on_own, ref_on_ref, policy_wins
        )
        loss = (dpo + exploration).mean()

        # Metrics, under trl 1.12's names (see annotated_trainers/xpo.md for what each holds).
        chosen_reward = self.beta * chosen_ratio.detach()
        rejected_reward = self.beta * rejected_ratio.detach()
        self.log_mean("loss/dpo", dpo)
        self.log_mean("loss/xpo", exploration)
        self.log_mean("objective/model_scores", scores)
        self.log_mean("objective/ref_scores", ref_scores)
        self.log_mean("objective/scores_margin", scores - ref_scores)
        # trl 1.12 logs the policy's and the reference's mean log-probs added together.
        policy_chosen = torch.where(policy_wins, policy_on_own, policy_on_ref).detach()
        policy_rejected = torch.where(policy_wins, policy_on_ref, policy_on_own).detach()
        ref_chosen = torch.where(policy_wins, ref_on_own, ref_on_ref)
        ref_rejected = torch.where(policy_wins, ref_on_ref, ref_on_own)
        self.log_mean("logps/chosen", policy_chosen.mean() + ref_chosen.mean())
        self.log_mean("logps/rejected", policy_rejected.mean() + ref_rejected.mean())
        self.log_mean("rewards/chosen", chosen_reward)
        self.log_mean("rewards/rejected", rejected_reward)
        self.log_mean("rewards/margins", chosen_reward - rejected_reward)
        self.log_mean("rewards/accuracies", (chosen_reward > rejected_reward).float())
        # Sequence KL estimate on both samples: token log-ratios summed, averaged over the two.
        own_log_ratio = (tokens["policy_on_own"] - tokens["ref_on_own"]).detach().sum(dim=1)
        ref_log_ratio = (tokens["policy_on_ref"] - tokens["ref_on_ref"]).detach().sum(dim=1)
        self.log_mean("objective/kl", (own_log_ratio + ref_log_ratio).mean() / 2)
        entropy = (-policy_on_own.detach().mean() - policy_on_ref.detach().mean()) / 2
        self.log_mean("objective/entropy", entropy)
        self.log_mean("val/model_contain_eos_token", self.contains_eos(completions).float())
        self.log_mean("val/ref_contain_eos_token", self.contains_eos(ref_completions).float())
        self.log_mean("alpha", self.alpha)
        self.log_mean("beta", self.beta)
        return self.backward(loss)
