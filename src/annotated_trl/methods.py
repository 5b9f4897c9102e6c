"""The methods this site teaches: one row each, in the order the site lists them.

Everything that lists methods reads this table (the site's navigation, STATUS.md, the dataset
checker's formats, the memory estimator's models, the lab); a new method is a row here plus its
three content files.
"""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Holds:
    """What a method keeps in memory besides the trainable policy, at its trainer's defaults
    (TRL 1.16; trl 1.12 for the ports). GRPO's default beta is 0.0 (no reference), RLOO's 0.05
    (a reference). GRPO, RLOO and Online DPO can score with reward functions (no memory) or with
    reward models: the memory estimator takes `reward_model`."""

    reference: bool = False  # a frozen copy of the policy (free with LoRA: adapters switched off)
    reward: bool = False  # a frozen reward model (a scorer)
    value: bool = False  # a trainable value model (a scorer with its own gradients and optimizer)
    teacher: bool = False  # a frozen teacher (a causal LM, possibly larger)
    generates: bool = False  # online: samples completions during training (GKD: a fraction)
    # The samples come from a vLLM server on GPUs of its own (Async GRPO): its KV cache is there.
    samples_on_server: bool = False
    # Sequences per dataset row or prompt that go through the policy with gradients.
    sequences_per_row: int = 1


@dataclass(frozen=True)
class Fixture:
    """How the method's script runs on the offline fixture (annotated_trl.fixtures), in the tests
    and the lab: the data folder it trains on, and the fixture's models its flags point at."""

    data: str  # a folder of <fixture>/data
    # (script flag, fixture model folder): what a tiny run must pass besides the policy.
    models: tuple[tuple[str, str], ...] = ()
    # Model flags the script also takes, with the fixture model that fits (BCO's UDM embedder).
    optional_models: tuple[tuple[str, str], ...] = ()

    @property
    def policy(self) -> str:
        return dict(self.models).get("model_name_or_path", "policy")


@dataclass(frozen=True)
class Method:
    key: str  # file stem: annotated_trainers/<key>.md, annotated_examples/<key>_training.py
    name: str  # short name on the site
    trainer: str  # trainer class name
    family: str  # section of the site's navigation
    # The dataset formats it trains on (annotated_trl.data.FORMATS), read from each trainer's
    # dataset preparation; the first is the one the site shows.
    formats: tuple[str, ...]
    holds: Holds = Holds()
    port: bool = False  # TRL removed it; annotated_trl.trainers implements it, equal to trl 1.12
    # Logged counters that a resumed run starts again from zero: TRL 1.16 counts `num_tokens` for
    # SFT, DPO, KTO, Reward and TPO in a trainer attribute no checkpoint saves (measured by the
    # kill-and-resume tests). None = the run cannot resume at all (PPO, like trl 1.12's).
    restarts_on_resume: tuple[str, ...] | None = ()
    fixture: Fixture = Fixture("conversational_prompt_only")
    experimental: bool = False  # TRL 1.16 ships it under trl.experimental
    lora: bool = True  # the trainer takes a `peft_config` (A2POTrainer does not)
    # The fewest `num_generations` that make sense: 2 where advantages compare the completions of
    # one prompt (GRPO, RLOO, SDPO's successful siblings); SDFT distils each answer on its own.
    min_generations: int = 2
    # Why it cannot train on a CPU ("" = it runs on the offline fixture). A GPU-only row has no
    # tiny recipe, golden curve, learning test or lab run; its script refuses on a CPU in one
    # line, and the generic tests that run scripts take CPU_METHODS.
    gpu_only: str = ""

    @property
    def module(self) -> str:
        """Where its trainer and config classes live."""
        if self.port:
            return f"annotated_trl.trainers.{self.key}"
        return f"trl.experimental.{self.key}" if self.experimental else "trl"

    @property
    def config(self) -> str:
        return self.trainer.removesuffix("Trainer") + "Config"


