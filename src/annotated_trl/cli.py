"""`annotated-trl`: build the offline fixtures, or check a dataset before training on it.

annotated-trl tiny DIR                          tiny models + toy data under DIR
annotated-trl validate --method sft DATASET     "OK: ..." (exit 0) or one line per problem (exit 2)
"""

import argparse
import sys


def _tiny(args: argparse.Namespace) -> int:
    from annotated_trl.fixtures import build_all

    out = build_all(args.directory, seed=args.seed)
    print(f"built tiny models and toy data in {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Print "OK: ..." and return 0, or print one "error: ..." line per problem and return 2."""
    import datasets

    from annotated_trl.data import DatasetError, validate_dataset

    datasets.disable_progress_bars()
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except Exception as err:  # missing folder, no network, not a tokenizer: all one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: --tokenizer {args.tokenizer}: could not load ({first})", file=sys.stderr)
            return 2
    try:
        report = validate_dataset(
            args.dataset, args.method, tokenizer, args.dataset_config, limit=args.max_problems
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report.problems:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        if report.more:
            print(
                f"error: ... and {report.more} more problems (show them with --max_problems)",
                file=sys.stderr,
            )
        return 2
    kind = "conversational" if report.conversational else "plain text"
    splits = ", ".join(f"{split}: {rows}" for split, rows in report.rows.items())
    template = ""
    if report.conversational:
        template = ", chat template checked" if tokenizer else ", chat template not checked"
    print(
        f"OK: {report.format} ({kind}), {sum(report.rows.values())} rows ({splits}); "
        f"fits {args.method}{template}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from annotated_trl.data import METHOD_FORMATS

    parser = argparse.ArgumentParser(prog="annotated-trl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny", help="build the tiny offline models and toy data")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_tiny)

    validate = commands.add_parser("validate", help="check a dataset fits a method")
    validate.add_argument("dataset", help="Hub name, folder, or .json/.jsonl file")
    validate.add_argument("--method", required=True, choices=sorted(METHOD_FORMATS))
    validate.add_argument("--dataset_config", default=None)
    validate.add_argument("--tokenizer", help="model or tokenizer path, to check chat templates")
    validate.add_argument(
        "--max_problems", type=int, default=20, help="problems to print before counting the rest"
    )
    validate.set_defaults(run=_validate)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
