"""Hugging Face doc-builder docstrings as Markdown that mkdocs renders without warnings.

HF writes docstrings (and `field(metadata={"help": ...})` texts) for its own doc-builder. `clean`
rewrites what breaks or clutters a strict mkdocs build:

- group headers inside "Parameters:", e.g. "> Parameters that control the model", which the
  google parser reads as a malformed parameter (a warning: the strict build fails), are dropped;
  GitHub-style callouts ("> [!NOTE]" and the "> " lines under it) become admonitions;
- types written in the docstring, "name (`int`, *optional*, defaults to `1`):", which would show
  as raw Markdown in the Type column, become "name:" (griffe takes type and default from the
  signature);
- doc-builder links: [`~transformers.Trainer`] (a cross-reference; "~" keeps the last name)
  becomes `Trainer`; [Guide](kernels_hub) (a page of the TRL docs, which mkdocs' link check
  would reject) becomes an absolute link to huggingface.co/docs/trl; [text](#anchor) (a heading
  of the HF page that shows the docstring, absent here) becomes plain text.

Used by the griffe extension (docs/griffe_hf.py) for the API pages and by the knob tables
(annotated_trl.config_tables).
"""

import re

QUOTE = re.compile(r"^([ \t]*)> ?(.*)$")
CALLOUT = re.compile(r"^\[!(\w+)\]\s*$")  # "[!NOTE]", the first line of a callout
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s")
HF_PARAM = re.compile(r"^([ \t]+\w+) \(`.*\):[ \t]*$", re.M)  # description on the next line
CROSS_REF = re.compile(r"\[`(~?)([\w.]+)`\]")  # [`~a.b.Name`] -> `Name`, [`a.Name`] -> `a.Name`
DOC_PAGE_LINK = re.compile(r"\]\(([a-z][\w-]*(?:#[\w-]+)?)\)")  # ](kernels_hub) -> TRL docs page
LOCAL_ANCHOR = re.compile(r"\[([^\]]+)\]\(#[\w-]+\)")  # [text](#heading): a heading of HF's page


def _blocks(text: str) -> str:
    """Drop lone "> header" lines; turn "> [!NOTE]" callouts into "!!! note" admonitions."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = QUOTE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, run = m.group(1), []
        while i < len(lines) and (q := QUOTE.match(lines[i])):
            run.append(q.group(2))
            i += 1
        callout = CALLOUT.match(run[0])
        if callout:
            out += [f"{indent}!!! {callout.group(1).lower()}", ""]
            for previous, line in zip([""] + run[1:], run[1:], strict=False):
                # Python-Markdown starts a list only after a blank line ("text:\n- a" is one
                # paragraph); GitHub does not need it, so HF's callouts omit it.
                if LIST_ITEM.match(line) and previous.strip() and not LIST_ITEM.match(previous):
                    out.append("")
                out.append(f"{indent}    {line}")
        elif len(run) > 1:  # an ordinary quotation: keep it
            out += [f"{indent}> {line}" for line in run]
        elif i < len(lines) and not lines[i].strip():
            i += 1  # a lone group header: drop it and the blank line after it
    return "\n".join(out)


def clean(text: str) -> str:
    """HF doc-builder docstring -> google style that mkdocstrings renders without warnings."""
    text = _blocks(text)
    text = HF_PARAM.sub(r"\1:", text)
    text = CROSS_REF.sub(lambda m: f"`{m[2].split('.')[-1] if m[1] else m[2]}`", text)
    text = LOCAL_ANCHOR.sub(r"\1", text)  # that heading does not exist here: keep the words
    return DOC_PAGE_LINK.sub(r"](https://huggingface.co/docs/trl/\1)", text)
