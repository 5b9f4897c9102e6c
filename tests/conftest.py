"""Shared test set-up: offline environment and one tiny fixture per session."""

import gc
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

# Collection imports torch, transformers and TRL: about 440,000 long-lived objects (counted),
# which the cyclic garbage collector would traverse again and again while they arrive (a quarter
# of the import time, measured: `from trl import SFTTrainer` 5.3-6.8 s with it, 4.1-4.4 s
# without).
# It is switched back on, with that heap frozen, in pytest_collection_finish below.
gc.disable()

# The test helpers (tests/support/) assert too: have pytest rewrite their asserts as it does the
# test files', so a failure shows the values compared. This must run before anything imports them.
pytest.register_assert_rewrite("support")

import torch  # noqa: E402
from support.processes import OFFLINE_ENV  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

# One torch thread for the tests' own training. The tiny models gain nothing from a second one,
# and the second core is busy: with another pytest-xdist worker, or with the scripts the tests
# run in processes of their own. Two threads each then oversubscribe the two cores, and sampling
# loops of small matrices slow down several times over (a GRPO learning run: 10-20 s quiet, up
# to 4.5 min beside other jobs).
torch.set_num_threads(1)

# Nothing may come from the Hub at test time; the scripts must behave the same in-process.
os.environ.update(OFFLINE_ENV)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """The offline fixture (tiny models + toy data), built once per test session."""
    from annotated_trl.fixtures import build_all

    root = build_all(tmp_path_factory.mktemp("tiny"))
    names = ("policy", "teacher", "gold_teacher", "reward", "token_classifier", "data")
    return SimpleNamespace(root=root, **{name: root / name for name in names})


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> SimpleNamespace:
    """The tiny vision-language model and the colour task's data (annotated_trl.vision_task),
    built once per session, only by the tests that ask for it."""
    from annotated_trl.vision_task import build_vlm_fixture

    root = build_vlm_fixture(tmp_path_factory.mktemp("tiny-vlm"))
    return SimpleNamespace(root=root, policy=root / "policy", data=root / "data")


@pytest.fixture
def policy_without_chat_template(tiny, tmp_path):
    """The tiny policy with its chat template removed: conversational data must be refused."""
    model_dir = tmp_path / "no-template"
    shutil.copytree(tiny.policy, model_dir)
    (model_dir / "chat_template.jinja").unlink()
    return model_dir


@pytest.fixture(scope="session")
def foreign_teachers(tiny, tmp_path_factory) -> dict[str, Path]:
    """Teachers that cannot teach the tiny student: another tokenizer, or a wider output layer."""
    from transformers import AutoConfig, Qwen2ForCausalLM

    from annotated_trl.fixtures import build_tokenizer

    root = tmp_path_factory.mktemp("foreign-teachers")
    other = build_tokenizer(
        ["Ein ganz anderer Text mit anderen Wörtern, 0 1 2 3 4 5 6 7 8 9."] * 40
    )
    wide = AutoTokenizer.from_pretrained(tiny.teacher)
    teachers = {}
    for name, tokenizer in (("other-tokenizer", other), ("wider-output", wide)):
        config = AutoConfig.from_pretrained(tiny.teacher)
        config.vocab_size = len(tokenizer) + (64 if name == "wider-output" else 0)
        teachers[name] = root / name
        Qwen2ForCausalLM(config).save_pretrained(teachers[name])
        tokenizer.save_pretrained(teachers[name])
    return teachers


from support.docs import built_site  # noqa: E402,F401  (docs and browser tests)
from support.measured import measured  # noqa: E402,F401  (tests that assert on a measured number)
from support.schedule import longest_files_first  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--seed-offset",
        type=int,
        default=0,
        help="add this to every learning test's seeds, to measure how its numbers spread "
        "(python -m benchmarks.cross_cpu --seed-offsets); the suite runs offset 0",
    )


@pytest.fixture(scope="session")
def seed_offset(request) -> int:
    return request.config.getoption("--seed-offset")


def pytest_collection_modifyitems(config, items):
    longest_files_first(items, config.rootpath)


def pytest_collection_finish(session):
    """Move everything alive after collection (imported modules, collected tests) out of the
    garbage collector's reach, then switch it back on: every `Trainer.train` ends in a full
    `gc.collect()` (accelerate's `free_memory`), which would otherwise walk this heap each time
    (measured: 0.27 s in a process that has imported TRL, 0.0 s once frozen)."""
    gc.collect()
    gc.freeze()
    gc.enable()
