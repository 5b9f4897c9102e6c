"""What the lab runs: one row per method, on the toy arithmetic task.

Every run is the method's annotated example script with its tiny recipe
(`annotated_examples/recipes/<key>_tiny.yaml`) and the flags below on top, so the lab trains
exactly what a reader would run. The pipeline is the real one, at toy scale:

    random policy --SFT--> policy that solves ~40% --DPO, KTO, BCO, GRPO, PPO, ...--> better?
                                 \\--teacher--> distillation, GKD train a random student
    random GPT-2 teacher --SFT (sft_gold_teacher)--> GOLD trains a random student across tokenizers
    random tool policy --SFT on tool demonstrations (sft_tools)--> GRPO with tools
    random wider policy --SFT on two-step solutions (sft_stepwise)--> the PRM learns to judge steps

ORPO, CPO and TPO start from the random policy: they fold the SFT stage into their loss. The
reward model starts from a random classifier. Settings come from the learning tests
(tests/test_*_learning.py), which measured them across seeds and CPUs.
"""

from dataclasses import dataclass, field, replace

from annotated_trl.methods import CPU_METHODS

FROM_RANDOM: dict[str, str] = {}  # the fixture's untrained policy
TEACHER = {"--teacher_model_name_or_path": "sft"}  # the SFT run teaches a random student
# Online DPO, XPO and Nash-MD judge pairs with the lab's reward model, as in RLHF. Their tiny
# recipes also name the task's rule; weight 0 keeps it out of the judgement (two samples of a
# policy that solves 30% tie under the rule more often than not, and a tie teaches nothing).
JUDGED_BY_REWARD_MODEL = ["--reward_weights", "1", "0"]


@dataclass(frozen=True)
class Curve:
    """One panel of a method's figure: a logged metric, and the range a healthy run ends in."""

    key: str  # key in the trainer's log history
    label: str
    healthy: tuple[float, float] | None = None  # shaded band; None where any level is fine
    why: str = ""  # what the band means, shown under the figure


@dataclass(frozen=True)
class Experiment:
    key: str  # the method's key in annotated_trl.methods, or a broken run's name
    data: str  # the fixture's data format (annotated_trl.fixtures.DATA_FORMATS)
    steps: int  # optimiser steps
    flags: list[str] = field(default_factory=list)  # beyond the tiny recipe; {tiny}: fixture
    # Models that come from other lab runs of the same seed: flag -> the run's method key.
    # Unnamed, the model is the fixture's untrained one.
    uses: dict[str, str] = field(default_factory=lambda: {"--model_name_or_path": "sft"})
    curves: tuple[Curve, ...] = ()
    method: str = ""  # whose script runs, when `key` is not a method's (a broken run)
    prompts_per_step: int = 0  # PPO counts prompts, not steps: --total_episodes = steps x this

    @property
    def script(self) -> str:
        return self.method or self.key

    @property
    def model_kind(self) -> str:
        """What the run trains, hence how the lab scores it: a policy, a reward model or a PRM."""
        # A tool policy has its own tokenizer and task: the arithmetic score does not apply; nor
        # to a model trained on plain-text solutions (the PRM's base), which never saw a chat.
        if "{tiny}/tool_policy" in self.flags:
            return "tools"
        if self.data == "stepwise_solutions":
            return "solutions"
        return {"reward": "reward", "prm": "prm"}.get(self.script, "policy")


@dataclass(frozen=True)
class Broken:
    """A deliberate mistake: a healthy experiment with a few flags changed, one seed, and the
    metric that shows it beside the healthy runs."""

    key: str
    base: str  # the healthy experiment
    flags: list[str]  # added after the base's: the last occurrence of a flag wins
    curve: Curve
    symptom: str
    cause: str
    fix: str
    uses: dict[str, str] | None = None  # replaces the base's, when given

    @property
    def experiment(self) -> Experiment:
        base = BY_METHOD[self.base]
        uses = base.uses if self.uses is None else self.uses
        return replace(
            base,
            key=self.key,
            method=self.base,
            flags=[*base.flags, *self.flags],
            uses=uses,
            curves=(self.curve,),
        )


def _lr(rate: float) -> list[str]:
    return ["--learning_rate", str(rate), "--lr_scheduler_type", "constant"]


