"""BCO, Binary Classifier Optimization (Jung et al., 2024, arXiv 2404.04656), on TRL 1.16.

TRL removed `trl.experimental.bco` in 1.14.0. This module is our own implementation, written
from the paper and from observing trl 1.12.0's behaviour; `tests/test_bco_parity.py` runs both
on the same data and compares every logged number at every step. Names follow trl 1.12, so
migrating is one import line:

    from trl.experimental.bco import BCOConfig, BCOTrainer      # trl <= 1.13
    from annotated_trl.trainers.bco import BCOConfig, BCOTrainer  # here, on TRL 1.16

The idea in one line: treat alignment as binary classification. A logistic classifier with logit
r(x, y) - δ should say "desirable" for thumbs-up rows and "undesirable" for thumbs-down rows,
where r = β log π_θ(y|x)/π_ref(y|x) is the implicit reward and δ, a running mean of all rewards
seen so far, centres the decision boundary. Minimising the classifier's cross-entropy aligns the
policy. Optionally (UDM), undesirable rows are reweighted by a density ratio estimated from their
prompts, for when good and bad answers come from different prompt distributions.

Built on `transformers.Trainer` plus TRL 1.16's public data helpers and unpaired-preference
collator, not on `trl.KTOTrainer`: see `BCOTrainer`'s docstring for why.
"""

import copy
import json
import os
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)
from trl import maybe_apply_chat_template, maybe_extract_prompt, maybe_unpair_preference_dataset
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
from trl.trainer.utils import disable_dropout_in_model, pad, selective_log_softmax

# File names inside a checkpoint folder: the same as trl 1.12, so either can resume the other's.
RUNNING_MEAN_FILE = "running.json"
CLASSIFIER_FILE = "clf.pkl"


