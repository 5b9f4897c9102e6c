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