LOSS = Curve("loss", "training loss")
# The fixture's held-out step labels: 539 of 877 correct, so always answering "correct" scores
# 0.615, and the best constant prediction has log-loss 0.6666, their entropy
# (tests/test_prm_learning.py).
PRM_MAJORITY_SHARE, PRM_CONSTANT_LOSS = 0.615, 0.6666
SAMPLED_REWARD = Curve(
    "reward", "mean reward of the sampled completions", why="rises from where the SFT policy starts"
)
PAIR_ACCURACY = Curve(
    "rewards/accuracies",
    "pairs ranked right (implicit reward)",
    (0.5, 1.0),
    "above 0.5: chosen beats rejected more often than chance",
)
KL = Curve("objective/kl", "KL to the reference, nats per completion")
MARGIN = Curve("rewards/margins", "reward margin, chosen - rejected", (0.0, float("inf")), "> 0")

EXPERIMENTS = (
    Experiment(
        "sft",
        "conversational_language_modeling",
        800,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses=FROM_RANDOM,
        curves=(LOSS, Curve("mean_token_accuracy", "next-token accuracy on the answer tokens")),
    ),
    Experiment(
        "distillation",
        "prompt_only",
        100,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses=TEACHER,
        curves=(LOSS,),
    ),
    # SDFT from the random policy, settings of tests/test_sdft_learning.py (the tiny recipe's):
    # its teacher is the same starting weights shown the worked answer. A random model barely
    # reads its context: the gap to that teacher closes, the solve rate is not expected to move.
    Experiment(
        "sdft",
        "privileged_context",
        40,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses=FROM_RANDOM,
        curves=(
            Curve(
                "sdft/distillation_loss",
                "divergence to the demonstration-conditioned teacher, nats per token",
            ),
            Curve("completions/mean_length", "mean length of the sampled answers, tokens"),
        ),
    ),
    Experiment(
        "gkd",
        "conversational_language_modeling",
        100,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses=TEACHER,
        curves=(LOSS,),
    ),
    # GOLD: a random student learns from a teacher of another family and tokenizer (the GPT-2
    # gold_teacher, SFT-trained on the task by the warm start below), by the ULD loss.
    Experiment(
        "gold",
        "conversational_language_modeling",
        100,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses={"--teacher_model_name_or_path": "sft_gold_teacher"},
        curves=(LOSS,),
    ),
    Experiment(
        "reward",
        "preference",
        300,
        [*_lr(3e-4), "--eval_strategy", "steps", "--eval_steps", "25"],
        uses=FROM_RANDOM,
        curves=(
            LOSS,
            Curve("eval_accuracy", "held-out pairs ranked right", (0.5, 1.0), "chance is 0.5"),
        ),
    ),
    # The PRM starts from a model that can solve the problems, as a real PRM starts from a
    # pretrained language model: sft_stepwise below. From the random classifier it learns the
    # label prior and nothing more (tests/test_prm_learning.py).
    Experiment(
        "prm",
        "stepwise_supervision",
        1200,
        [
            *_lr(1e-3),
            *["--per_device_train_batch_size", "32"],
            *["--eval_strategy", "steps", "--eval_steps", "100"],
        ],
        uses={"--model_name_or_path": "sft_stepwise"},
        curves=(
            LOSS,
            Curve(
                "eval_loss",
                "held-out step log-loss",
                (0.0, PRM_CONSTANT_LOSS),
                f"below {PRM_CONSTANT_LOSS}: better than any constant guess (the label share's"
                " entropy)",
            ),
            Curve(
                "eval_accuracy",
                "held-out steps judged right",
                (PRM_MAJORITY_SHARE, 1.0),
                f'above {PRM_MAJORITY_SHARE}: better than always answering "correct"',
            ),
        ),
    ),
    Experiment(
        "dpo",
        "preference",
        100,
        [*_lr(3e-4), "--eval_strategy", "no"],
        curves=(
            LOSS,
            PAIR_ACCURACY,
            MARGIN,
            Curve("logps/chosen", "log-probability of the chosen answer"),
        ),
    ),
    Experiment(
        "kto",
        "unpaired_preference",
        160,
        [*_lr(1e-4), "--eval_strategy", "no"],
        curves=(LOSS, Curve("rewards/chosen", "implicit reward, desirable"), Curve("kl", "KL")),
    ),
    *(  # SFT and preference in one loss, so both start from the random policy
        Experiment(
            key,
            "preference",
            150,
            [*_lr(1e-3), "--eval_strategy", "no"],
            uses=FROM_RANDOM,
            curves=(LOSS, Curve("nll_loss", "NLL of the chosen answer"), PAIR_ACCURACY),
        )
        for key in ("orpo", "cpo")
    ),
    # TPO folds SFT in too (the NLL of the gold answer), so it starts from the random policy.
    Experiment(
        "tpo",
        "triple_preference",
        150,
        [*_lr(1e-3), "--eval_strategy", "no"],
        uses=FROM_RANDOM,
        curves=(LOSS, PAIR_ACCURACY, MARGIN),
    ),
    Experiment(
        "bco",
        "unpaired_preference",
        100,
        [*_lr(1e-4), "--eval_strategy", "no"],
        curves=(LOSS, Curve("rewards/chosen", "implicit reward, desirable")),
    ),
    *(
        Experiment(
            key,
            "conversational_prompt_only",
            80,
            [*_lr(3e-4), "--per_device_train_batch_size", "16", *JUDGED_BY_REWARD_MODEL],
            uses={"--model_name_or_path": "sft", "--reward_model_path": "reward"},
            curves=(LOSS, score, KL if key != "nash_md" else Curve("loss/kl", "KL term")),
        )
        for key, score in (
            ("online_dpo", Curve("objective/scores", "reward-model score of the samples")),
            ("xpo", Curve("objective/model_scores", "reward-model score of the policy's samples")),
            (
                "nash_md",
                Curve(
                    "rewards/probabilities",
                    "P(policy's answer beats the mixture's)",
                    (0.5, 1.0),
                    "above 0.5: the policy wins against the mixture more often than not",
                ),
            ),
        )
    ),
    *(
        Experiment(
            key,
            "conversational_prompt_only",
            100,
            [
                *_lr(3e-4),
                *["--per_device_train_batch_size", "128", "--num_generations", "16"],
                *["--max_completion_length", "10"],
            ],
            curves=(
                SAMPLED_REWARD,
                Curve("entropy", "entropy of the policy, nats per token"),
                Curve("frac_reward_zero_std", "share of groups whose rewards all tie"),
            ),
        )
        for key in ("grpo", "rloo")
    ),
    # GRPO with a calculator (annotated_trl.tool_task), from the tool policy after SFT on
    # demonstrations of which half call the tool (the run "sft_tools" below). Settings from
    # tests/test_grpo_tools_learning.py.
    Experiment(
        "grpo_tools",
        "tool_calling",
        40,
        [*_lr(3e-4), "--model_name_or_path", "{tiny}/tool_policy"],
        uses={"--model_name_or_path": "sft_tools"},
        curves=(
            Curve("tools/call_frequency", "tool calls per completion", why="rises from ~0.5"),
            Curve("rewards/Calculator/mean", "share of rollouts whose tool call was right"),
            Curve("rewards/final_answer_reward/mean", "share of right final answers"),
        ),
    ),
    # A*-PO: stage 1 samples the SFT policy 8 times per prompt, once, and drops the prompts it
    # never solved (the method's default; the tiny recipe keeps them for the random policy);
    # then one answer per prompt. Settings of tests/test_a2po_learning.py: at lr 1e-4 the
    # sampled reward rose, then collapsed after 40-100 steps; at 5e-5 (A2POConfig's default) it
    # was above its start at step 100 in all eight runs measured.
    Experiment(
        "a2po",
        "conversational_prompt_only",
        100,
        [
            *_lr(5e-5),
            *["--per_device_train_batch_size", "32", "--num_value_samples", "8"],
            *["--filter_all_incorrect", "true", "--max_completion_length", "10"],
        ],
        curves=(
            SAMPLED_REWARD,
            Curve("advantage", "mean advantage r - V* of the sampled completions"),
            Curve("implicit_reward", "beta2 log(policy / reference)"),
        ),
    ),
    # SDPO from the SFT policy, settings of tests/test_sdpo_learning.py: 4 prompts x 8
    # completions, the trainer's defaults (sampled-token reverse KL to the EMA teacher). The tiny
    # model cannot use the worked answer in the teacher prompt: in our run (runs/lab-sdpo) the
    # greedy solve rate fell from ~0.3 to 0.00-0.08 in 30 steps; the method's limit, shown.
    Experiment(
        "sdpo",
        "conversational_prompt_only",
        30,
        [
            *_lr(5e-4),
            *["--per_device_train_batch_size", "32", "--num_generations", "8"],
            *["--max_completion_length", "10", "--success_reward_threshold", "1.0"],
        ],
        curves=(
            Curve("self_distillation/reward_mean", "mean reward of the sampled completions"),
            Curve(
                "self_distillation/reprompt_sample_fraction",
                "share of completions with a teacher prompt (0: nothing to learn)",
            ),
            Curve("self_distillation/distillation_loss", "sampled-token distillation loss"),
        ),
    ),
    Experiment(
        "ppo",
        "conversational_prompt_only",
        32,
        [
            *_lr(3e-4),
            *["--per_device_train_batch_size", "32", "--gradient_accumulation_steps", "2"],
            *["--num_ppo_epochs", "4", "--response_length", "10", "--temperature", "1.0"],
        ],
        prompts_per_step=64,
        # The RLHF pipeline: PPO maximises the score of the lab's reward model, not the rule.
        uses={"--model_name_or_path": "sft", "--reward_model_path": "reward"},
        curves=(
            Curve("objective/scores", "reward of the sampled responses"),
            KL,
            Curve("policy/entropy_avg", "entropy of the policy, nats per token"),
        ),
    ),
)
# Runs that only serve as another run's starting point: the SFT script on the tool policy and
# its demonstrations (data/tool_traces), a warm start for grpo_tools.
WARM_STARTS = (
    # The PRM's base: the fixture's wider random model (hidden 64) after SFT on right two-step
    # solutions, prompt-completion, so that the loss is on the steps alone (on the whole text,
    # question digits included, it learned far fewer answers). Its token accuracy on the steps
    # ends at 0.97 (45-92 s); the PRM then beats the majority class.
    Experiment(
        "sft_stepwise",
        "stepwise_solutions",
        1200,
        [
            *_lr(1e-3),
            *["--model_name_or_path", "{tiny}/teacher", "--assistant_only_loss", "false"],
            *["--eval_strategy", "no", "--per_device_train_batch_size", "32"],
        ],
        uses=FROM_RANDOM,
        curves=(LOSS,),
        method="sft",
    ),
    Experiment(
        "sft_tools",
        "tool_traces",
        500,
        [
            *_lr(3e-3),
            *["--model_name_or_path", "{tiny}/tool_policy", "--eval_strategy", "no"],
            *["--per_device_train_batch_size", "32", "--max_length", "64"],
        ],
        uses=FROM_RANDOM,
        curves=(LOSS,),
        method="sft",
    ),
    # GOLD's teacher: the fixture's GPT-2 model (its own tokenizer) after SFT's steps on the task,
    # so that the student has something to learn across tokenizers.
    Experiment(
        "sft_gold_teacher",
        "conversational_language_modeling",
        800,
        [*_lr(1e-3), "--model_name_or_path", "{tiny}/gold_teacher", "--eval_strategy", "no"],
        uses=FROM_RANDOM,
        curves=(LOSS,),
        method="sft",
    ),
)
BY_METHOD = {e.key: e for e in EXPERIMENTS}
# A GPU-only row (its `gpu_only` reason) has no lab run: the lab trains on the CPU fixture.
_MISSING = {m.key for m in CPU_METHODS} ^ set(BY_METHOD)
assert not _MISSING, f"every CPU method has a lab experiment: {_MISSING}"
ORDER = [m.key for m in CPU_METHODS]

