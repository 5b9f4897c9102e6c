"""A*-PO bad input: a malformed dataset or an unusable reward is refused with one line, before
anything is written. The dataset and reward cases are GRPO's and RLOO's
(`tests/support/reward_bad_input.py`); the others are A*-PO's own: what A2POTrainer cannot do
(LoRA, quantisation), TRL's reward that expects conversational completions, and a
`--train_max_samples` below 1."""

import pytest
from support import reward_bad_input as shared
from support.bad_input import jsonl, refusal
from support.processes import REPO

KEY = "a2po"
SCRIPT = REPO / "annotated_examples" / "a2po_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "a2po_tiny.yaml"

OWN = {
    "a2po-lora": (["--use_peft", "--lora_r", "4"], ["takes no LoRA", "--use_peft"]),
    "a2po-4bit": (["--load_in_4bit"], ["4/8-bit", "--load_in_4bit"]),
    "a2po-messages-reward": (
        ["--reward_funcs", "trl.rewards.accuracy_reward"],
        ["passes text", "annotated_trl.rewards.text_accuracy_reward"],
    ),
    "a2po-no-train-samples": (["--train_max_samples", "0"], ["--train_max_samples 0"]),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(shared.cases(KEY)))
def test_a2po_refuses_bad_input(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_a2po_without_reward_column_needs_a_reward(tiny, tmp_path, monkeypatch):
    shared.needs_a_reward(KEY, tiny, tmp_path, monkeypatch)


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(OWN))
def test_a2po_refuses_what_its_trainer_cannot_do(tiny, tmp_path, monkeypatch, case):
    flags, words = OWN[case]
    data = tmp_path / "data.jsonl"
    data.write_text(jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]))
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args, *flags)
    for word in words:
        assert word in message, message
    assert not out.exists()
