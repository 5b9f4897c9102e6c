r"""Process reward model (PRM) training: a token classifier that judges every step of a solution.

TRL removed `trl.experimental.prm` in 1.14.0. This is our own implementation on
`transformers.Trainer`, written from the papers (Uesato et al. 2022; Lightman et al. 2023;
Wang et al. 2023, Math-Shepherd) and from what trl 1.12.0's trainer does, which
`tests/test_prm_parity.py` checks step by step. Names are 1.12's, so migrating is one line:

    from trl.experimental.prm import PRMConfig, PRMTrainer        # trl <= 1.13
    from annotated_trl.trainers.prm import PRMConfig, PRMTrainer  # here, on TRL 1.16

A row is a prompt, a list of reasoning steps and one boolean per step. Each step is tokenised
with a separator after it, and the *last token of the separator* carries the step's label
(1 correct, 0 wrong); every other token is ignored (-100). A model with a two-way
token-classification head then learns, by ordinary cross-entropy on those positions,
$p_\theta(\text{correct} \mid x, s_{1..k})$ for every step $k$ at once.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, Features, Sequence, Value
from transformers import (
    DataCollatorForTokenClassification,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import EvalPrediction

IGNORE_INDEX = -100  # PyTorch's cross-entropy skips targets equal to this


@dataclass
class PRMConfig(TrainingArguments):
    r"""Training arguments for `PRMTrainer`: `TrainingArguments` plus the PRM options.

    Field names and defaults are trl 1.12.0's `PRMConfig` (checked field by field in
    `tests/test_prm_parity.py`), including the four `TrainingArguments` defaults that TRL changed
    for all its trainers: `learning_rate` 1e-5, `logging_steps` 10, `gradient_checkpointing` on,
    and `bf16` on unless `fp16` is set.

    Args:
        max_length: Longest prompt + completion, in tokens; longer rows are cut at the end.
            `None` keeps everything.
        max_completion_length: Longest completion (all steps with their separators), in tokens,
            cut before the prompt is added. `None` keeps everything.
        disable_dropout: Set every dropout probability in the model to 0.
        step_separator: Text appended to every step. Its last token carries the step's label.
        train_on_last_step_only: Train on the last step's label only (the others become -100).
            Evaluation data keeps every label.
        dataset_num_proc: Processes used to tokenise the datasets.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (a float in [0, 1) is a ratio of all steps)."},
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={"help": "Recompute activations in the backward pass to save memory."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "Use bf16 mixed precision. Unset means on, unless fp16 is set."},
    )
    max_length: int | None = field(
        default=1024,
        metadata={"help": "Maximum length of prompt + completion, in tokens; None for no limit."},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Maximum length of the completion (all steps), in tokens."},
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Whether to disable dropout in the model."}
    )
    step_separator: str = field(
        default="\n", metadata={"help": "Separator appended to each reasoning step."}
    )
    train_on_last_step_only: bool = field(
        default=False, metadata={"help": "Whether to train only on the last step's label."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Number of processes used to tokenise the dataset."}
    )

    def __post_init__(self):
        # bf16 by default, as every TRL config: a GPU user gets mixed precision without asking.
        self.bf16 = not self.fp16 if self.bf16 is None else self.bf16
        super().__post_init__()


def compute_accuracy(eval_pred: EvalPrediction) -> dict[str, float]:
    r"""Step accuracy: the share of labelled positions where $\arg\max$ of the logits is the label.

    `predictions` are logits of shape (rows, length, 2), `label_ids` (rows, length) with -100 on
    every position that is not a step's label, and on the padding `Trainer` adds between batches.
    """
    logits, labels = eval_pred
    predicted = np.argmax(logits, axis=-1)
    labelled = labels != IGNORE_INDEX
    return {"accuracy": float(np.mean(predicted[labelled] == labels[labelled]))}


def disable_dropout_in_model(model: torch.nn.Module) -> None:
    """Dropout off: the same input then always gets the same logits, in training as in scoring."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _with_peft(model, peft_config, args: PRMConfig):
    """Wrap `model` in LoRA (or any peft method); prepare k-bit models for training first."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if isinstance(model, PeftModel) and peft_config is not None:
        raise ValueError(
            "model is already a PeftModel and a peft_config was given too; merge and unload the "
            "adapter first, or pass no peft_config to keep training it"
        )
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs or {},
        )
        args.gradient_checkpointing = args.activation_checkpointing = False  # done just above
    elif args.gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without gradients; without this hook
        # the adapters inside them would receive none.
        model.enable_input_require_grads()
    if peft_config is None:
        return model
    # The adapters start at random: seed first, as Trainer.__init__ (which runs later) seeds
    # everything else, so that a LoRA run repeats. trl 1.12 did not: two runs with the same seed
    # ended with different adapters (measured on ours before).
    set_seed(args.seed)
    return get_peft_model(model, peft_config)