BROKEN = (
    Broken(
        "grpo-learning-rate-too-high",
        "grpo",
        _lr(3e-3),
        SAMPLED_REWARD,
        "the sampled reward falls far below where it started and stays there",
        "each update moves the policy too far: the warm start's skill is overwritten",
        "`learning_rate`: 10x lower (here 3e-4; about 1e-6 for a 0.5B model)",
    ),
    Broken(
        "grpo-task-too-hard",
        "grpo",
        [],
        Curve("frac_reward_zero_std", "share of groups whose rewards all tie"),
        "`frac_reward_zero_std` stays near 1: most groups teach nothing",
        "the policy almost never solves a problem, so a group's rewards all tie at 0 and its "
        "advantages are 0; only the rare lucky group moves the policy",
        "start from an SFT model (as the healthy run does), or an easier task or partial rewards",
        uses={},
    ),
    Broken(
        "ppo-no-kl-penalty",
        "ppo",
        ["--kl_coef", "0"],
        KL,
        "KL to the reference keeps growing; the reward model's score rises faster than the task",
        "nothing holds the policy near the reference: it chases the reward model's blind spots",
        "`kl_coef` (here 0.05), or watch the held-out score, not only the training score",
    ),
    Broken(
        "grpo-batch-does-not-divide",
        "grpo",
        ["--num_generations", "7"],
        SAMPLED_REWARD,
        "the run stops before anything loads, with one line naming the flag",
        "a group of `num_generations` completions must fit whole in a generation batch "
        "(`per_device_train_batch_size` x processes x `steps_per_generation`)",
        "make `num_generations` divide that batch (here 128: 16 or 8)",
    ),
)
ALL = {e.key: e for e in (*EXPERIMENTS, *WARM_STARTS, *(b.experiment for b in BROKEN))}
BROKEN_BY_KEY = {b.key: b for b in BROKEN}
