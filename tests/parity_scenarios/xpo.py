"""XPO parity scenario: trl 1.12.0's XPOTrainer (`--impl original`) or ours (`ours`).

python tests/parity_scenarios/xpo.py --impl ours --out ours.json --tiny tiny --loss_type ipo
"""

from online_pair import parse_args, run

args = parse_args(
    [
        ("--loss_type", {"choices": ("sigmoid", "ipo"), "default": "sigmoid"}),
        ("--alpha", {"type": float, "nargs": "+", "default": [1e-5]}),
    ]
)
if args.impl == "original":
    from trl.experimental.xpo import XPOConfig, XPOTrainer
else:
    from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer

run(args, XPOConfig, XPOTrainer, loss_type=args.loss_type, alpha=args.alpha)
