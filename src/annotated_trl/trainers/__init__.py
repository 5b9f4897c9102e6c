"""Our implementations of the trainers TRL removed: PPO (1.13.0); BCO, Nash-MD, XPO, PRM (1.14.0).

One module per method, each with its config dataclass. Class and config names, and config field
names, are trl 1.12.0's, so migrating is one import line:

    from trl.experimental.ppo import PPOConfig, PPOTrainer          # trl <= 1.12
    from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer    # here, on TRL 1.16

tests/test_<key>_parity.py runs each against trl 1.12.0's original, step by step.
"""
