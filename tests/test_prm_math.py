"""The equations of reference_guides/prm.md, computed independently and compared with our code.

Everything runs on the tiny token-classification fixture (a Qwen2 body with a random two-way
head) and rows of the stepwise-supervision toy data. Where the guide states an equation, the
test computes it by hand in torch (positions by arithmetic on token counts, cross-entropy from
`log_softmax`, probabilities from the logit gap) and compares it with what `PRMTrainer`,
`tokenize_row`, the model's own loss and `step_probabilities` return.
"""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForTokenClassification, AutoTokenizer

from annotated_trl.trainers.prm import PRMConfig, PRMTrainer, step_probabilities

pytestmark = pytest.mark.math

TOL = {"atol": 1e-6, "rtol": 1e-6}


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    lines = (tiny.data / "stepwise_supervision" / "test.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[:64]]  # ragged enough: one and two steps
    tokenizer = AutoTokenizer.from_pretrained(tiny.token_classifier)
    model = AutoModelForTokenClassification.from_pretrained(tiny.token_classifier).eval()
    return rows, tokenizer, model, tmp_path_factory.mktemp("prm-math")


def _trainer(setup, rows, model=None, **options) -> PRMTrainer:
    _, tokenizer, shared_model, out = setup
    args = PRMConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_eval_batch_size=len(rows),
        **options,
    )
    data = Dataset.from_list(rows)
    return PRMTrainer(
        model=model or shared_model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("separator", ["\n", " ки\n\n"], ids=["prm-newline", "prm-multi-token"])
def test_prm_label_positions(setup, tiny, separator, bos):
    r"""Guide, "Step labels": position $t_k = |x| + \sum_{j \le k} (|s_j| + |\text{sep}|)$,
    counted from 1 and with $|x|$ including the BOS token, carries $c_k$; every other position
    is -100. The fixture's tokenizer has no BOS; the `bos` case gives it one, as Llama's has."""
    rows, tokenizer, _, _ = setup
    if bos:
        tokenizer = AutoTokenizer.from_pretrained(tiny.token_classifier)
        tokenizer.bos_token = "<|im_start|>"
        assert tokenizer.bos_token_id is not None
    sep = _ids(tokenizer, separator)
    for row in rows[:16]:
        out = PRMTrainer.tokenize_row(row, tokenizer, separator, None, None, False, False)
        prompt = [tokenizer.bos_token_id] * bos + _ids(tokenizer, row["prompt"])
        steps = [_ids(tokenizer, step) for step in row["completions"]]
        positions = [  # t_k, counted from 1
            len(prompt) + sum(len(s) + len(sep) for s in steps[: k + 1]) for k in range(len(steps))
        ]
        expected = [-100] * len(out["input_ids"])
        for position, label in zip(positions, row["labels"], strict=True):
            expected[position - 1] = int(label)  # a Python list counts from 0
        assert out["labels"] == expected
        assert out["input_ids"] == prompt + [i for s in steps for i in s + sep]
        assert [out["input_ids"][t - 1] for t in positions] == [sep[-1]] * len(steps)
        assert (out["input_ids"][0] == tokenizer.bos_token_id) is bos


def test_prm_loss_is_token_level_cross_entropy(setup):
    r"""Guide, "The loss": $\mathcal{L} = -\frac{1}{N_\mathcal{B}} \sum_{i,t} m_{i,t}
    \log \operatorname{softmax}(g_{i,t})_{c_{i,t}}$, each labelled step weighted alike."""
    rows = setup[0][:8]
    trainer = _trainer(setup, rows)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        outputs = trainer.model(**batch)
        trainer_loss = trainer.compute_loss(trainer.model, batch)

    log_p = torch.log_softmax(outputs.logits, dim=-1)
    mask = batch["labels"] != -100
    targets = batch["labels"].clamp(min=0)
    token_nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    by_hand = token_nll.sum() / mask.sum()
    torch.testing.assert_close(outputs.loss, by_hand, **TOL)
    torch.testing.assert_close(trainer_loss, by_hand, **TOL)
    # Rows have one or two labelled steps, so a per-row average would give another number.
    per_row = (token_nll.sum(1) / mask.sum(1)).mean()
    assert abs(per_row - by_hand) > 1e-3
    assert set(mask.sum(1).tolist()) == {1, 2}


def test_prm_last_step_only_keeps_one_target_per_row(setup):
    r"""Guide, "Outcome supervision": with `train_on_last_step_only`, $m_t = 1$ only at $t_K$."""
    rows = setup[0][:8]
    everything = _trainer(setup, rows)
    last_only = _trainer(setup, rows, train_on_last_step_only=True)
    for full, last in zip(everything.train_dataset, last_only.train_dataset, strict=True):
        labelled = [t for t, c in enumerate(full["labels"]) if c != -100]
        assert [t for t, c in enumerate(last["labels"]) if c != -100] == labelled[-1:]
        assert last["labels"][labelled[-1]] == full["labels"][labelled[-1]]
        assert last["input_ids"] == full["input_ids"]
    # Evaluation data keep every step's label.
    assert last_only.eval_dataset["labels"] == everything.eval_dataset["labels"]


def test_prm_step_probability_is_sigmoid_of_logit_gap(setup):
    r"""Guide, "Scoring a solution": $p_k = \operatorname{softmax}(g_{t_k})_1 =
    \sigma(g_{t_k,1} - g_{t_k,0})$; product and minimum combine them."""
    rows, tokenizer, model, _ = setup
    row = next(r for r in rows if len(r["completions"]) == 2)
    probabilities = step_probabilities(model, tokenizer, row["prompt"], row["completions"])

    text_ids = _ids(tokenizer, row["prompt"])
    positions = []
    for step in row["completions"]:
        text_ids += _ids(tokenizer, step) + _ids(tokenizer, "\n")
        positions.append(len(text_ids) - 1)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([text_ids])).logits[0]
    gap = logits[positions, 1] - logits[positions, 0]
    torch.testing.assert_close(probabilities, torch.sigmoid(gap), **TOL)
    # A prefix scores the same: the model is causal, step k never sees step k + 1.
    first = step_probabilities(model, tokenizer, row["prompt"], row["completions"][:1])
    torch.testing.assert_close(first, probabilities[:1], **TOL)
    product, weakest = probabilities.prod(), probabilities.min()
    assert product <= weakest  # every factor is at most 1
    torch.testing.assert_close(product, torch.exp(torch.log(torch.sigmoid(gap)).sum()), **TOL)