@dataclass
class BCOConfig(TrainingArguments):
    r"""Configuration for [`BCOTrainer`]: trl 1.12's `BCOConfig` fields, names and defaults.

    Only the BCO-specific fields are listed here; everything else is
    `transformers.TrainingArguments`. As in trl 1.12, four defaults differ from
    `TrainingArguments`: `learning_rate=5e-7`, `logging_steps=10`,
    `gradient_checkpointing=True` and `bf16=True` unless `fp16` is set. One is new and keeps
    1.12's behaviour: `train_sampling_strategy="sequential"` (1.12 always read the data in order).

    Parameters:
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest prompt + completion, in tokens. Completions are cut to fit; prompts are kept.
        max_completion_length (`int` or `None`, *optional*, defaults to `None`):
            Kept for compatibility: 1.12 used it for encoder-decoder models only, which this
            implementation does not support.
        beta (`float`, *optional*, defaults to `0.1`):
            β, the scale of the implicit reward β·log(π_θ/π_ref). Higher β keeps the policy closer
            to the reference model.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Turn dropout off in the policy and the reference model.
        generate_during_eval (`bool`, *optional*, defaults to `False`):
            Kept for compatibility; `True` is refused (1.12 logged samples to W&B or Comet).
        is_encoder_decoder (`bool` or `None`, *optional*, defaults to `None`):
            Kept for compatibility; encoder-decoder models are refused.
        precompute_ref_log_probs (`bool`, *optional*, defaults to `False`):
            Compute the reference log-probabilities once, before training, so that no reference
            model stays in memory.
        model_init_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when `model` is a string.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow models that ship their own Python code.
        dataset_num_proc (`int` or `None`, *optional*, defaults to `None`):
            Processes used to prepare the dataset.
        prompt_sample_size (`int`, *optional*, defaults to `1024`):
            UDM: prompts sampled from each label to fit the density-ratio classifier.
        min_density_ratio (`float`, *optional*, defaults to `0.5`):
            UDM: lower clip of the density-ratio weight of an undesirable row.
        max_density_ratio (`float`, *optional*, defaults to `10.0`):
            UDM: upper clip of the density-ratio weight of an undesirable row.
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    # TrainingArguments fields whose defaults BCO changes (the same changes as trl 1.12).
    learning_rate: float = field(default=5e-7, metadata={"help": "The initial learning rate."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in the backward pass."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to True unless fp16."}
    )
    train_sampling_strategy: str = field(
        default="sequential", metadata={"help": "Order of the training rows (1.12: in order)."}
    )

    max_length: int | None = field(
        default=1024, metadata={"help": "Longest prompt + completion, in tokens."}
    )
    max_completion_length: int | None = field(
        default=None, metadata={"help": "Encoder-decoder only in 1.12; unused here."}
    )
    beta: float = field(default=0.1, metadata={"help": "Scale β of the implicit reward."})
    disable_dropout: bool = field(
        default=True, metadata={"help": "Turn dropout off in the policy and reference model."}
    )
    generate_during_eval: bool = field(
        default=False, metadata={"help": "Not supported here (1.12: samples to W&B/Comet)."}
    )
    is_encoder_decoder: bool | None = field(
        default=None, metadata={"help": "Not supported here: decoder-only models only."}
    )
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "Compute reference log-probs once, before training."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for `from_pretrained`."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models that ship their own Python code."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes used to prepare the dataset."}
    )
    prompt_sample_size: int = field(
        default=1024, metadata={"help": "UDM: prompts sampled per label to fit the classifier."}
    )
    min_density_ratio: float = field(
        default=0.5, metadata={"help": "UDM: lower clip of an undesirable row's weight."}
    )
    max_density_ratio: float = field(
        default=10.0, metadata={"help": "UDM: upper clip of an undesirable row's weight."}
    )

    def __post_init__(self):
        self.bf16 = not self.fp16 if self.bf16 is None else self.bf16
        # transformers 5 renamed gradient_checkpointing to activation_checkpointing and warns on
        # the old name. Here the old name is 1.12's documented field: honour it without the
        # warning; the new name, when given, still wins.
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing
        super().__post_init__()


# ## The math, as plain functions (tests/test_bco_math.py checks each one)


def bco_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    delta: torch.Tensor,
    rejected_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The BCO loss of one batch: binary cross-entropy of a classifier with logit r - δ.

    Desirable rows have target 1: -log σ(r - δ). Undesirable rows have target 0:
    -log(1 - σ(r - δ)) = -log σ(-(r - δ)). With UDM each undesirable term is multiplied by its
    density-ratio weight. The mean runs over all rows of the batch, whatever their label.
    """
    chosen_losses = -F.logsigmoid(chosen_rewards - delta)
    rejected_losses = -F.logsigmoid(-(rejected_rewards - delta))
    if rejected_weights is not None:
        rejected_losses = rejected_weights * rejected_losses
    return torch.cat((chosen_losses, rejected_losses)).nanmean()


def density_ratio_weights(
    prob_desirable: torch.Tensor, min_ratio: float, max_ratio: float
) -> torch.Tensor:
    """UDM weight of an undesirable row from the classifier's P(desirable | prompt).

    With balanced classes, p / (1 - p) estimates the density ratio p_D(x) / p_U(x): how much more
    often this prompt occurs among desirable rows than among undesirable ones. Clipped, so that
    one over-confident prediction cannot dominate the batch; 1e-8 guards p = 1.
    """
    return (prob_desirable / (1 - prob_desirable + 1e-8)).clamp(min=min_ratio, max=max_ratio)


@dataclass
class RunningMean:
    """δ: the mean of every implicit reward seen in training so far, across all processes.

    Updated with each micro-batch *before* its loss is computed, so the batch's own rewards are
    already in δ. Saved in every checkpoint (`running.json`) and restored on resume: a resumed
    run that started again from δ = 0 would train on a different loss.
    """

    mean: float = 0.0
    count: float = 0.0

    def update(self, rewards: torch.Tensor, accelerator=None) -> None:
        total_and_count = torch.stack([rewards.sum(), torch.tensor(rewards.numel()).to(rewards)])
        if accelerator is not None and accelerator.num_processes > 1:
            total_and_count = accelerator.reduce(total_and_count, reduction="sum")
        total, count = total_and_count.tolist()
        if count == 0:
            return
        self.count += count
        self.mean += (total / count - self.mean) * count / self.count

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"mean": self.mean, "count": self.count}, file, indent=2)

    @classmethod
    def load(cls, path: str) -> "RunningMean":
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)  # trl 1.12 also writes std and var, which BCO never uses
        return cls(mean=saved["mean"], count=saved["count"])


