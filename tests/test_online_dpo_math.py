"""The equations of reference_guides/online_dpo.md, computed independently and compared with TRL.

TRL 1.16.0 computes the Online DPO loss inside `OnlineDPOTrainer.training_step` (no separate loss
function), so the check runs that real step, deterministically, on one trainer for the module:

- the reward function returns preset scores (ties and a `None` included), so the chosen /
  rejected choice is known whatever the sampled text is;
- the real `_generate` samples the completions; a thin wrapper records them and, to exercise
  `missing_eos_penalty`, cuts chosen completions short with an end-of-sequence token.

Our version takes those token ids, computes the per-sequence log-probabilities of the policy and
of the reference with a plain forward pass, picks chosen/rejected by our own rule, and evaluates
the sigmoid and IPO losses in torch. The returned loss and the logged statistics must match.
"""

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoTokenizer
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

pytestmark = pytest.mark.math

B = 4  # prompts per step; 2B completions, laid out [p0 c1, p1 c1, ..., p0 c2, p1 c2, ...]
T = 6  # max_new_tokens
TOL = {"atol": 1e-5, "rtol": 1e-5}
PROMPTS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]]
ANSWERS = [3, 7, 4, 6]

# Scores of the 2B completions. Pair 0: second wins; pair 1: first wins; pair 2: a tie (the
# first is kept); pair 3: the first abstains (None counts as 0 after `nansum`), second wins.
SCORES = [0.2, 0.9, 0.5, None, 0.7, 0.1, 0.5, 0.3]
# Completions cut short with EOS (the others run to `max_new_tokens` without it). Pairs 0, 1 and
# 3 have exactly one completion with EOS: a penalty of 1.0 flips all three choices.
WITH_EOS = {0, 3, 5}