def test_prm_eval_accuracy_and_loss(setup):
    r"""Guide, "Metrics": accuracy $= \frac{1}{N} \sum_{i,t} m_{i,t}\,
    \mathbb{1}[\arg\max g_{i,t} = c_{i,t}]$ over every labelled step of the eval set, and
    `eval_loss` is the token-level cross-entropy when the eval set is one batch."""
    rows, tokenizer, model, _ = setup
    trainer = _trainer(setup, rows)
    metrics = trainer.evaluate()

    right = total = 0
    nll = 0.0
    for row in trainer.eval_dataset:  # one row at a time: no padding at all
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
        for t, label in enumerate(row["labels"]):
            if label != -100:
                right += int(logits[t].argmax()) == label
                total += 1
                nll -= torch.log_softmax(logits[t], dim=-1)[label].item()
    assert total == sum(len(r["labels"]) for r in rows)
    assert metrics["eval_accuracy"] == pytest.approx(right / total, abs=1e-12)
    assert metrics["eval_loss"] == pytest.approx(nll / total, rel=1e-5)


def test_prm_gradient_accumulation_sums_micro_batch_means(setup, tiny):
    r"""Guide, "Gradient accumulation": with $M$ micro-batches per optimiser step, the loss (and
    so the gradient) is $\sum_{g=1}^{M} \mathcal{L}(\mathcal{B}_g)$, not their mean.

    transformers 5.23 sees `**kwargs` in the token classifier's `forward`, so it passes
    `num_items_in_batch` and skips its own division by $M$; the model's loss ignores it and
    returns a per-micro-batch mean. trl 1.12 behaves the same (the parity scenario accumulates
    2 micro-batches). Eight copies of one row make every micro-batch's mean the same number.
    """
    rows, tokenizer, _, _ = setup
    row = next(r for r in rows if len(r["completions"]) == 2)
    fresh = AutoModelForTokenClassification.from_pretrained(tiny.token_classifier)
    trainer = _trainer(
        setup,
        [row] * 8,
        model=fresh,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
    )
    trainer.train()
    logged = trainer.state.log_history[0]["loss"]

    tokens = trainer.train_dataset[0]
    positions = [t for t, c in enumerate(tokens["labels"]) if c != -100]
    with torch.no_grad():
        logits = AutoModelForTokenClassification.from_pretrained(tiny.token_classifier)(
            input_ids=torch.tensor([tokens["input_ids"]])
        ).logits[0]
    log_p = torch.log_softmax(logits[positions], dim=-1)
    mean_nll = -log_p[range(len(positions)), [tokens["labels"][t] for t in positions]].mean()
    assert logged == pytest.approx(2 * mean_nll.item(), rel=1e-5)
