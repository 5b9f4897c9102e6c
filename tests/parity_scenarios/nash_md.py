"""Nash-MD parity scenario: trl 1.12.0's NashMDTrainer (`--impl original`) or ours (`ours`).

    python tests/parity_scenarios/nash_md.py --impl ours --out ours.json --tiny tiny \
        --mixture_coef 0.5 0.25 --epochs 2
"""

from online_pair import parse_args, run

args = parse_args([("--mixture_coef", {"type": float, "nargs": "+", "default": [0.5]})])
if args.impl == "original":
    from trl.experimental.nash_md import NashMDConfig, NashMDTrainer
else:
    from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer

run(args, NashMDConfig, NashMDTrainer, mixture_coef=args.mixture_coef)
