"""The equations of reference_guides/grpo_tools.md, checked on a real multi-turn rollout of TRL
1.16's `GRPOTrainer` with the calculator environment: which completion tokens carry gradient.

The generation is scripted (the policy's `_generate_single_turn` returns the turns we wrote), so
the completions are known token by token; everything else is the trainer's own: it parses the
calls out of the text, runs the `Calculator` tools, splices the tool turns into the completions,
builds `tool_mask`, scores the rollouts and computes the loss. Four rollouts, two per prompt:

    r0  multiply(7, 8) -> 56 -> "56"                          one call
    r1  "54"                                                  no call
    r2  multiply(3, 4) -> 12 -> add(3, 4) -> 7 -> "7"         two rounds of calls
    r3  add(3, 4) and divide(3, 4) in one turn -> 7, error -> "8"   two calls, one fails

Our expected completions and masks are written from the chat template's layout, not from TRL:
each model turn is 1s, each tool turn (`\\n<|im_start|>tool\\n...<|im_end|>` + the next
assistant header) 0s. The gradient of the loss with respect to each per-token log-probability is
then exactly 0 on tool tokens and -A_i m_it / sum(m) on the model's.
"""

import sys

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from annotated_trl import tool_task

pytestmark = pytest.mark.math

G = 2
ROWS = [
    {"prompt": [{"role": "user", "content": "What is 7 * 8?"}], "answer": 56},
    {"prompt": [{"role": "user", "content": "What is 3 + 4?"}], "answer": 7},
]


def call(name: str, a: int, b: int) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {{"a": {a}, "b": {b}}}}}</tool_call>'


END = "<|im_end|>"
ERROR = str({"error": "Tool divide not found."})
# Each rollout: [(model turn, results of its calls), ...]; a turn without calls ends it.
SCRIPTS = [
    [(call("multiply", 7, 8) + END, ["56"]), ("56" + END, [])],
    [("54" + END, [])],
    [(call("multiply", 3, 4) + END, ["12"]), (call("add", 3, 4) + END, ["7"]), ("7" + END, [])],
    [(call("add", 3, 4) + call("divide", 3, 4) + END, ["7", ERROR]), ("8" + END, [])],
]


def tool_turn(results: list[str]) -> str:
    """The text between the model's end of turn and its next turn, from the template's layout."""
    return (
        "\n"
        + "".join(f"<|im_start|>tool\n{r}<|im_end|>\n" for r in results)
        + ("<|im_start|>assistant\n")
    )


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny.root / "tool_policy")