# ## Data: one row -> prompt ids, completion ids (ending in EOS), label


def tokenize_row(row: dict, tokenizer, max_length: int | None, embedding_tokenizer=None) -> dict:
    """Tokenise one (already templated) row the way trl 1.12's BCO did.

    The prompt and prompt + completion are tokenised separately, without special tokens; where
    a token merges across the boundary, the completion starts one token earlier. Then, to fit
    `max_length`, the completion is cut and the prompt kept whole; one slot is reserved for an
    EOS and one for a BOS that are not already there. (1.12 reserves the BOS slot even for
    tokenizers that have no BOS, such as Qwen's; we do the same, for parity.) Finally the BOS
    (when the tokenizer has one) and the EOS are added.
    """
    prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
    start = len(prompt_ids) - (full_ids[: len(prompt_ids)] != prompt_ids)
    prompt_ids, completion_ids = full_ids[:start], full_ids[start:]

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    has_bos = bool(prompt_ids) and prompt_ids[0] == bos
    if max_length is not None:
        room = max_length - (not has_bos) - (not (completion_ids and completion_ids[-1] == eos))
        completion_ids = completion_ids[: max(room - len(prompt_ids), 0)]
    if bos is not None and not has_bos:
        prompt_ids = [bos] + prompt_ids
    if not completion_ids or completion_ids[-1] != eos:
        completion_ids = completion_ids + [eos]

    tokens = {"prompt_ids": prompt_ids, "completion_ids": completion_ids}
    if embedding_tokenizer is not None:  # UDM embeds the prompt with its own tokenizer
        embedding = embedding_tokenizer(row["prompt"], add_special_tokens=False)
        tokens["embedding_input_ids"] = embedding["input_ids"]
    return tokens


@dataclass
class BCODataCollator(DataCollatorForUnpairedPreference):
    """TRL 1.16's unpaired-preference collator, plus the prompt tokens UDM embeds.

    From the parent: `input_ids` = prompt + completion padded on the right, `attention_mask`,
    `completion_mask` (1 on completion tokens), `label` (bools) and `ref_logps` when present.
    """

    embedding_pad_token_id: int = 0

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if "embedding_input_ids" in examples[0]:
            ids = [torch.tensor(e["embedding_input_ids"]) for e in examples]
            batch["embedding_input_ids"] = pad(ids, self.embedding_pad_token_id)
            batch["embedding_attention_mask"] = pad([torch.ones_like(i) for i in ids], 0)
        return batch