class FixedReward:
    __name__ = "fixed_reward"

    def __call__(self, prompts, completions, completion_ids, answer, **kwargs):
        assert len(completions) == 2 * B and answer == ANSWERS * 2  # extra column, repeated
        return list(SCORES)


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    dataset = Dataset.from_list(
        [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    )
    args = OnlineDPOConfig(
        output_dir=str(tmp_path_factory.mktemp("online-dpo-math")),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=B,
        max_new_tokens=T,
        max_length=64,
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    trainer = OnlineDPOTrainer(
        model=str(tiny.policy),
        reward_funcs=[FixedReward()],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    # Make the policy differ from the reference, so that log-ratios are not all zero.
    torch.manual_seed(0)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return trainer


def _record_generation(trainer):
    """Wrap the real `_generate`: keep its output, with EOS forced into some completions."""
    real = type(trainer)._generate
    record = {}
    eos, pad = trainer.eos_token_ids[0], trainer._tokenizer.pad_token_id

    def generate(model, prompts, images=None):
        prompt_ids, prompt_mask, completion_ids, completion_mask, vision = real(
            trainer, model, prompts, images
        )
        completion_ids, completion_mask = completion_ids.clone(), completion_mask.clone()
        # The random policy may emit EOS by chance: rewrite every row to a known state.
        completion_ids[completion_ids == eos] = 5
        completion_mask[:] = 1
        for i in WITH_EOS:
            completion_ids[i, 2], completion_ids[i, 3:] = eos, pad
            completion_mask[i, 3:] = 0
        record.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask)
        record.update(completion_ids=completion_ids, completion_mask=completion_mask)
        return prompt_ids, prompt_mask, completion_ids, completion_mask, vision

    trainer._generate = generate
    return record


def _sequence_logps(model, record, masked=True):
    """Sum over completion tokens of log pi(y_t | x, y_<t), from a plain forward pass. With
    `masked=False` the padding after EOS is summed too (what TRL's KL and entropy logs do)."""
    ids = torch.cat([record["prompt_ids"], record["completion_ids"]], dim=1)
    mask = torch.cat([record["prompt_mask"], record["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    p = record["prompt_ids"].shape[1]
    logps = logits[:, p - 1 : -1].log_softmax(-1)
    token_logps = logps.gather(-1, record["completion_ids"].unsqueeze(-1)).squeeze(-1)
    return (token_logps * record["completion_mask"]).sum(1) if masked else token_logps.sum(1)


def _choose(scores, has_eos, penalty):
    """Our rule: subtract the penalty from completions without EOS; the higher score wins, a
    tie keeps the first sample. Returns (chosen, rejected) indices into the 2B completions."""
    s = [0.0 if v is None else v for v in scores]
    if penalty is not None:
        s = [v - penalty * (not e) for v, e in zip(s, has_eos, strict=True)]
    chosen, rejected = [], []
    for j in range(B):
        first, second = j, j + B
        win = first if s[first] >= s[second] else second
        chosen.append(win)
        rejected.append(second if win == first else first)
    return chosen, rejected, s


CASES = {
    "online_dpo-sigmoid": ("sigmoid", 0.1, None),
    "online_dpo-sigmoid-beta2": ("sigmoid", 2.0, None),
    "online_dpo-ipo": ("ipo", 0.1, None),
    "online_dpo-sigmoid-eos-penalty": ("sigmoid", 0.1, 1.0),
    "online_dpo-ipo-eos-penalty": ("ipo", 0.5, 0.25),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_online_dpo_training_step_matches_our_loss(trainer, case):
    loss_type, beta, penalty = CASES[case]
    trainer.args.loss_type, trainer._beta, trainer.args.missing_eos_penalty = (
        loss_type,
        beta,
        penalty,
    )
    record = _record_generation(trainer)
    trainer.stats = {key: [] for key in trainer.stats}
    trainer.model.zero_grad()
    inputs = {"prompt": PROMPTS, "answer": ANSWERS}
    loss = trainer.training_step(trainer.model, inputs)

    has_eos = [i in WITH_EOS for i in range(2 * B)]
    chosen, rejected, scores = _choose(SCORES, has_eos, penalty)
    logps = _sequence_logps(trainer.model, record)
    ref_logps = _sequence_logps(trainer.ref_model, record)
    log_ratio = logps - ref_logps  # log pi_theta(y|x) - log pi_ref(y|x), per completion
    h = log_ratio[chosen] - log_ratio[rejected]
    if loss_type == "sigmoid":
        ours = -F.logsigmoid(beta * h).mean()
    else:
        ours = ((h - 1 / (2 * beta)) ** 2).mean()
    torch.testing.assert_close(loss, ours, **TOL)
    assert h.abs().max() > 1e-3  # the check is not vacuous: policy != reference

    stats = {key: values[-1] for key, values in trainer.stats.items()}
    margin = sum(scores[c] - scores[r] for c, r in zip(chosen, rejected, strict=True)) / B
    assert stats["objective/scores_margin"] == pytest.approx(margin, abs=1e-6)
    assert stats["objective/scores"] == pytest.approx(sum(scores) / (2 * B), abs=1e-6)
    assert stats["val/contain_eos_token"] == pytest.approx(len(WITH_EOS) / (2 * B))
    implicit = beta * log_ratio
    assert stats["rewards/chosen"] == pytest.approx(implicit[chosen].mean().item(), abs=1e-5)
    assert stats["rewards/rejected"] == pytest.approx(implicit[rejected].mean().item(), abs=1e-5)
    assert stats["rewards/accuracies"] == pytest.approx((h > 0).float().mean().item())
    assert stats["logps/chosen"] == pytest.approx(logps[chosen].mean().item(), abs=1e-4)
    # TRL 1.16.0 sums the KL and "entropy" logs over every completion position, padding after
    # EOS included (the loss masks it): our unmasked sums match, the masked ones do not.
    all_logps = _sequence_logps(trainer.model, record, masked=False)
    all_log_ratio = all_logps - _sequence_logps(trainer.ref_model, record, masked=False)
    kl = all_log_ratio.mean().item()
    assert stats["objective/kl"] == pytest.approx(kl, abs=1e-5)
    assert abs(kl - log_ratio.mean().item()) > 1e-3
    assert stats["objective/non_score_reward"] == pytest.approx(-beta * kl, abs=1e-5)
    assert stats["objective/rlhf_reward"] == pytest.approx(
        sum(scores) / (2 * B) - beta * kl, abs=1e-5
    )
    assert stats["objective/entropy"] == pytest.approx(-all_logps.mean().item(), abs=1e-4)
    assert stats["beta"] == beta
    # A gradient flows to the policy only.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())


def test_online_dpo_choice_follows_the_penalised_scores():
    """Our rule on its own, worked by hand: a penalty of 1.0 flips pairs 0, 1 and 3 (their
    winners had no EOS); 0.25 flips none; the tie of pair 2 always keeps the first sample."""
    has_eos = [i in WITH_EOS for i in range(2 * B)]
    assert _choose(SCORES, has_eos, None)[0] == [4, 1, 2, 7]
    assert _choose(SCORES, has_eos, 1.0)[0] == [0, 5, 2, 3]
    assert _choose(SCORES, has_eos, 0.25)[0] == [4, 1, 2, 7]


def test_online_dpo_beta_list_is_indexed_by_epoch(trainer):
    """A list `beta` is read per epoch through `state.epoch`. TRL 1.16.0 indexes the list with
    that value directly, and `state.epoch` becomes a float (0.5, 1.25, ...) once training
    starts: a list of two or more betas raises TypeError at the second step. (A one-element
    list is turned into a float by `OnlineDPOConfig` and is fine.)"""
    saved_beta, saved_epoch = trainer._beta, trainer.state.epoch
    try:
        trainer._beta = [0.1, 0.5]
        trainer.state.epoch = 0
        assert trainer.beta == 0.1
        trainer.state.epoch = 5
        assert trainer.beta == 0.5  # past the list: the last value
        trainer.state.epoch = 0.5
        with pytest.raises(TypeError, match="list indices must be integers"):
            _ = trainer.beta
    finally:
        trainer._beta, trainer.state.epoch = saved_beta, saved_epoch
