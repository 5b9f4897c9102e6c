"""A warm start for GRPO with tools: the fixture's tool policy after supervised training on the
demonstrations in data/tool_traces (half call the calculator, half answer directly).

The random tool policy never writes a parseable call, so the tool loop never runs and every
rollout earns 0. After this warm start it calls the tool in about half of its sampled
completions, and about three quarters of those calls are right: groups mix calls and guesses,
right and wrong, and GRPO has a signal to learn from.

It is SFT's objective (cross-entropy on the assistant's tokens, `assistant_only_loss`), written
as a plain loop over pre-tokenized batches instead of `SFTTrainer`: the same 500 steps took
about half the time (35 s against 77 s for 300 steps on a loaded 2-core machine), and the suite
is short of time (41 s on the 2-core machine at load 3). Half the batch (16) halves that, but its
seed-1 warm start copied the operands badly (right calls 0.13) and GRPO then barely moved (calls
+0.07, right calls +0.00 over 40 steps): 32 it is. The lab warms up with the SFT script itself
(the `sft_tools` run).
Built once per session, shared by the test workers.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.once import built_once

STEPS, BATCH, LEARNING_RATE = 500, 32, 3e-3


@pytest.fixture(scope="session")
def tool_warm_policy(tiny, tmp_path_factory, seed_offset) -> Path:
    def build(folder: Path) -> None:
        train_tool_warm_start(
            tiny.root / "tool_policy", tiny.data / "tool_traces", folder, seed_offset
        )

    return built_once(tmp_path_factory, f"tool-warm-policy-{seed_offset}", build)


def train_tool_warm_start(policy: Path, traces: Path, folder: Path, seed: int = 0) -> None:
    tokenizer = AutoTokenizer.from_pretrained(policy)
    rows = [json.loads(line) for line in (traces / "train.jsonl").read_text().splitlines()]
    encoded = [
        tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        for row in rows
    ]
    length = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    labels = torch.full((len(rows), length), -100)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        attention[i, :n] = 1
        assistant = torch.tensor(e["assistant_masks"]).bool()
        labels[i, :n] = torch.where(assistant, ids[i, :n], -100)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(policy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        batch = torch.randint(0, len(rows), (BATCH,), generator=generator)
        loss = model(
            input_ids=ids[batch], attention_mask=attention[batch], labels=labels[batch]
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
