"""The image columns of vision-language datasets: what the checker asks of them, and how a local
file's image paths become images.

TRL's vision-language paths (SFT, DPO, GRPO with an `AutoProcessor`) read a row's pictures from
an `images` column (a list) or an `image` column (one picture) and hand them to the processor
together with the prompt. In a Hub dataset those columns hold decoded images (the `datasets.Image`
feature); in a local `.json`/`.jsonl` file they hold paths, relative to the file's folder (or
absolute), which `load_local_images` turns into images after the rows pass the checks.

What TRL needs, and so what is checked, one line per problem:

- every path names a file that exists and that PIL can read as an image;
- one image placeholder per image. Where the prompt's (or the messages') contents are strings,
  TRL puts one `{"type": "image"}` part per image before the first user message's text
  (`trl.data_utils.prepare_multimodal_messages`); where they are lists of parts, the
  `{"type": "image"}` parts must be as many as the images, else TRL stops with "Number of images
  provided (N) does not match number of image placeholders (M)" when the batch is collated. In
  plain-text rows the placeholder is the processor's image token (e.g. `<image>`), counted when
  the processor is known;
- images belong to the prompt: TRL gives none to a completion, so an image part in `completion`,
  `chosen` or `rejected` has no picture to take.
"""

import io
import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

IMAGE_COLUMNS = ("images", "image")
# Where a row's images go (the prompt side) and where they cannot (the answers).
PROMPT_COLUMNS = ("messages", "prompt", "text")
ANSWER_COLUMNS = ("completion", "chosen", "rejected", "reference")
PART = '{"type": "text", "text": "..."} or {"type": "image"}'
IMAGE = "an image (a path to an image file, relative to the data file's folder)"


def has_images(row: dict) -> bool:
    return any(column in row for column in IMAGE_COLUMNS)


def is_processor(processing_class) -> bool:
    """A vision-language model's processor (it has an image processor), not a bare tokenizer."""
    return getattr(processing_class, "image_processor", None) is not None


def check_parts(parts: list, where: str) -> str | None:
    """The problem with one message's list of content parts, or None."""
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
            found = json.dumps(part, default=str)[:60]
            return f"{where} part {j} is {found}; expected {PART}"
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return f'{where} part {j} is a text part without a string "text"; expected {PART}'
    return None


def _describe(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    kind |= {list: "a list", dict: "an object", type(None): "null"}
    return kind.get(type(value), type(value).__name__)


def resolve(path: str, root: Path | None) -> Path:
    """A row's image path, relative to the data file's folder `root` (None: the current one)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() or root is None else root / candidate


def _unreadable(opener, name: str) -> str | None:
    try:
        with opener() as image:
            image.verify()  # reads the file's structure (PNG checksums), without decoding it all
    except Exception as err:  # PIL raises many kinds: unidentified, truncated, bad checksum
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = reason.replace(repr(name), "").replace(name, "").strip() if name else reason
        return f"PIL cannot read it as an image ({reason[:100]}); expected a PNG, JPEG or WebP file"
    return None


def image_problem(item, root: Path | None) -> str | None:
    """What is wrong with one image of a row, or None."""
    if isinstance(item, Image.Image):
        return None
    if isinstance(item, dict) and ("bytes" in item or "path" in item):  # datasets' stored form
        if item.get("bytes"):
            problem = _unreadable(lambda: Image.open(io.BytesIO(item["bytes"])), "")
            return f"holds bytes, but {problem}" if problem else None
        item = item.get("path")
    if not isinstance(item, str) or not item:
        return f"is {_describe(item)}; expected {IMAGE}"
    if item.startswith(("http://", "https://")):
        return None  # fetched when training; nothing local to check
    path = resolve(item, root)
    if not path.is_file():
        return f'is "{item}", which does not exist ({path}); expected {IMAGE}'
    problem = _unreadable(lambda: Image.open(path), str(path))
    return f'is "{item}", but {problem}' if problem else None


def _placeholders(messages: list) -> int | None:
    """Image parts still waiting for a picture; None when every content is a string (TRL then
    inserts one part per image itself)."""
    if all(isinstance(m.get("content"), str) for m in messages):
        return None
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list) and m.get("role") != "tool"
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image" and "image" not in part
    )


def _has_image_part(value) -> bool:
    return isinstance(value, list) and any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") == "image" for p in m["content"])
        for m in value
    )


def row_problems(row: dict, root: Path | None, image_token: str | None = None) -> Iterator[str]:
    """Every problem with a row's images, one line each."""
    column = "images" if "images" in row else "image"
    value = row[column]
    if column == "images" and not isinstance(value, list):
        yield f'column "images" is {_describe(value)}; expected a list of images (paths)'
        return
    items = value if column == "images" else [value]
    for j, item in enumerate(items):
        problem = image_problem(item, root)
        if problem:
            yield (
                f'column "{column}"' + (f" item {j}" if column == "images" else "") + f" {problem}"
            )
    for answer in ANSWER_COLUMNS:
        if _has_image_part(row.get(answer)):
            yield (
                f'column "{answer}" has an image part, but TRL gives a row\'s images to the prompt '
                'only; expected the {"type": "image"} parts in the prompt'
            )
    prompt = next((row[c] for c in PROMPT_COLUMNS if c in row), None)
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        wanted, where = _placeholders(prompt), '{"type": "image"} part'
    elif isinstance(prompt, str) and image_token:
        wanted, where = prompt.count(image_token), f'"{image_token}" token'
    else:
        return
    if wanted is not None and wanted != len(items):
        side = next(c for c in PROMPT_COLUMNS if c in row)
        yield (
            f'column "{column}" has {len(items)} image{"s" * (len(items) != 1)} but "{side}" has '
            f"{wanted} {where}{'s' * (wanted != 1)}; expected one per image"
            + (
                ", or string contents (TRL then puts the images before the first user message)"
                if where.startswith("{")
                else ""
            )
        )


def load_local_images(dataset, split_files: dict[str, Path]):
    """Turn the image paths of a dataset loaded from local files into images: each split's
    relative paths are resolved against its file's folder, then the column is cast to the
    `datasets.Image` feature (decoded when a row is read, as in a Hub dataset)."""
    import datasets

    for split, file in split_files.items():
        table = dataset[split]
        column = next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
        if column is None:
            continue
        root = Path(file).parent

        def absolute(row, column=column, root=root):
            value = row[column]
            if column == "images":
                return {column: [str(resolve(p, root)) for p in value]}
            return {column: str(resolve(value, root))}

        table = table.map(absolute)
        feature = datasets.List(datasets.Image()) if column == "images" else datasets.Image()
        dataset[split] = table.cast_column(column, feature)
    return dataset