@pytest.fixture(scope="module")
def trainer(tiny, tokenizer, tmp_path_factory):
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo-tools-math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        num_generations=G,
        per_device_train_batch_size=2 * G,
        max_completion_length=128,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(tiny.root / "tool_policy"),
        reward_funcs=tool_task.final_answer_reward,
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        environment_factory=tool_task.Calculator,
    )
    assert args.max_tool_calling_iterations is None  # the default: no cap ...
    assert trainer.max_tool_calling_iterations == sys.maxsize  # ... as the trainer holds it
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()

    def scripted_turns(prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        """Stands in for sampling: the next turn of whichever rollout each context belongs to."""
        turns = []
        for k, ids in enumerate(prompt_ids):
            text = tokenizer.decode(ids)
            turn = text.count("<|im_start|>assistant") - 1  # model turns already in the context
            rollout = k if turn == 0 else next(i for i, s in enumerate(SCRIPTS) if s[0][0] in text)
            turns.append(tokenizer.encode(SCRIPTS[rollout][turn][0], add_special_tokens=False))
        return turns, None

    trainer._generate_single_turn = scripted_turns
    return trainer


def rollout(trainer, max_iterations):
    # GRPOConfig's None becomes sys.maxsize in the trainer: no cap.
    trainer.max_tool_calling_iterations = sys.maxsize if max_iterations is None else max_iterations
    inputs = [dict(ROWS[0])] * G + [dict(ROWS[1])] * G  # what the repeat sampler feeds
    before = len(trainer._metrics["train"]["tools/call_frequency"])
    output = trainer._generate_and_score_completions(inputs)
    metrics = {k: v[before] for k, v in trainer._metrics["train"].items() if k.startswith("tools/")}
    return output, metrics


def expected(tokenizer, script, rounds):
    """Our completion ids and mask for one rollout, cut after `rounds` rounds of tool calls."""
    ids, mask = [], []
    for i, (turn, results) in enumerate(script):
        turn_ids = tokenizer.encode(turn, add_special_tokens=False)
        ids += turn_ids
        mask += [1] * len(turn_ids)
        if not results or i == rounds:
            break
        tool_ids = tokenizer.encode(tool_turn(results), add_special_tokens=False)
        ids += tool_ids
        mask += [0] * len(tool_ids)
    return ids, mask


def rows_of(output, tensor):
    """Per rollout, the tensor's entries over its completion tokens (padding dropped)."""
    lengths = output["completion_mask"].sum(1).tolist()
    return [tensor[i, :n].tolist() for i, n in enumerate(lengths)]


CASES = {
    # max_tool_calling_iterations: rounds of calls per rollout, call frequency, failure frequency
    None: ([1, 0, 2, 1], 5 / 4, 1 / 5),  # the default: no cap (sys.maxsize)
    1: ([1, 0, 1, 1], 4 / 4, 1 / 4),  # r2's second call is written but never run
}


@pytest.mark.parametrize("max_iterations", list(CASES), ids=["no-cap", "one-round"])
def test_tool_tokens_are_masked_and_model_tokens_are_not(trainer, tokenizer, max_iterations):
    rounds, call_frequency, failure_frequency = CASES[max_iterations]
    output, metrics = rollout(trainer, max_iterations)
    want = [expected(tokenizer, s, r) for s, r in zip(SCRIPTS, rounds, strict=True)]
    assert rows_of(output, output["completion_ids"]) == [ids for ids, _ in want]
    assert rows_of(output, output["tool_mask"]) == [mask for _, mask in want]
    assert metrics["tools/call_frequency"] == pytest.approx(call_frequency)
    assert metrics["tools/failure_frequency"] == pytest.approx(failure_frequency)
    # The one-round cut leaves r2 ending in a call nobody answered: still the model's tokens.
    if max_iterations == 1:
        assert tokenizer.decode(want[2][0]).endswith(call("add", 3, 4) + END)


def test_environment_reward_and_final_answer(trainer):
    """Rewards per rollout: the Calculator's (a call returned the answer) + the final answer."""
    output, _ = rollout(trainer, None)
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # (final, calc)
    assert trainer.reward_func_names == ["final_answer_reward", "Calculator"]
    total = rewards.sum(1).view(-1, G)
    centred = (total - total.mean(1, keepdim=True)) / (total.std(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(output["advantages"], centred.view(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize("max_iterations", list(CASES), ids=["no-cap", "one-round"])
def test_gradient_flows_only_through_model_tokens(trainer, loss_type, max_iterations):
    """d loss / d log pi(y_it) = -A_i m_it / sum(m) (dapo) or -A_i m_it / (N sum_t m_it) (grpo),
    on-policy (ratio 1): exactly zero on every tool token."""
    output, _ = rollout(trainer, max_iterations)
    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def capture(*args, **kwargs):
        logps, entropies, aux = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = capture
    trainer.loss_type = loss_type
    try:
        loss = trainer.compute_loss(trainer.model, output)
        loss.backward()
    finally:
        trainer._get_per_token_logps_and_entropies = original
        trainer.loss_type = "dapo"
        trainer.model.zero_grad()
    grad = captured["logps"].grad
    m = (output["completion_mask"] * output["tool_mask"]).float()
    a = output["advantages"].unsqueeze(1)
    if loss_type == "dapo":
        want = -a * m / m.sum()
    else:
        want = -a * m / (m.sum(1, keepdim=True) * m.size(0))
    torch.testing.assert_close(grad, want, atol=1e-7, rtol=1e-5)
    assert (grad[m == 0] == 0).all()  # exactly: no gradient reaches a tool token
    assert (grad[(m == 1) & (a != 0)] != 0).all()
    # The loss itself, on-policy: -sum A_i m_it / sum(m) for dapo.
    if loss_type == "dapo":
        assert loss.item() == pytest.approx((-(a * m).sum() / m.sum()).item(), abs=1e-6)


def test_a_tool_result_past_max_completion_length_is_dropped(trainer, tokenizer):
    """r3's two results (one a long error message) would not fit in 40 completion tokens: the
    trainer drops them and ends r3 at its calls; the other rollouts fit and go on."""
    trainer.max_completion_length = 40
    try:
        output, metrics = rollout(trainer, None)
    finally:
        trainer.max_completion_length = 128
    rounds = [1, 0, 2, 0]
    want = [expected(tokenizer, s, r) for s, r in zip(SCRIPTS, rounds, strict=True)]
    assert len(want[2][0]) <= 40 < len(expected(tokenizer, SCRIPTS[3], 1)[0])
    assert rows_of(output, output["completion_ids"]) == [ids for ids, _ in want]
    assert rows_of(output, output["tool_mask"]) == [mask for _, mask in want]
    # The dropped calls still ran (the count includes them): the cut comes after the tools.
    assert metrics["tools/call_frequency"] == pytest.approx(5 / 4)