SUPERVISED = "Supervised and distillation"
REWARD = "Reward models"
OFFLINE = "Offline preference"
ONLINE = "Online preference"
RL = "Reinforcement learning"

# Pairwise trainers also extract an implicit prompt; KTO and BCO unpair paired data themselves.
PAIRS = ("preference", "implicit_preference")
# Online methods generate their own completions: they need prompts (extra columns such as
# `answer` travel to the reward functions).
PROMPTS = ("prompt_only",)
REFERENCE = Holds(reference=True)
NUM_TOKENS = ("num_tokens",)
PAIRED_WITH_REFERENCE = Holds(reference=True, sequences_per_row=2)
# The fixture's models that the tiny runs' flags point at.
TEACHER = (("teacher_model_name_or_path", "teacher"),)
# GOLD's teacher cuts text with another tokenizer (annotated_trl.fixtures.build_teacher_tokenizer).
GOLD_TEACHER = (("teacher_model_name_or_path", "gold_teacher"),)
REWARD_MODEL = (("reward_model_path", "reward"),)
SCORER = (("reward_model_name_or_path", "reward"),)  # a reward model instead of functions

METHODS = (
    Method(
        "sft",
        "SFT",
        "SFTTrainer",
        SUPERVISED,
        ("language_modeling", "conversational_language_modeling", "prompt_completion"),
        restarts_on_resume=NUM_TOKENS,
        fixture=Fixture("conversational_language_modeling"),
    ),
    # Distillation is fully on-policy: it reads only `prompt` (a `completion` column is accepted
    # and ignored).
    Method(
        "distillation",
        "Distillation",
        "DistillationTrainer",
        SUPERVISED,
        ("prompt_only", "prompt_completion"),
        Holds(teacher=True, generates=True),
        fixture=Fixture("prompt_only", TEACHER),
    ),
    # GKD's collator renders whole conversations.
    Method(
        "gkd",
        "GKD",
        "GKDTrainer",
        SUPERVISED,
        ("conversational_language_modeling",),
        Holds(teacher=True, generates=True),
        fixture=Fixture("conversational_language_modeling", TEACHER),
        experimental=True,
    ),
    # GOLD: GKD's on/off-policy mixture, and with `use_uld_loss` a teacher of another tokenizer
    # (the texts are re-tokenized for the teacher and aligned by bytes). Its collator splits the
    # prompt from the completion, so rows need an assistant answer or a `completion`.
    Method(
        "gold",
        "GOLD",
        "GOLDTrainer",
        SUPERVISED,
        ("conversational_language_modeling", "prompt_completion"),
        Holds(teacher=True, generates=True),
        fixture=Fixture("conversational_language_modeling", GOLD_TEACHER),
        experimental=True,
    ),
    # SDFT: the student samples from the prompt alone; its teacher is the same network shown the
    # prompt plus `privileged_context` (a demonstration), frozen at the start by default
    # (teacher_model_kind "base": a second copy, or the adapter switched off under LoRA). Plain
    # demonstrations (prompt + completion) work too: the script words the completion as the context.
    Method(
        "sdft",
        "SDFT",
        "SDFTTrainer",
        SUPERVISED,
        ("privileged_context", "prompt_completion"),
        Holds(reference=True, generates=True),
        fixture=Fixture("privileged_context"),
        experimental=True,
        min_generations=1,
    ),
    # Server distillation: Distillation's on-policy loop with the teacher on a vLLM server that
    # returns only its top-k log-probs per token; the divergence is restricted to that support
    # plus a tail bucket. The teacher is not held in memory. (AsyncDistillationTrainer, its
    # asynchronous sibling with several teachers (MOPD), is taught on the same pages.)
    Method(
        "server_distillation",
        "Server distillation",
        "ServerDistillationTrainer",
        SUPERVISED,
        ("prompt_only", "prompt_completion"),
        Holds(generates=True),
        experimental=True,
        gpu_only="the teacher is scored by a vLLM server (vLLM runs on CUDA GPUs)",
    ),
    Method(
        "reward",
        "Reward modelling",
        "RewardTrainer",
        REWARD,
        PAIRS,
        Holds(sequences_per_row=2),
        restarts_on_resume=NUM_TOKENS,
        fixture=Fixture("preference"),
    ),
    # A process reward model labels every step of a reasoning trace.
    Method(
        "prm",
        "PRM",
        "PRMTrainer",
        REWARD,
        ("stepwise_supervision",),
        port=True,
        fixture=Fixture("stepwise_supervision", (("model_name_or_path", "token_classifier"),)),
    ),
    Method(
        "dpo",
        "DPO",
        "DPOTrainer",
        OFFLINE,
        PAIRS,
        PAIRED_WITH_REFERENCE,
        restarts_on_resume=NUM_TOKENS,
        fixture=Fixture("preference"),
    ),
    Method(
        "kto",
        "KTO",
        "KTOTrainer",
        OFFLINE,
        ("unpaired_preference", *PAIRS),
        REFERENCE,
        restarts_on_resume=NUM_TOKENS,
        fixture=Fixture("unpaired_preference"),
    ),
    Method(
        "orpo",
        "ORPO",
        "ORPOTrainer",
        OFFLINE,
        PAIRS,
        Holds(sequences_per_row=2),
        fixture=Fixture("preference"),
        experimental=True,
    ),
    Method(
        "cpo",
        "CPO",
        "CPOTrainer",
        OFFLINE,
        PAIRS,
        Holds(sequences_per_row=2),
        fixture=Fixture("preference"),
        experimental=True,
    ),
    # TPO: a preference term on chosen/rejected plus an NLL term on a third, gold answer, all
    # through the policy (the reference branch is skipped when tpo_alpha=0); no reference model.
    Method(
        "tpo",
        "TPO",
        "TPOTrainer",
        OFFLINE,
        ("triple_preference", "implicit_triple_preference"),
        Holds(sequences_per_row=3),
        restarts_on_resume=NUM_TOKENS,
        fixture=Fixture("triple_preference"),
        experimental=True,
    ),
    Method(
        "bco",
        "BCO",
        "BCOTrainer",
        OFFLINE,
        ("unpaired_preference", *PAIRS),
        REFERENCE,
        port=True,
        fixture=Fixture("unpaired_preference", optional_models=(("embedding_model", "policy"),)),
    ),
    Method(
        "online_dpo",
        "Online DPO",
        "OnlineDPOTrainer",
        ONLINE,
        PROMPTS,
        Holds(reference=True, sequences_per_row=2, generates=True),
        fixture=Fixture("conversational_prompt_only", REWARD_MODEL),
        experimental=True,
    ),
    Method(
        "xpo",
        "XPO",
        "XPOTrainer",
        ONLINE,
        PROMPTS,
        Holds(reference=True, reward=True, sequences_per_row=2, generates=True),
        port=True,
        fixture=Fixture("conversational_prompt_only", REWARD_MODEL),
    ),
    Method(
        "nash_md",
        "Nash-MD",
        "NashMDTrainer",
        ONLINE,
        PROMPTS,
        Holds(reference=True, reward=True, generates=True),
        port=True,
        fixture=Fixture("conversational_prompt_only", REWARD_MODEL),
    ),
    Method(
        "grpo",
        "GRPO",
        "GRPOTrainer",
        RL,
        PROMPTS,
        Holds(generates=True),
        fixture=Fixture("conversational_prompt_only", optional_models=SCORER),
    ),
    # GRPO whose completions may call tools: a multi-turn rollout in which the tools' results are
    # spliced into the completion and masked out of the loss. The fixture's tool policy has its
    # own tokenizer and chat template (annotated_trl.tool_task).
    Method(
        "grpo_tools",
        "GRPO with tools",
        "GRPOTrainer",
        RL,
        PROMPTS,
        Holds(generates=True),
        fixture=Fixture("tool_calling", (("model_name_or_path", "tool_policy"),)),
    ),
    Method(
        "rloo",
        "RLOO",
        "RLOOTrainer",
        RL,
        PROMPTS,
        Holds(reference=True, generates=True),
        fixture=Fixture("conversational_prompt_only", optional_models=SCORER),
    ),
    # A*-PO: a reference model samples N answers per prompt once, before training (its optimal
    # value); then one answer per prompt, a regression with no group. Reward functions only.
    Method(
        "a2po",
        "A*-PO",
        "A2POTrainer",
        RL,
        PROMPTS,
        Holds(reference=True, generates=True),
        experimental=True,
        lora=False,
    ),
    # SDPO: a group per prompt and rewards as GRPO, but the loss distils the policy into itself
    # re-prompted with a successful sibling answer (an EMA copy by default: the teacher).
    Method(
        "sdpo",
        "SDPO",
        "SDPOTrainer",
        RL,
        # A `privileged_context` column holds feedback for `include_environment_feedback`.
        ("prompt_only", "privileged_context"),
        Holds(teacher=True, generates=True),
        experimental=True,
    ),
    # Async GRPO: generation runs on a vLLM server while the trainer steps; samples up to
    # `max_staleness` weight versions old are trained with the clipped ratio to the generator's
    # own log-probs. Tree-packed forwards use a FlashAttention-3 kernel: CUDA only.
    Method(
        "async_grpo",
        "Async GRPO",
        "AsyncGRPOTrainer",
        RL,
        PROMPTS,
        Holds(generates=True, samples_on_server=True),
        experimental=True,
        gpu_only="generation runs on a vLLM server and its tree-packed forward on a CUDA"
        " FlashAttention-3 kernel",
    ),
    Method(
        "ppo",
        "PPO",
        "PPOTrainer",
        RL,
        PROMPTS,
        Holds(reference=True, reward=True, value=True, generates=True),
        port=True,
        restarts_on_resume=None,
        fixture=Fixture(
            "conversational_prompt_only", REWARD_MODEL, (("value_model_path", "reward"),)
        ),
    ),
)
BY_KEY = {m.key: m for m in METHODS}
# The rows whose scripts train on the offline fixture: what the tests that run scripts take.
CPU_METHODS = tuple(m for m in METHODS if not m.gpu_only)


