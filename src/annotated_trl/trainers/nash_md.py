r"""Nash-MD (Munos et al., 2023, "Nash Learning from Human Feedback"), on TRL 1.16.

TRL removed `NashMDTrainer` in 1.14.0. This is our implementation, with trl 1.12.0's class,
config and metric names, so migrating is one import line:

    from trl.experimental.nash_md import NashMDConfig, NashMDTrainer   # trl <= 1.12
    from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer

Nash-MD looks for the Nash equilibrium of a two-player game in which each player is a policy
and the payoff is the probability that one player's answer is preferred to the other's. Each
step plays the current policy $\pi_\theta$ against a regularised opponent, the geometric mixture
$\pi^\beta_\text{mix} \propto \pi_\theta^{1-\beta_m}\, \pi_\text{ref}^{\beta_m}$ (`mixture_coef`
$=\beta_m$), and takes one mirror-descent step: a policy-gradient push towards answers likely
to beat the opponent's, minus a KL penalty towards the reference.
tests/test_nash_md_parity.py checks every logged metric against trl 1.12.0's original.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList
from trl.experimental.online_dpo import OnlineDPOConfig

from annotated_trl.trainers.online_pair import OnlinePairTrainer, value_for_epoch


@dataclass
class NashMDConfig(OnlineDPOConfig):
    r"""Configuration for [`NashMDTrainer`]: every `OnlineDPOConfig` field, plus the mixture.

    Parameters:
        mixture_coef (`float` or `list[float]`, *optional*, defaults to `0.5`):
            Weight $\beta_m$ of the reference in the geometric mixture that samples the opponent's
            completion, $\log \pi_\text{mix} = (1-\beta_m)\, \text{logits}_\theta +
            \beta_m\, \text{logits}_\text{ref}$ (then normalised). A list gives one value per
            epoch; the last one is kept once the list runs out.
    """

    mixture_coef: list[float] = field(
        default_factory=lambda: [0.5],
        metadata={
            "help": "Weight of the reference model's logits in the geometric mixture that samples "
            "the second completion. A list gives one value per epoch; the last value is kept "
            "for the remaining epochs."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.mixture_coef, list) and len(self.mixture_coef) == 1:
            self.mixture_coef = self.mixture_coef[0]  # as trl 1.12: one value is a number


class GeometricMixture(LogitsProcessor):
    r"""Turns `generate` into a sampler of $\pi_\text{mix} \propto
    \exp\big((1-\beta_m)\,\text{logits}_\theta + \beta_m\,\text{logits}_\text{ref}\big)$.

    `generate` hands a logits processor the next-token logits of the model it samples from, the
    policy. `sample_mixture` runs it without a KV cache, so those logits come from a forward pass
    over the whole sequence (the pass trl 1.12's sampler made); we use them as $\pi_\theta$'s
    and run only the reference here. Temperature, top-k and top-p still apply afterwards:
    `generate` runs its warpers after custom processors.
    """

    def __init__(self, reference: Callable, prompt_mask: torch.Tensor, coef):
        self.reference, self.prompt_mask, self.coef = reference, prompt_mask, coef

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        # generate extends the attention mask with a 1 for every new token, finished rows too.
        new_tokens = input_ids.shape[1] - self.prompt_mask.shape[1]
        ones = self.prompt_mask.new_ones(input_ids.shape[0], new_tokens)
        attention_mask = torch.cat([self.prompt_mask, ones], dim=1)
        policy_logits = scores.float()
        reference_logits = self.reference(input_ids, attention_mask)[:, -1].float()
        mixed = (1 - self.coef) * policy_logits + self.coef * reference_logits
        return F.log_softmax(mixed, dim=-1)  # normalised: log pi_mix


class NashMDTrainer(OnlinePairTrainer):
    r"""Nash-MD: the policy's sample $y \sim \pi_\theta$ against an opponent's $y' \sim
    \pi_\text{mix}$; loss $\beta\,\widehat{\mathrm{KL}} - (P(y \succ y') - \tfrac12)\log
    \pi_\theta(y \mid x)$.

    Same constructor as trl 1.12's `NashMDTrainer` (and 1.16's `OnlineDPOTrainer`).
    `reward_funcs` may be a reward model (path or sequence classifier sharing the policy's
    tokenizer), reward functions, or several of both, weighted by `reward_weights`; trl 1.12
    took exactly one reward model.
    """

    _tag_names = ["trl", "nash-md", "annotated-trl"]
    _name = "Nash-MD"

    # trl 1.12's names. "chosen"/"rejected" are inherited from Online DPO and mean something
    # else here; see annotated_trainers/nash_md.md.
    metric_names = (
        "loss/kl",
        "loss/score",
        "objective/entropy",
        "rewards/probabilities",
        "rewards/accuracies",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "logps/rejected",
        "val/model_contain_eos_token",
        "val/ref_contain_eos_token",
        "beta",
        "mixture_coef",
    )

    def __init__(self, model=None, ref_model=None, reward_funcs=None, args=None, **kwargs):
        if args is not None and args.repetition_penalty not in (None, 1.0):
            raise ValueError(
                f"repetition_penalty={args.repetition_penalty}: NashMDTrainer samples from a "
                "mixture of two models' logits, and generate would apply the penalty to the "
                "policy's half only; use 1.0"
            )
        # Reward models read the policy's token ids: give them the policy's tokenizer (1.12 did).
        n_rewards = len(reward_funcs) if isinstance(reward_funcs, list) else 1
        kwargs.setdefault("reward_processing_classes", [kwargs.get("processing_class")] * n_rewards)
        super().__init__(model, ref_model, reward_funcs, args, **kwargs)

    @property
    def mixture_coef(self) -> float:
        return value_for_epoch(self.args.mixture_coef, self.state.epoch)

    def sample_mixture(self, model, prompts: dict) -> torch.Tensor:
        """Completions sampled from the geometric mixture of policy and reference."""

        def reference_logits(input_ids, attention_mask):
            with self.reference(model) as reference:
                return reference(input_ids, attention_mask=attention_mask).logits

        mixture = GeometricMixture(reference_logits, prompts["attention_mask"], self.mixture_coef)
        # No KV cache: generate's own forward of the policy then reads the whole sequence, and
        # its logits are the mixture's policy term (one policy and one reference pass per token).
        return self.sample(
            model, prompts, logits_processor=LogitsProcessorList([mixture]), use_cache=False
        )

    @staticmethod
    def preference_probability(scores, opponent_scores) -> torch.Tensor:
        """Bradley-Terry: P(y > y' | x) = sigma(r(x, y) - r(x, y'))."""
        return torch.sigmoid(scores - opponent_scores)

    def nash_md_loss(self, policy_logps, reference_logps, probability):
        r"""Per-sequence loss, its score term and the sequence log-ratio (both detached).

        `policy_logps`, `reference_logps`: per-token log-probs of the policy's own sample $y$,
        (B, T), 0 on padding; `probability`: $P(y \succ y')$, (B,).
        """
        # Policy gradient towards winning: (P - 1/2) * log pi(y). The 1/2 is a baseline: it
        # is what a sample tied with its opponent earns, and it lowers the variance.
        score = (probability - 0.5) * policy_logps.sum(dim=1)
        # KL(pi || pi_ref) by REINFORCE, token by token as in trl 1.12: sum_t sg(log pi_t -
        # log pi_ref_t) * log pi_t. Exact for one token; beyond, it drops the log-ratios of
        # later tokens from each token's weight (biased; see reference_guides/nash_md.md).
        log_ratio = (policy_logps - reference_logps).detach()
        kl_surrogate = (log_ratio * policy_logps).sum(dim=1)
        loss = self.beta * kl_surrogate - score
        return loss, score.detach(), log_ratio.sum(dim=1)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        prompts = self.prompt_batch(inputs)

        # 1. Two completions per prompt: the policy's own, and the mixture's.
        completions = self.sample(model, prompts)
        opponent = self.sample_mixture(model, prompts)

        # 2. P(y > y') from the scores, Bradley-Terry: sigma(r(y) - r(y')).
        scores = self.scores(prompts, completions)
        opponent_scores = self.scores(prompts, opponent)
        probability = self.preference_probability(scores, opponent_scores)

        # 3. Only the policy's sample is trained on, under the policy and the reference.
        policy_logps = self.completion_logprobs(model, prompts, completions)
        with torch.no_grad(), self.reference(model) as reference:
            reference_logps = self.completion_logprobs(reference, prompts, completions)

        losses, score, kl = self.nash_md_loss(policy_logps, reference_logps, probability)
        loss = losses.mean()

        policy_sum = policy_logps.detach().sum(dim=1)
        reference_sum = reference_logps.sum(dim=1)
        margin = policy_sum - reference_sum
        self.log_mean("loss/score", score)
        self.log_mean("loss/kl", kl)
        self.log_mean("logps/chosen", policy_sum)
        self.log_mean("logps/rejected", reference_sum)
        self.log_mean("rewards/chosen", scores)
        self.log_mean("rewards/rejected", opponent_scores)
        self.log_mean("rewards/probabilities", probability)
        self.log_mean("objective/entropy", -policy_sum)
        self.log_mean("rewards/margins", margin)
        self.log_mean("rewards/accuracies", (margin > 0).float())
        self.log_mean("val/model_contain_eos_token", self.contains_eos(completions).float())
        self.log_mean("val/ref_contain_eos_token", self.contains_eos(opponent).float())
        self.log_mean("beta", self.beta)
        self.log_mean("mixture_coef", self.mixture_coef)
        return self.backward(loss)
