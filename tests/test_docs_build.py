"""The site builds strictly, every link and anchor resolves, nothing loads from a third party,
every page is in the nav and names the TRL version, and every TRL symbol a page cites is real.

One `mkdocs build --strict` per session (fixture `built_site` in docs_support.py).
"""

import ast
import functools
import html
import inspect
import logging
import re
import subprocess
import sys
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import griffe
import pytest
from support.docs import (
    REPO,
    content_files,
    docs_pages,
    html_path,
    import_object,
    imported_source,
    page_uri,
    site_pages,
)
from test_site_pages import METHODS as STATUS_METHODS

from annotated_trl.script_sections import split_script
from annotated_trl.source_excerpts import (
    BODY_RE,
    SourceError,
    expand_directives,
    find_directives,
    resolve,
)

pytestmark = pytest.mark.docs

PAGES = site_pages()
# Tags whose URL the browser loads by itself (as opposed to a link the reader may follow).
LOADED = {"script", "img", "source", "iframe", "audio", "video", "embed", "track"}
LOADED_LINK_RELS = {"stylesheet", "icon", "preload", "prefetch", "modulepreload", "manifest"}


class PageScan(HTMLParser):
    """Collects a page's anchor targets, the URLs it references, and its nav links."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, rel, url)
        self.nav_links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.urls.append((tag, a.get("rel") or "", a[key]))
        if tag == "a" and "md-nav__link" in (a.get("class") or "").split():
            self.nav_links.append(a.get("href") or "")


def scan(path: Path) -> PageScan:
    p = PageScan()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@functools.cache
def anchors(path: Path) -> set[str]:
    return scan(path).ids if path.suffix == ".html" else set()


def test_build_succeeds(built_site):
    assert (built_site / "index.html").is_file()
    assert (built_site / "search" / "search_index.json").is_file()


def test_every_page_is_built_and_nothing_else(built_site):
    built = {p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html")}
    assert built - {"404.html"} == {html_path(uri) for uri in PAGES}


@pytest.mark.parametrize("path", content_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_content_file_is_a_page(built_site, path):
    assert (built_site / html_path(page_uri(path))).is_file()


@pytest.mark.parametrize("uri", PAGES)
def test_links_and_anchors_resolve(built_site, uri):
    page = built_site / html_path(uri)
    base = "http://site/" + html_path(uri)  # any host: only the path matters
    problems = []
    for tag, rel, url in scan(page).urls:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") or url.startswith("//"):
            loaded = tag in LOADED or (tag == "link" and set(rel.split()) & LOADED_LINK_RELS)
            if loaded:
                problems.append(f"third-party load: <{tag}> {url}")
            continue  # a link to another website: not ours to check
        if parts.scheme in ("mailto", "data", "javascript"):
            continue
        target = urlsplit(urljoin(base, url))
        target_file = built_site / unquote(target.path).lstrip("/")
        if target_file.is_dir():
            target_file = target_file / "index.html"
        if not target_file.is_file():
            problems.append(f"broken link: {url}")
        elif target.fragment and unquote(target.fragment) not in anchors(target_file):
            problems.append(f"missing anchor: {url}")
    assert not problems, "\n".join(problems)


def test_stylesheets_load_nothing_external(built_site):
    """Fonts and @imports in CSS count as third-party loads too (e.g. Google Fonts)."""
    bad = [
        f"{css.relative_to(built_site)}: {m}"
        for css in built_site.rglob("*.css")
        for m in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", css.read_text())
    ]
    assert not bad, "\n".join(bad)


def test_no_page_is_orphaned(built_site):
    """Every page is reachable from the navigation (Material renders the whole nav on each page)."""
    nav = scan(built_site / "index.html").nav_links
    reachable = {urlsplit(urljoin("http://site/index.html", href)).path.lstrip("/") for href in nav}
    orphans = {html_path(uri) for uri in PAGES} - reachable
    assert not orphans, f"pages missing from the nav: {sorted(orphans)}"


def nav_paths(built_site: Path) -> set[str]:
    nav = scan(built_site / "index.html").nav_links
    return {urlsplit(urljoin("http://site/index.html", href)).path.lstrip("/") for href in nav}


@pytest.mark.parametrize("key", list(STATUS_METHODS))
def test_method_pages_are_in_the_nav(built_site, key):
    """Each method listed in STATUS.md has its walkthrough and reference guide in the nav."""
    nav = nav_paths(built_site)
    assert f"annotated_trainers/{key}.html" in nav
    assert f"reference_guides/{key}.html" in nav


@pytest.mark.parametrize("path", docs_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_cross_cutting_page_is_in_the_nav_with_its_title(built_site, path):
    uri = html_path(path.relative_to(REPO / "docs").as_posix())
    assert uri in nav_paths(built_site)
    title = re.search(r"^# (.+)$", path.read_text(encoding="utf-8"), re.M).group(1)
    headings = re.findall(r"<h1[^>]*>(.*?)</h1>", (built_site / uri).read_text(), re.S)
    assert len(headings) == 1
    text = re.sub(r'<a class="headerlink".*?</a>|<[^>]+>', "", headings[0])
    assert html.unescape(text).strip() == title


@pytest.mark.parametrize("uri", PAGES)
def test_page_names_documented_versions(built_site, uri):
    text = (built_site / html_path(uri)).read_text(encoding="utf-8")
    expected = f"Documents TRL {version('trl')} · transformers {version('transformers')}"
    assert expected in text


FILE_NAME_LINK = re.compile(
    r'<a href="[^"#]*\.html(?:#[^"]*)?"[^>]*>(?:<code>)?([\w./-]+\.(?:md|py))(?:</code>)?</a>'
)


@pytest.mark.parametrize("uri", PAGES)
def test_links_to_pages_show_titles_not_file_names(built_site, uri):
    """ "the [GRPO walkthrough](...)", not "[annotated_trainers/grpo.md](...)"."""
    text = (built_site / html_path(uri)).read_text(encoding="utf-8")
    assert not FILE_NAME_LINK.findall(text)


# --- Cited TRL symbols -------------------------------------------------------------------------

MARKDOWN = docs_pages() + [p for p in content_files() if p.suffix == ".md"]
MKDOCSTRINGS_RE = re.compile(r"^[ \t]*::: +([\w.]+)", re.M)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_cited_trl_symbols_resolve(path):
    text = path.read_text(encoding="utf-8")
    problems = []
    for directive in find_directives(text):
        try:
            resolve(directive)
        except SourceError as e:
            problems.append(f"[[trl-source: {directive}]]: {e}")
            continue
        # The site reads the source without importing it: it must find what Python finds.
        symbol = BODY_RE.match(directive)["symbol"]
        read = resolve(symbol)
        file, start, end = imported_source(symbol)
        if not (
            file.as_posix().endswith("/" + read.path) and (read.start, read.end) == (start, end)
        ):
            problems.append(f"{symbol}: read {read.title}, imported {file} L{start}-{end}")
    for identifier in MKDOCSTRINGS_RE.findall(text):
        try:
            import_object(identifier)
        except (ImportError, AttributeError, KeyError) as e:
            problems.append(f"::: {identifier}: {e}")
    assert not problems, "\n".join(problems)


INLINE_HIGHLIGHT_RE = re.compile(r"(?<!`)`(?::{3,}|#!)[^`\n]*`")


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_inline_code_loses_its_start(path):
    """pymdownx.inlinehilite reads `:::lang code` and `#!lang code` as "highlight code as
    lang", so `::: trl.GRPOConfig` shows as `trl.GRPOConfig`: write <code>::: ...</code>."""
    assert not INLINE_HIGHLIGHT_RE.findall(path.read_text(encoding="utf-8"))