def import_trainers(methods=CPU_METHODS) -> None:
    """Import each method's trainer class now. TRL and transformers load a trainer's modules on
    first use (about 1.2 CPU-s a run in the lab, once the fixture's build has loaded the model
    code): a process that forks one child per run pays it here, once, instead of in every
    child."""
    for method in methods:
        getattr(importlib.import_module(method.module), method.trainer)


# What flows through one training step of each family, drawn at the top of its walkthroughs and in
# the methods overview.
FLOWS = {
    SUPERVISED: (
        "text: the dataset's, or sampled by the student",
        "student's log-probs per token",
        "cross-entropy to the data, or divergence to the teacher's log-probs",
        "mean over completion tokens: the loss",
    ),
    REWARD: (
        "chosen and rejected answers (PRM: reasoning steps with labels)",
        "a score per answer (PRM: per step)",
        "-log σ(chosen - rejected) (PRM: cross-entropy per step)",
    ),
    OFFLINE: (
        "prompt, chosen and rejected (KTO, BCO: one answer with a label)",
        "policy's log-prob of each answer",
        "minus the reference's: implicit rewards",
        "a loss on their margin",
    ),
    ONLINE: (
        "prompt",
        "two answers sampled (Nash-MD: one from a mixture)",
        "a judge ranks them: reward model or rule",
        "chosen / rejected pair",
        "DPO's loss on the pair (+ the method's own term)",
    ),
    RL: (
        "prompt",
        "samples: a group per prompt (PPO, A*-PO: one)",
        "rewards",
        "advantages: group-relative, leave-one-out, a value model's, or r − V* (A*-PO)",
        "clipped policy-gradient loss (+ KL to the reference); A*-PO: a least-squares fit;"
        " SDPO: a divergence to its own re-prompted predictions",
    ),
}
assert set(FLOWS) == {m.family for m in METHODS}