class BCOTrainer(Trainer):
    r"""Trainer for BCO (Jung et al., 2024), with trl 1.12's constructor and behaviour.

    Built on `transformers.Trainer` rather than `trl.KTOTrainer`. KTO's preparation builds
    mismatched completions for its KL estimate and refuses batches of one row; its forward pass
    uses a fused LM head that never forms the logits 1.12's `logits/*` metrics sum; it truncates
    differently; and `KTOConfig` carries KTO-only fields. Subclassing would mean overriding
    nearly everything. What we reuse from TRL 1.16 is public: the dataset helpers
    (`maybe_extract_prompt`, `maybe_unpair_preference_dataset`, `maybe_apply_chat_template`),
    the unpaired-preference collator, `selective_log_softmax` and `disable_dropout_in_model`.

    Args:
        model: the policy, a causal LM or a Hub id / local path.
        ref_model: the frozen reference π_ref. Default: a copy of `model` (with `peft_config`: the
            model with its adapter disabled; with `precompute_ref_log_probs`: none).
        args: a [`BCOConfig`].
        train_dataset, eval_dataset: unpaired preference rows (`prompt`, `completion`, `label`),
            or paired ones (`prompt`, `chosen`, `rejected`), which are unpaired first.
        processing_class: the tokenizer; loaded from the model when omitted.
        data_collator: default [`BCODataCollator`].
        callbacks, optimizers: as in `transformers.Trainer`.
        peft_config: a `peft.PeftConfig` to wrap the policy in.
        embedding_func: UDM, `f(input_ids=..., attention_mask=...) -> (batch, dim)` embeddings
            of prompts, given together with `embedding_tokenizer`.
        embedding_tokenizer: UDM, the tokenizer `embedding_func` expects.
    """

    def __init__(
        self,
        model,
        ref_model=None,
        args: BCOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        data_collator=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        embedding_func: Callable | None = None,
        embedding_tokenizer=None,
    ):
        args = args or BCOConfig(output_dir="bco-output")
        if not isinstance(args, BCOConfig):
            raise TypeError(f"args must be a BCOConfig, not {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("BCOTrainer needs a train_dataset")
        if args.generate_during_eval:
            raise ValueError("generate_during_eval=True is not supported by this BCOTrainer")
        if (embedding_func is None) != (embedding_tokenizer is None):
            raise ValueError("UDM needs both embedding_func and embedding_tokenizer, or neither")
        if model is ref_model:
            raise ValueError("model and ref_model must be different objects; pass a copy")

        if isinstance(model, str):
            model = self._load_model(model, args)
        if isinstance(ref_model, str):
            ref_model = self._load_model(ref_model, args)
        if args.is_encoder_decoder or model.config.is_encoder_decoder:
            raise ValueError("BCOTrainer supports decoder-only (causal LM) models only")
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)

        # The reference model: a frozen copy, unless PEFT (disable the adapter instead) or
        # precomputed log-probs (the policy itself, before its first step) make it unnecessary.
        if peft_config is not None:
            from peft import get_peft_model

            # The adapters start at random: seed first, as Trainer.__init__ (which runs later)
            # seeds everything else, so that a LoRA run repeats. trl 1.12 did not: two runs
            # with the same seed ended with different adapters (measured on ours before).
            set_seed(args.seed)
            model = get_peft_model(model, peft_config)
        if ref_model is None and peft_config is None and not args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        if args.disable_dropout:
            disable_dropout_in_model(model)
            if ref_model is not None:
                disable_dropout_in_model(ref_model)

        self.embedding_func = embedding_func
        self.embedding_tokenizer = embedding_tokenizer
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args)
        if eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args)
        if data_collator is None:
            data_collator = BCODataCollator(
                pad_token_id=processing_class.pad_token_id,
                embedding_pad_token_id=getattr(embedding_tokenizer, "pad_token_id", None) or 0,
            )

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # We compute the loss ourselves, so Trainer must divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.ref_model = None
        if ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

        self.running = RunningMean()
        self._stored_metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

        if args.precompute_ref_log_probs:
            self.train_dataset = self._add_reference_logps(self.train_dataset)
            if self.eval_dataset is not None:
                self.eval_dataset = self._add_reference_logps(self.eval_dataset)

        # UDM: fit the prompt classifier now (after Trainer seeded numpy, so the sample is
        # reproducible); when resuming, it is loaded from the checkpoint instead.
        self.classifier = None
        if self.match_underlying_distribution and not args.resume_from_checkpoint:
            self.classifier = self._fit_density_ratio_classifier(self.train_dataset)

    @staticmethod
    def _load_model(name: str, args: BCOConfig):
        kwargs = dict(args.model_init_kwargs or {})
        if isinstance(kwargs.get("dtype"), str) and kwargs["dtype"] != "auto":
            kwargs["dtype"] = getattr(torch, kwargs["dtype"])
        kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)

    @property
    def match_underlying_distribution(self) -> bool:
        return self.embedding_func is not None

    def _prepare_dataset(self, dataset: Dataset, tokenizer, args: BCOConfig) -> Dataset:
        """Extract an implicit prompt, unpair pairs, apply the chat template, tokenise."""
        num_proc = args.dataset_num_proc
        dataset = dataset.map(maybe_extract_prompt, num_proc=num_proc)
        dataset = maybe_unpair_preference_dataset(dataset, num_proc=num_proc)
        dataset = dataset.map(
            maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer}, num_proc=num_proc
        )
        return dataset.map(
            tokenize_row,
            fn_kwargs={
                "tokenizer": tokenizer,
                "max_length": args.max_length,
                "embedding_tokenizer": self.embedding_tokenizer,
            },
            num_proc=num_proc,
        )

    def _set_signature_columns_if_needed(self):
        # The columns the collator reads; Trainer drops the rest (the text) from the batches.
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "completion_ids",
                "label",
                "ref_logps",
                "embedding_input_ids",
            ]

    # ## Log-probabilities of completions

    def completion_logps(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(y | x) summed over completion tokens, one per row; and the logits.

        Position t's logits predict token t + 1, so the logits lose their last position and the
        tokens their first. Prompt and padding tokens are masked out of the sum.
        """
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_token_logps = selective_log_softmax(logits[:, :-1], batch["input_ids"][:, 1:])
        logps = (per_token_logps * batch["completion_mask"][:, 1:]).sum(-1)
        return logps, logits

    @torch.no_grad()
    def reference_logps(self, batch: dict) -> torch.Tensor:
        """log π_ref(y | x): precomputed, from the reference model, or from the bare base model."""
        if "ref_logps" in batch:
            return batch["ref_logps"]
        if self.ref_model is not None:
            return self.completion_logps(self.ref_model, batch)[0]
        unwrapped = self.accelerator.unwrap_model(self.model)
        # PEFT: the base model without the adapter is the reference. Otherwise (precomputing,
        # before the first step) the policy still equals the reference.
        adapter_off = getattr(unwrapped, "disable_adapter", nullcontext)
        with adapter_off():
            return self.completion_logps(self.model, batch)[0]

    def _add_reference_logps(self, dataset: Dataset) -> Dataset:
        loader = DataLoader(
            dataset, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator
        )
        logps = [self.reference_logps(self._prepare_inputs(batch)).cpu() for batch in loader]
        return dataset.add_column("ref_logps", torch.cat(logps).float().tolist())

    # ## UDM: a prompt classifier gives each undesirable row a density-ratio weight

    @torch.no_grad()
    def _embed_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = self.accelerator.device
        return self.embedding_func(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        )

    def _fit_density_ratio_classifier(self, dataset: Dataset):
        """Logistic regression: is this prompt from a desirable row (1) or an undesirable (0)?

        `prompt_sample_size` rows of each label are drawn with replacement (as in 1.12) using
        numpy's global generator, which `Trainer` has just seeded. `class_weight="balanced"`
        makes the classifier's odds p / (1 - p) estimate the density ratio p_D(x) / p_U(x),
        whatever the numbers of desirable and undesirable rows.
        """
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise ImportError("UDM needs scikit-learn: pip install 'annotated-trl[udm]'") from None
        embeddings = []
        for wanted in (True, False):
            rows = dataset.filter(lambda row, wanted=wanted: row["label"] == wanted)
            if len(rows) == 0:
                raise ValueError("UDM needs both desirable and undesirable rows in train_dataset")
            indices = np.random.choice(
                len(rows), size=(min(len(rows), self.args.prompt_sample_size),)
            )
            loader = DataLoader(
                rows.select(indices),
                batch_size=self.args.per_device_train_batch_size,
                collate_fn=self.data_collator,
            )
            embeddings.append(
                torch.cat(
                    [
                        self._embed_prompts(b["embedding_input_ids"], b["embedding_attention_mask"])
                        .cpu()
                        .float()
                        for b in loader
                    ]
                )
            )
        features = torch.cat(embeddings).numpy()
        targets = np.concatenate([np.ones(len(embeddings[0])), np.zeros(len(embeddings[1]))])
        return LogisticRegression(class_weight="balanced").fit(features, targets)

    def udm_weights(self, batch: dict, rejected: torch.Tensor) -> torch.Tensor:
        """Density-ratio weights of the batch's undesirable rows (`rejected` is a row mask)."""
        embeddings = self._embed_prompts(
            batch["embedding_input_ids"], batch["embedding_attention_mask"]
        )[rejected]
        if embeddings.shape[0] == 0:
            return embeddings.new_zeros(0)
        prob = self.classifier.predict_proba(embeddings.cpu().float().numpy())[:, 1]
        prob = torch.as_tensor(prob, dtype=embeddings.dtype, device=embeddings.device)
        return density_ratio_weights(prob, self.args.min_density_ratio, self.args.max_density_ratio)

    # ## The loss of one micro-batch

    def bco_batch_loss(self, model, batch: dict, train: bool) -> torch.Tensor:
        """Rewards → update δ (training only) → BCO loss; stores the metrics to log."""
        chosen = batch["label"].bool()
        rejected = ~chosen
        policy_logps, logits = self.completion_logps(model, batch)
        ref_logps = self.reference_logps(batch)

        rewards = self.args.beta * (policy_logps - ref_logps)  # r_θ(x, y), one per row
        chosen_rewards, rejected_rewards = rewards[chosen], rewards[rejected]
        if train:  # δ first, so this batch's rewards count; evaluation leaves δ alone
            self.running.update(
                torch.cat((chosen_rewards, rejected_rewards)).detach(), self.accelerator
            )
        delta = torch.tensor(self.running.mean, dtype=rewards.dtype, device=rewards.device)

        weights = self.udm_weights(batch, rejected) if self.classifier is not None else None
        loss = bco_loss(chosen_rewards, rejected_rewards, delta, weights)

        # Sums and counts, so that a logged value is the mean over every row since the last log.
        gather = self.accelerator.gather_for_metrics
        metrics = self._stored_metrics["train" if train else "eval"]
        metrics["delta"].append(delta.item())
        for side, rows in (("chosen", chosen), ("rejected", rejected)):
            count = gather(rows.sum()).sum().item()
            if count == 0:
                continue
            metrics[f"count/{side}"].append(count)
            metrics[f"rewards/{side}_sum"].append(gather(rewards[rows].nansum()).nansum().item())
            metrics[f"logps/{side}_sum"].append(gather(policy_logps[rows].nansum()).nansum().item())
            metrics[f"logits/{side}_sum"].append(gather(logits[rows].nansum()).nansum().item())
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.bco_batch_loss(model, inputs, train=True)
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.bco_batch_loss(model, inputs, train=False)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the stored metrics: per-row means since the last log, the margin, and δ."""
        train = "loss" in logs  # evaluation logs carry "eval_loss" instead
        prefix = "" if train else "eval_"
        stored = self._stored_metrics["train" if train else "eval"]
        for side in ("chosen", "rejected"):
            count = sum(stored.pop(f"count/{side}", []))
            for name in ("rewards", "logps", "logits"):
                total = sum(stored.pop(f"{name}/{side}_sum", []))
                if count:
                    logs[f"{prefix}{name}/{side}"] = total / count
        if f"{prefix}rewards/chosen" in logs and f"{prefix}rewards/rejected" in logs:
            margin = logs[f"{prefix}rewards/chosen"] - logs[f"{prefix}rewards/rejected"]
            logs[f"{prefix}rewards/margins"] = margin
        for name, values in stored.items():
            logs[f"{prefix}{name}"] = sum(values) / len(values)
        stored.clear()
        super().log(logs, start_time)

    # ## Checkpoints carry δ (and the UDM classifier)

    def _save_optimizer_and_scheduler(self, output_dir):
        # Written before trainer_state.json, which marks a finished checkpoint.
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            self.running.save(os.path.join(output_dir, RUNNING_MEAN_FILE))
            if self.classifier is not None:
                import joblib

                joblib.dump(self.classifier, os.path.join(output_dir, CLASSIFIER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        running_file = os.path.join(checkpoint, RUNNING_MEAN_FILE)
        if not os.path.isfile(running_file):
            raise FileNotFoundError(
                f"{checkpoint} has no {RUNNING_MEAN_FILE}: BCO cannot resume without δ, the "
                "running mean of the rewards"
            )
        self.running = RunningMean.load(running_file)
        if self.match_underlying_distribution:
            import joblib

            self.classifier = joblib.load(os.path.join(checkpoint, CLASSIFIER_FILE))