def test_trl_source_directive_forms():
    nested = resolve("trl.trainer.sft_trainer.SFTTrainer._prepare_dataset > tokenize_fn")
    assert nested.code.startswith("def tokenize_fn(")
    assert nested.path == "trl/trainer/sft_trainer.py"
    assert nested.package_version == f"trl {version('trl')}"
    # The line numbers are the installed file's.
    file = Path(inspect.getsourcefile(import_object("trl.trainer.sft_trainer")))
    assert file.read_text().splitlines()[nested.start - 1].strip().startswith("def tokenize_fn(")

    marked = resolve(
        'trl.trainer.sft_trainer.SFTTrainer._prepare_dataset lines "# Pack" .. "pack_dataset("'
    )
    first, *_, last = marked.code.splitlines()
    assert first == "# Pack" and "pack_dataset(" in last  # dedented, both ends included
    assert marked.end - marked.start + 1 == len(marked.code.splitlines())

    exclusive = resolve(
        'trl.trainer.sft_trainer.SFTTrainer._prepare_dataset lines "# Pack" ..< "pack_dataset("'
    )
    assert exclusive.start == marked.start and exclusive.end < marked.end
    assert "pack_dataset(" not in exclusive.code and exclusive.code.startswith("# Pack")

    whole = resolve("trl.trainer.sft_trainer.SFTTrainer.compute_loss")
    expected = f"trl/trainer/sft_trainer.py · L{whole.start}–{whole.end} · trl {version('trl')}"
    assert whole.title == expected
    assert f'linenums="{whole.start}"' in whole.markdown()