class PRMTrainer(Trainer):
    r"""Train a process reward model: token classification on the last token of every step.

    Same arguments as trl 1.12.0's `PRMTrainer`. `model` is a token classifier with two labels
    (`AutoModelForTokenClassification.from_pretrained(name, num_labels=2)`); `train_dataset`
    and `eval_dataset` hold stepwise-supervision rows (`prompt`, `completions`, `labels`), or
    rows already tokenised into `input_ids` and `labels`. Without `compute_metrics`, evaluation
    logs step accuracy; without `data_collator`, batches are padded by
    `DataCollatorForTokenClassification` (labels padded with -100).
    """

    def __init__(
        self,
        model=None,
        args: PRMConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        model_init=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        preprocess_logits_for_metrics=None,
        peft_config=None,
    ):
        if train_dataset is None:
            raise ValueError("PRMTrainer needs a train_dataset")
        args = args if args is not None else PRMConfig()
        if peft_config is not None or _is_peft_model(model):
            model = _with_peft(model, peft_config, args)
        if args.disable_dropout:
            disable_dropout_in_model(model)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("PRMTrainer needs a processing_class (tokenizer) to pad batches")
            data_collator = DataCollatorForTokenClassification(processing_class)

        # Raw rows are tokenised once, here; a dataset that already has `input_ids` is used as is.
        if "input_ids" not in train_dataset.column_names:
            with args.main_process_first(desc="PRM dataset tokenisation"):
                train_dataset = self._tokenize(train_dataset, processing_class, args, False)
                if isinstance(eval_dataset, dict):
                    eval_dataset = {
                        name: self._tokenize(data, processing_class, args, True)
                        for name, data in eval_dataset.items()
                    }
                elif eval_dataset is not None:
                    eval_dataset = self._tokenize(eval_dataset, processing_class, args, True)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics or compute_accuracy,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )

    @classmethod
    def _tokenize(cls, dataset: Dataset, tokenizer, args: PRMConfig, is_eval: bool) -> Dataset:
        """Every row → `input_ids` and `labels`; the text columns are dropped."""
        options = dict(
            tokenizer=tokenizer,
            is_eval=is_eval,
            step_separator=args.step_separator,
            train_on_last_step_only=args.train_on_last_step_only,
            max_length=args.max_length,
            max_completion_length=args.max_completion_length,
        )
        return dataset.map(
            cls.tokenize_row,
            fn_kwargs=options,
            num_proc=args.dataset_num_proc,
            remove_columns=dataset.column_names,
            # Declared, or `map` would infer labels made only of 0/1 as booleans.
            features=Features(
                {"labels": Sequence(Value("int64")), "input_ids": Sequence(Value("int64"))}
            ),
            desc=f"Tokenizing {'eval' if is_eval else 'train'} dataset",
        )

    @staticmethod
    def tokenize_row(
        features: dict,
        tokenizer: PreTrainedTokenizerBase,
        step_separator: str,
        max_length: int | None,
        max_completion_length: int | None,
        train_on_last_step_only: bool,
        is_eval: bool,
    ) -> dict[str, list[int]]:
        r"""One stepwise-supervision row → `input_ids` and per-token `labels`.

        For steps $s_1, \dots, s_K$ with labels $c_1, \dots, c_K$ and separator $\sigma$:

            input_ids = [bos] + prompt + s_1 σ + s_2 σ + … + s_K σ
            labels    = -100 … -100     -100 … c_1  -100 … c_2 …  -100 … c_K

        The label sits on the last token of each $s_k \sigma$. Prompt, steps and separator are
        tokenised *separately* (no special tokens), so tokens never merge across a boundary.
        """
        prompt = features["prompt"]
        if not isinstance(prompt, str):
            raise ValueError(
                "PRMTrainer takes plain-text prompts; apply the chat template to the prompt first"
            )
        step_labels = [int(label) for label in features["labels"]]
        if train_on_last_step_only and not is_eval:
            # Outcome-style supervision: only the final verdict is a target.
            step_labels = [IGNORE_INDEX] * (len(step_labels) - 1) + step_labels[-1:]

        separator_ids = tokenizer.encode(step_separator, add_special_tokens=False)
        completion_ids, completion_labels = [], []
        for step, label in zip(features["completions"], step_labels, strict=True):
            step_ids = tokenizer(step, add_special_tokens=False)["input_ids"] + separator_ids
            completion_ids += step_ids
            completion_labels += [IGNORE_INDEX] * (len(step_ids) - 1) + [label]

        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            prompt_ids = [tokenizer.bos_token_id] + prompt_ids

        # Truncation keeps the start: first the completion alone, then prompt + completion.
        if max_completion_length is not None:
            completion_ids = completion_ids[:max_completion_length]
            completion_labels = completion_labels[:max_completion_length]
        input_ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_labels)[:max_length]
        return {"input_ids": input_ids, "labels": labels}


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def step_probabilities(model, tokenizer, prompt: str, steps: list[str], separator: str = "\n"):
    r"""Score a solution: $p_\theta(\text{correct} \mid x, s_{1..k})$ for each step $k$.

    Builds the input exactly as training does, runs the model once and reads the softmax of the
    two logits at each step's labelled position. Combine them as you need: Lightman et al. take
    the product, Wang et al. (Math-Shepherd) the minimum.
    """
    row = {"prompt": prompt, "completions": steps, "labels": [False] * len(steps)}
    tokens = PRMTrainer.tokenize_row(row, tokenizer, separator, None, None, False, True)
    input_ids = torch.tensor([tokens["input_ids"]], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0]
    positions = torch.tensor(tokens["labels"], device=model.device) != IGNORE_INDEX
    return torch.softmax(logits[positions].float(), dim=-1)[:, 1]
