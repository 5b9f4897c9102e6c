"""The methods this site teaches: one row each, in the order the site lists them.

Everything that lists methods reads this table (the site's navigation, STATUS.md); a new method is
a row here plus its three content files.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str  # file stem: annotated_trainers/<key>.md, annotated_examples/<key>_training.py
    name: str  # short name on the site
    trainer: str  # trainer class name
    family: str  # section of the site's navigation
    port: bool = False  # TRL removed it; annotated_trl.trainers implements it, equal to trl 1.12


SUPERVISED = "Supervised and distillation"
REWARD = "Reward models"
OFFLINE = "Offline preference"
ONLINE = "Online preference"
RL = "Reinforcement learning"

METHODS = (
    Method("sft", "SFT", "SFTTrainer", SUPERVISED),
    Method("distillation", "Distillation", "DistillationTrainer", SUPERVISED),
    Method("gkd", "GKD", "GKDTrainer", SUPERVISED),
    Method("reward", "Reward modelling", "RewardTrainer", REWARD),
    Method("prm", "PRM", "PRMTrainer", REWARD, port=True),
    Method("dpo", "DPO", "DPOTrainer", OFFLINE),
    Method("kto", "KTO", "KTOTrainer", OFFLINE),
    Method("orpo", "ORPO", "ORPOTrainer", OFFLINE),
    Method("cpo", "CPO", "CPOTrainer", OFFLINE),
    Method("bco", "BCO", "BCOTrainer", OFFLINE, port=True),
    Method("online_dpo", "Online DPO", "OnlineDPOTrainer", ONLINE),
    Method("xpo", "XPO", "XPOTrainer", ONLINE, port=True),
    Method("nash_md", "Nash-MD", "NashMDTrainer", ONLINE, port=True),
    Method("grpo", "GRPO", "GRPOTrainer", RL),
    Method("rloo", "RLOO", "RLOOTrainer", RL),
    Method("ppo", "PPO", "PPOTrainer", RL, port=True),
)
BY_KEY = {m.key: m for m in METHODS}

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
        "samples: a group per prompt (PPO: one)",
        "rewards",
        "advantages: group-relative, leave-one-out, or a value model's",
        "clipped policy-gradient loss (+ KL to the reference)",
    ),
}
assert set(FLOWS) == {m.family for m in METHODS}