@pytest.mark.parametrize(
    "directive",
    [
        "trl.trainer.sft_trainer.SFTTrainer.no_such_method",
        "trl.trainer.sft_trainer.SFTTrainer.compute_loss > no_such_def",
        'trl.trainer.sft_trainer.SFTTrainer.compute_loss lines "no such marker" .. "x"',
        "not_a_package.thing",
        "torch._C._get_tracing_state",  # a compiled module: no source to show
        "trl.trainer.grpo_trainer.logger",  # an assignment: no source of its own
    ],
)
def test_trl_source_unresolvable_is_an_error(directive):
    with pytest.raises(SourceError):
        resolve(directive)


READ_EVERY_PAGE = """
import sys
from pathlib import Path

from annotated_trl.config_tables import expand_config_tables
from annotated_trl.source_excerpts import expand_directives

problems = []
for path in sys.argv[1:]:
    text = expand_directives(Path(path).read_text(encoding="utf-8"), path, problems.append)
    expand_config_tables(text, path, problems.append)
print(problems)
print(sorted(m for m in ("datasets", "torch", "transformers", "trl") if m in sys.modules))
"""


def test_the_pages_excerpts_and_tables_import_neither_trl_nor_torch():
    """Every page's excerpts and knob tables, made in a fresh interpreter, as the build makes
    them: reading the files (source_lookup) must not fall back on importing, which cost 7 s of
    the 15 s build."""
    pages = [str(p) for p in MARKDOWN] + [str(p) for p in content_files() if p.suffix == ".py"]
    done = subprocess.run(
        [sys.executable, "-c", READ_EVERY_PAGE, *pages],
        capture_output=True,
        text=True,
        check=True,
    )
    problems, imported = done.stdout.splitlines()[-2:]
    assert (problems, imported) == ("[]", "[]")


def test_unresolvable_directive_warns_with_page_and_directive():
    """A warning (the hook passes mkdocs' logger) is what makes `mkdocs build --strict` fail; it
    must say where and what."""
    markdown = "Text\n\n    [[trl-source: trl.data_utils.no_such_function]]\n"
    warnings = []
    out = expand_directives(markdown, "annotated_trainers/sft.md", warnings.append)
    (message,) = warnings
    assert "annotated_trainers/sft.md" in message
    assert "[[trl-source: trl.data_utils.no_such_function]]" in message
    assert "    !!! failure" in out  # `mkdocs serve` shows the problem in place


# --- Griffe extension: HF config classes render cleanly with google docstrings -----------------

CONFIGS = ["trl.SFTConfig", "trl.DPOConfig", "trl.GRPOConfig", "trl.ModelConfig"]


@pytest.fixture(scope="module")
def trl_api():
    return griffe.load(
        "trl",
        extensions=griffe.load_extensions(str(REPO / "docs" / "griffe_hf.py")),
        docstring_parser="google",
        resolve_aliases=False,
    )


def test_callout_list_stays_a_list(trl_api):
    """GRPOConfig's "> [!NOTE]" callout ends in a list right under a sentence: it must render as
    a list (a blank line before it), not one run-on paragraph."""
    note = trl_api["GRPOConfig"].docstring.value.split("!!! note", 1)[1]
    assert re.search(r":\n\s*\n\s+- `logging_steps`", note), note[:300]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_class_docstrings_parse_cleanly(trl_api, name, caplog):
    cls = trl_api[name.removeprefix("trl.")]
    with caplog.at_level(logging.WARNING, logger="griffe"):
        sections = cls.docstring.parse("google")
        for member in cls.members.values():
            if member.docstring:
                member.docstring.parse("google")
    assert not caplog.records, "\n".join(r.getMessage() for r in caplog.records)
    assert "> Parameters" not in cls.docstring.value
    assert any(s.kind.value == "parameters" for s in sections)
    # Every field(metadata={"help": ...}) became the attribute's docstring.
    tree = ast.parse(Path(cls.filepath).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.name)
    helped = [
        s.target.id
        for s in node.body
        if isinstance(s, ast.AnnAssign) and "metadata" in ast.unparse(s.value or ast.Constant(0))
    ]
    assert helped, "expected HF-style fields with metadata help"
    assert all(cls.members[f].docstring for f in helped)


