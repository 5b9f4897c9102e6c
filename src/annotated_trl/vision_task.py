"""The toy visual task and the tiny vision-language model (VLM) that learns it, built offline.

The task: a 28×28 picture holds one coloured square on a grey, noisy background; the question is
"What colour is the square?" and the answer is one word (`red`, `green`, `blue` or `yellow`). The
question is the same in every row, so only the picture can tell the answer: a model that ignores
the image cannot do better than one in four.

The model is a real transformers VLM class, `LlavaForConditionalGeneration`, at toy size: a CLIP
vision tower (7×7 patches, so 16 patches per image, 2 layers, hidden 32) whose patch features a
two-layer projector maps into the embeddings of a Qwen2 language model of the size of the text
fixture (hidden 32, 2 layers). Its `LlavaProcessor` pairs a CLIP image processor (resize to 28×28,
normalise) with a byte-level BPE tokenizer that has one more special token, `<image>`, which the
processor repeats 16 times, once per patch feature. LLaVA and not Qwen2.5-VL because Qwen2.5-VL's
processor needs a video processor, and transformers builds those only with torchvision installed;
TRL's VLM code paths are the same for both (its own tests run both).

    out/vlm/policy/                 the model, processor, tokenizer and chat template (~300 KiB)
    out/vlm/data/images/            {train,test}-N.png, one picture per row
    out/vlm/data/<format>/{train,test}.jsonl   rows whose "images" are paths relative to the file

Built only when asked (`build_vlm_fixture`); the text fixture (`annotated_trl.fixtures.build_all`)
does not build it. Same seed, same bytes.
"""

import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (225, 200, 30),
}
QUESTION = "What colour is the square?"
IMAGE_SIZE, PATCH_SIZE, SQUARE = 28, 7, 12
IMAGE_TOKEN = "<image>"
TRAIN_ROWS, TEST_ROWS = 256, 64
# The three TRL formats TRL's VLM paths take, with an "images" column: SFT's conversational
# language modelling, GRPO's conversational prompt-only, DPO's conversational preference.
VISION_FORMATS = (
    "vision_language_modeling",
    "vision_prompt_only",
    "vision_preference",
)

# ChatML, as the text fixture's (annotated_trl.fixtures.CHAT_TEMPLATE), but a message's content
# may also be a list of parts: an {"type": "image"} part renders as one `<image>` token (the
# processor repeats it once per patch feature), a {"type": "text"} part as its text. TRL turns
# string contents into such lists itself (`prepare_multimodal_messages`), putting one image part
# per image before the first user message's text. `{% generation %}` marks the assistant's tokens
# for `assistant_only_loss`.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{%- else %}{%- set parts = message['content'] %}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% generation %}"
    "{%- for part in parts %}{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{{- '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}"
    "{%- for part in parts %}"
    "{%- if part['type'] == 'image' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{{- '<|im_end|>' }}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def draw(colour: str, rng: random.Random) -> Image.Image:
    """A grey 28×28 picture with pixel noise and one `colour` square at a random place."""
    noise = np.random.default_rng(rng.getrandbits(32)).integers(
        -24, 25, (IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    image = Image.fromarray((128 + noise).astype(np.uint8), "RGB")
    x, y = rng.randint(0, IMAGE_SIZE - SQUARE), rng.randint(0, IMAGE_SIZE - SQUARE)
    image.paste(COLOURS[colour], (x, y, x + SQUARE, y + SQUARE))
    return image


def colour_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """1.0 when the completion's first word is the square's colour (the `answer` column), else
    0.0. For GRPO: `--reward_funcs annotated_trl.vision_task.colour_reward`."""
    rewards = []
    for completion, colour in zip(completions, answer, strict=True):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        if isinstance(text, list):  # content parts
            text = " ".join(p.get("text") or "" for p in text if p.get("type") == "text")
        words = text.strip().lower().split()
        rewards.append(1.0 if words and words[0].strip(".!") == colour else 0.0)
    return rewards


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def vision_rows(fmt: str, images: list[str], colours: list[str], rng: random.Random) -> list[dict]:
    """The task in one of VISION_FORMATS; `images[i]` is row i's picture (a path)."""
    rows = []
    for image, colour in zip(images, colours, strict=True):
        if fmt == "vision_language_modeling":
            rows.append({"images": [image], "messages": _user(QUESTION) + _assistant(colour)})
        elif fmt == "vision_prompt_only":
            rows.append({"images": [image], "prompt": _user(QUESTION), "answer": colour})
        elif fmt == "vision_preference":
            wrong = rng.choice([c for c in COLOURS if c != colour])
            rows.append(
                {
                    "images": [image],
                    "prompt": _user(QUESTION),
                    "chosen": _assistant(colour),
                    "rejected": _assistant(wrong),
                }
            )
        else:
            raise ValueError(f"unknown vision data format {fmt!r}")
    return rows


def build_vision_data(data_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write images/{split}-N.png and <format>/{split}.jsonl under `data_dir`; rows name their
    picture relative to their own file ("../images/train-0.png")."""
    data_dir = Path(data_dir)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    for split, n, split_seed in (("train", TRAIN_ROWS, seed), ("test", TEST_ROWS, seed + 1)):
        rng = random.Random(f"vision-{split_seed}")
        colours = [rng.choice(list(COLOURS)) for _ in range(n)]
        images = []
        for i, colour in enumerate(colours):
            draw(colour, rng).save(data_dir / "images" / f"{split}-{i}.png")
            images.append(f"../images/{split}-{i}.png")
        for fmt in VISION_FORMATS:
            rows = vision_rows(fmt, images, colours, random.Random(f"{split_seed}-{fmt}"))
            (data_dir / fmt).mkdir(exist_ok=True)
            (data_dir / fmt / f"{split}.jsonl").write_text(
                "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
            )
    return {fmt: data_dir / fmt for fmt in VISION_FORMATS}


def build_processor(seed: int = 0):
    """The tiny model's `LlavaProcessor`: a CLIP image processor (PIL backend, no torchvision)
    and the fixture's byte-level BPE tokenizer trained with the colour words, plus `<image>`."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from annotated_trl.fixtures import _tokenizer_corpus, build_tokenizer

    corpus = _tokenizer_corpus(seed) + [f"{QUESTION} {c}" for c in COLOURS] * 50
    tokenizer = build_tokenizer(corpus)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",  # drop CLIP's class token: 16 tokens, not 17
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(processor, seed: int = 0):
    """A `LlavaForConditionalGeneration` with a 2-layer CLIP vision tower and a 2-layer Qwen2
    language model (random weights)."""
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2Config,
    )

    tokenizer = processor.tokenizer
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed + 20)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def build_vlm_fixture(out_dir: str | Path, seed: int = 0) -> Path:
    """Build out_dir/vlm/{policy,data}; returns out_dir/vlm. A few seconds on one core."""
    root = Path(out_dir) / "vlm"
    processor = build_processor(seed)
    model = build_model(processor, seed)
    model.save_pretrained(root / "policy")
    processor.save_pretrained(root / "policy")
    build_vision_data(root / "data", seed)
    return root
