"""What docs/security.md promises, checked on the code itself.

- No `trust_remote_code=True` by default: not in a call, a default, a config field or a recipe,
  and every config class the scripts parse defaults it to False.
- Nothing runs text as code: no `eval`/`exec`/`compile`/`__import__`, no pickle or unsafe YAML,
  no shell, in the scripts, the package, the tools or the docs hooks.
- Reward functions come only from dotted import paths the user passes; anything else is refused
  before anything is imported, and the default is chosen by column *name*, never by a value.
- The site asks nothing of third parties: every script and stylesheet it names is local (the
  browser tests watch a real Chromium's requests; this checks the configuration that causes them).
"""

import ast
import dataclasses
import importlib

import pytest
import yaml
from support.processes import REPO

from annotated_trl.rewards import RewardError, default_reward_func, import_reward_func

PYTHON = sorted(
    [
        *REPO.glob("annotated_examples/*.py"),
        *REPO.glob("src/annotated_trl/**/*.py"),
        *REPO.glob("tools/*.py"),
        *REPO.glob("docs/**/*.py"),
    ]
)
RECIPES = sorted(REPO.glob("annotated_examples/recipes/*.yaml"))
# Builtins that turn a string into running code, and library calls that do the same with bytes.
CODE_FROM_TEXT = {"eval", "exec", "compile", "__import__"}
UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("marshal", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("os", "system"),
    ("os", "popen"),
}


def _ids(paths):
    return [p.relative_to(REPO).as_posix() for p in paths]


def _is_true(node) -> bool:
    """`True`, or `field(default=True, ...)`."""
    if isinstance(node, ast.Constant):
        return node.value is True
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "field":
        return any(k.arg == "default" and _is_true(k.value) for k in node.keywords)
    return False


def _trust_remote_code_true(tree) -> list[int]:
    """Line numbers where trust_remote_code is set or defaulted to True."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            lines += [node.value.lineno] if _is_true(node.value) else []
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {getattr(t, "id", getattr(t, "attr", None)) for t in targets}
            if "trust_remote_code" in names and node.value is not None and _is_true(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.arguments):
            named = node.posonlyargs + node.args
            pairs = list(zip(named[len(named) - len(node.defaults) :], node.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d]
            lines += [d.lineno for a, d in pairs if a.arg == "trust_remote_code" and _is_true(d)]
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                    lines += [value.lineno] if _is_true(value) else []
    return lines


def _code_from_text(tree) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in CODE_FROM_TEXT:
            found.append(f"line {node.lineno}: {func.id}()")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and (func.value.id, func.attr) in UNSAFE_CALLS
        ):
            found.append(f"line {node.lineno}: {func.value.id}.{func.attr}()")
        if any(k.arg == "shell" and _is_true(k.value) for k in node.keywords):
            found.append(f"line {node.lineno}: shell=True")
    return found


def test_security_checks_see_what_they_look_for():
    """The checkers find each pattern they exist to refuse."""
    bad = ast.parse(
        "f(trust_remote_code=True)\n"
        "def g(x, trust_remote_code=True): ...\n"
        "class C:\n    trust_remote_code: bool = field(default=True)\n"
        "kwargs = {'trust_remote_code': True}\n"
        "eval(s)\nexec(s)\npickle.loads(b)\nyaml.load(s)\nsubprocess.run(s, shell=True)\n"
    )
    assert sorted(_trust_remote_code_true(bad)) == [1, 2, 4, 5]
    assert len(_code_from_text(bad)) == 5
    good = ast.parse(
        "f(trust_remote_code=args.trust_remote_code)\nmodel.eval()\nast.literal_eval(s)\n"
        "class C:\n    trust_remote_code: bool = field(default=False)\n"
    )
    assert _trust_remote_code_true(good) == [] and _code_from_text(good) == []


@pytest.mark.parametrize("path", PYTHON, ids=_ids(PYTHON))
def test_security_no_remote_code_and_no_code_from_text(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert _trust_remote_code_true(tree) == [], f"{path}: trust_remote_code=True"
    assert _code_from_text(tree) == [], f"{path}: {_code_from_text(tree)}"


def test_security_no_recipe_trusts_remote_code():
    assert RECIPES
    for recipe in RECIPES:
        settings = yaml.safe_load(recipe.read_text()) or {}
        assert settings.get("trust_remote_code") in (None, False), recipe


def _config_classes():
    """Every `...Config` class the example scripts import from TRL or our package."""
    classes = set()
    for script in REPO.glob("annotated_examples/*_training.py"):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in (
                "trl",
                "annotated_trl",
            ):
                classes |= {(node.module, a.name) for a in node.names if a.name.endswith("Config")}
    return sorted(classes)


def test_security_every_config_defaults_to_no_remote_code():
    checked = 0
    for module, name in _config_classes():
        cls = getattr(importlib.import_module(module), name)
        for f in dataclasses.fields(cls):
            if f.name == "trust_remote_code":
                assert f.default is False, f"{module}.{name}.trust_remote_code defaults to True"
                checked += 1
    assert checked >= 2  # ModelConfig and TrainingArguments (every trainer config) carry it


@pytest.mark.parametrize(
    "text",
    [
        "arithmetic_reward",  # a bare name
        "lambda completions, **kw: [1.0] * len(completions)",
        "__import__('pathlib').Path('PWNED').touch()",
        "os.system('touch PWNED')",
        "",
    ],
)
def test_security_reward_loader_refuses_anything_but_a_dotted_path(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardError):
        import_reward_func(text)
    assert not (tmp_path / "PWNED").exists()


def test_security_default_reward_is_chosen_by_column_name_only():
    """A dataset cannot name the code that scores it: values are never read."""
    assert default_reward_func(["prompt", "answer"]) == "annotated_trl.toy_task.arithmetic_reward"
    with pytest.raises(RewardError, match="pass --reward_funcs"):
        default_reward_func(["prompt", "reward_funcs", "code"])


def test_security_site_names_only_local_assets():
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # no tags run
    assets = config.get("extra_javascript", []) + config.get("extra_css", [])
    assets += config.get("extra", {}).get("polyfills", [])
    assert assets and not [a for a in assets if "//" in a], assets
    assert config["theme"]["font"] == "false"  # no Google Fonts
    assert "privacy" not in str(config.get("plugins"))  # it would fetch at build time
    overrides = REPO / "docs" / "overrides"
    for template in overrides.rglob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert 'src="http' not in text and 'href="http' not in text, template