@pytest.mark.parametrize(
    "name",
    [
        "trl.trainer.sft_trainer.DataCollatorForLanguageModeling.torch_call",
        "trl.data_utils.pack_dataset",
    ],
)
def test_function_docstrings_parse_cleanly(trl_api, name, caplog):
    """Functions cited with `::: ...` and `show_source: true` (torch_call has no docstring)."""
    obj = trl_api[name.removeprefix("trl.")]
    with caplog.at_level(logging.WARNING, logger="griffe"):
        if obj.docstring:
            obj.docstring.parse("google")
    assert not caplog.records, "\n".join(r.getMessage() for r in caplog.records)
    assert obj.source.lstrip().startswith(("def ", "@"))


# --- Script pages: the splitter, and the built page of every annotated example ----------------

SAMPLE = REPO / "tests" / "fixtures_docs" / "sample_training.py"


def test_script_splitter_on_sample():
    docstring, sections = split_script(SAMPLE.read_text())
    assert docstring.splitlines()[0] == "Sample training script"
    code = [s.code for s in sections]
    # Shebang and PEP 723 metadata stay code, with no prose beside them.
    assert sections[0].doc == "" and code[0].startswith("#!/usr/bin/env python\n# /// script")
    assert sections[0].first_line == 1
    # A comment run with Markdown and display math is the left column of the code below it.
    step = next(s for s in sections if s.doc.startswith("## Step one"))
    assert "$$\n\\mathcal{L}" in step.doc and step.code.startswith("def loss(p):")
    # Indented and trailing comments, and "#" inside strings, stay in the code.
    assert "    # an indented comment stays in the code" in step.code
    assert "# so does a trailing one" in step.code
    assert "# not a comment: this line is inside a string" in step.code
    # A bare "#" and a blank line between comment runs are paragraph breaks of one block.
    last = sections[-1]
    assert last.doc.split("\n\n") == [
        'A bare "#" above is a paragraph break.',
        "Two runs separated by a blank line are one block.",
    ]
    # first_line is the real line number of each block.
    lines = SAMPLE.read_text().splitlines()
    for s in sections:
        assert lines[s.first_line - 1] == s.code.splitlines()[0]


SCRIPTS = [p for p in content_files() if p.suffix == ".py"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_script_page_is_two_columns(built_site, script):
    page = (built_site / html_path(page_uri(script))).read_text(encoding="utf-8")
    assert page.count('class="docco-section"') == len(split_script(script.read_text())[1])
    assert page.count('class="docco-doc"') == page.count('class="docco-code"')
    # The raw script is published for download, byte for byte...
    raw = built_site / script.relative_to(REPO)
    assert raw.read_bytes() == script.read_bytes()
    assert f'href="{script.name}"' in page
    # ...and the copy button carries all of it.
    copied = re.search(r'data-clipboard-text="([^"]*)"', page).group(1)
    assert html.unescape(copied) == script.read_text()


def test_directive_keeps_the_text_after_it_outside_the_code():
    """The blank line after a directive survives, so the notes after it stay a Markdown list."""
    markdown = "[[trl-source: trl.data_utils.is_conversational]]\n\n1. A note.\n"
    warnings = []
    out = expand_directives(markdown, "annotated_trainers/sft.md", warnings.append)
    assert not warnings
    assert out.endswith("```\n\n1. A note.\n")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_fields_show_their_real_defaults(trl_api, name):
    """A field renders as `name: type = <default>`, and that default is the installed class's."""
    import dataclasses

    cls = import_object(name)
    documented = trl_api[name.removeprefix("trl.")]
    checked = 0
    for field in dataclasses.fields(cls):
        attribute = documented.all_members.get(field.name)
        if attribute is None or field.default is dataclasses.MISSING:
            continue
        if (
            attribute.parent.path != documented.path
        ):  # inherited from transformers: not ours to parse
            continue
        assert str(attribute.value) == repr(field.default), field.name
        checked += 1
    assert checked > 5


def test_decorated_function_is_titled_with_its_own_file():
    """`GenericForSequenceClassification.forward` is wrapped by a decorator in utils/generic."""
    excerpt = resolve("transformers.modeling_layers.GenericForSequenceClassification.forward")
    assert excerpt.path == "transformers/modeling_layers.py"
    assert excerpt.code.lstrip().startswith(("def forward", "@"))
