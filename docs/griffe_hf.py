"""Griffe extension: make Hugging Face / TRL docstrings render cleanly with google style.

HF writes docstrings for its own doc-builder. Four differences from google style break (or
clutter) `mkdocs build --strict` with mkdocstrings; this extension fixes them at load time:

1. group headers inside "Parameters:", e.g. "> Parameters that control the model", which the
   google parser reads as a malformed parameter (a warning: the strict build fails). We drop
   them. GitHub-style callouts ("> [!NOTE]" and the "> " lines under it) become admonitions.
2. dataclass fields documented by `field(metadata={"help": "..."})` instead of a docstring.
   The help text becomes the attribute's docstring, so each field renders with its help.
3. types written in the docstring, "name (`int`, *optional*, defaults to `1`):", which would show
   as raw Markdown in the Type column. We keep "name:"; griffe takes type and default from the
   signature.
4. doc-builder links: [`~transformers.Trainer`] (a cross-reference; "~" keeps the last name)
   becomes `Trainer`; [Guide](kernels_hub) (a page of the TRL docs, which mkdocs' link check
   would reject) becomes an absolute link to huggingface.co/docs/trl; [text](#anchor) (a heading
   of the HF page that shows the docstring, absent here) becomes plain text.

1, 3 and 4 are text rewrites, `annotated_trl.hf_docstrings.clean`, shared with the knob tables.
Referenced from mkdocs.yml (mkdocstrings python handler, `extensions:`).
"""

import ast

import griffe

from annotated_trl.hf_docstrings import clean


def _field_call(node) -> ast.Call | None:
    call = getattr(node, "value", None)
    if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "field":
        return call
    return None


def field_default(node) -> str | None:
    """`default=X` of a `field(...)` as source text (`default_factory=f` reads as `f()`)."""
    for kw in getattr(_field_call(node), "keywords", []):
        if kw.arg == "default":
            return ast.unparse(kw.value)
        if kw.arg == "default_factory":
            return f"{ast.unparse(kw.value)}()"
    return None


def field_help(node) -> str | None:
    """The "help" string of `name: type = field(..., metadata={"help": ...})`, if any."""
    call = _field_call(node)
    if call is None:
        return None
    for kw in call.keywords:
        if kw.arg == "metadata" and isinstance(kw.value, ast.Dict):
            for key, value in zip(kw.value.keys, kw.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "help":
                    try:
                        return ast.literal_eval(value)
                    except ValueError:  # an f-string or a name: not worth guessing
                        return None
    return None


class HFDocstrings(griffe.Extension):
    def on_class_instance(self, *, node, cls, agent, **kwargs):
        if cls.docstring:
            cls.docstring.value = clean(cls.docstring.value)

    def on_function_instance(self, *, node, func, agent, **kwargs):
        if func.docstring:
            func.docstring.value = clean(func.docstring.value)

    def on_attribute_instance(self, *, node, attr, agent, **kwargs):
        if not isinstance(node, ast.AST):
            return
        default = field_default(node)
        if default is not None:  # show `= 1024`, not the whole `field(...)` call with its help
            attr.value = default
        if attr.docstring:
            return
        text = field_help(node)
        if text:
            attr.docstring = griffe.Docstring(
                clean(text),
                lineno=node.lineno,
                endlineno=node.end_lineno,
                parent=attr,
                parser=agent.docstring_parser,
                parser_options=agent.docstring_options,
            )
