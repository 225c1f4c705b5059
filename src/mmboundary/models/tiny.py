"""Tiny random-weight models built offline from configs, for tests, demos and the ShapesWorld.

No weights can be downloaded on these machines, so every VLM the tests touch is built here: stock
Hugging Face classes (Qwen2-VL, LLaVA = CLIP vision + Qwen2 text, Idefics3 = SmolVLM family, and a
CLIP dual encoder) with hidden size ~64, 2 layers and 64x64 images, plus a byte-level BPE tokenizer
trained in memory on a small English corpus (byte-level: every string round-trips), the
architecture's special tokens and a chat template. Everything is saved with ``save_pretrained``, so
``VLM.from_pretrained(out_dir)`` (or ``AutoModelForImageTextToText`` / ``AutoProcessor`` for LLaVA,
LLaVA-NeXT and Idefics3) loads it by path.

Bigger variants for training (the ShapesWorld model) pass overrides::

    make_tiny("llava", out, corpus=world_sentences, hidden_size=128, num_layers=2,
              vision_hidden_size=64, image_size=64, patch_size=8)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ARCHS = ("qwen2-vl", "qwen2.5-vl", "llava", "llava-next", "idefics3", "clip")

DEFAULT_CORPUS: list[str] = [
    "The image shows a red circle next to a blue square on a white background.",
    "There are two green triangles and one yellow circle in the picture.",
    "The photo shows a man riding a bicycle down a busy street in the city.",
    "A woman is holding an umbrella because it is raining outside.",
    "The cat is sleeping on the sofa near the window.",
    "There are three dogs playing in the park with a ball.",
    "The sign on the wall says stop, so the cars must wait.",
    "The plate has a slice of cake with thirty candles on it.",
    "How many shapes are there? Which colour is the largest shape? Is there a square?",
    "Question: What is the man holding? Choices: (A) a phone (B) a cup (C) a book (D) a kite",
    "Let's think step by step. First, look at the image. Then count the objects.",
    "So, the answer is A. So, the answer is 2. So, the answer is red. So, the answer is yes.",
    "I am certain of this. I am fairly confident. I think this is likely true.",
    "I'm not sure, but it seems so. It is possible, but I can't be entirely sure.",
    "I am almost certain that there are four shapes. I doubt that the square is blue.",
    "Numbers: zero, one, two, three, four, five, six, seven, eight, nine, ten, 0 1 2 3 4 5 6 7 8 9.",
    "Colours: red, green, blue, yellow, black, white, orange, purple, brown, grey.",
    "Shapes: circle, square, triangle, rectangle, star. Left, right, top, bottom, middle.",
    "The food in the bowl is a traditional dish eaten during the festival.",
    "Plants need sunlight and water; the experiment measures how fast the seeds grow.",
]

_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ IMAGE }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_SPECIALS: dict[str, list[str]] = {
    "qwen2-vl": [*_QWEN_SPECIALS, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>"],
    "llava": [*_QWEN_SPECIALS, "<image>"],
    "idefics3": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>",
                 "<fake_token_around_image>", "<image>", "<global-img>",
                 *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]],
    "clip": ["<|startoftext|>", "<|endoftext|>"],
}
_SPECIALS["qwen2.5-vl"] = _SPECIALS["qwen2-vl"]
_SPECIALS["llava-next"] = _SPECIALS["llava"]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny model; every field can be overridden through ``make_tiny(**overrides)``."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 64
    patch_size: int = 8
    max_position_embeddings: int = 4096


def _train_tokenizer(arch: str, corpus: list[str], vocab_size: int) -> Any:
    """Byte-level BPE trained in memory; the architecture's special tokens get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = _SPECIALS[arch]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if arch == "clip":  # CLIP pools the text at its EOS token: every text must end with it
        tok.post_processor = processors.Sequence([byte_level, processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>",
            special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])])
    else:
        tok.post_processor = byte_level
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def _wrap_tokenizer(arch: str, tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    if arch == "clip":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
            pad_token="<|endoftext|>", model_max_length=77)
    specials = _SPECIALS[arch]
    eos = "<end_of_utterance>" if arch == "idefics3" else "<|im_end|>"
    template = _IDEFICS3_TEMPLATE if arch == "idefics3" else _QWEN_TEMPLATE.replace(
        "{{ IMAGE }}", "<image>" if arch in ("llava", "llava-next")
        else "<|vision_start|><|image_pad|><|vision_end|>")
    extra = [t for t in specials if t not in ("<|endoftext|>", eos)]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>",
        extra_special_tokens=extra, chat_template=template, padding_side="left",
        model_max_length=4096)


def _text_kwargs(spec: TinySpec, tokenizer: Any) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )


def _clip_vision(spec: TinySpec) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size, intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.hidden_size)


def _qwen2vl(arch: str, spec: TinySpec, tok: Any) -> tuple[Any, Any]:
    import transformers as tf

    from mmboundary.models.vlm import qwen2vl_image_only_processor_class

    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]  # mrope (t, h, w), sums to head_dim/2
    text = dict(_text_kwargs(spec, tok), rope_parameters={
        "rope_type": "default", "mrope_section": section, "rope_theta": 10000.0})
    merge = 2
    vision = dict(depth=spec.vision_layers, embed_dim=spec.vision_hidden_size,
                  hidden_size=spec.vision_hidden_size, num_heads=spec.vision_heads,
                  patch_size=spec.patch_size, spatial_merge_size=merge, temporal_patch_size=2,
                  out_hidden_size=spec.hidden_size)
    ids = {n: tok.convert_tokens_to_ids(t) for n, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    if arch == "qwen2.5-vl":
        vision.update(intermediate_size=2 * spec.vision_hidden_size, fullatt_block_indexes=[0],
                      window_size=spec.patch_size * merge * 2)
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model = tf.Qwen2_5_VLForConditionalGeneration(config)
    else:
        vision["hidden_size"] = spec.hidden_size  # Qwen2-VL's merger outputs vision hidden_size
        config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model = tf.Qwen2VLForConditionalGeneration(config)
    pixels = spec.image_size * spec.image_size
    image_processor = tf.Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=spec.patch_size,
        merge_size=merge, temporal_patch_size=2)
    processor_cls = qwen2vl_image_only_processor_class()
    processor = processor_cls(image_processor=image_processor, tokenizer=tok,
                              chat_template=tok.chat_template)
    return model, processor


def _llava(spec: TinySpec, tok: Any) -> tuple[Any, Any]:
    import transformers as tf

    n_image = (spec.image_size // spec.patch_size) ** 2
    config = tf.LlavaConfig(
        vision_config=_clip_vision(spec), text_config=tf.Qwen2Config(**_text_kwargs(spec, tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_image,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu", tie_word_embeddings=False)
    model = tf.LlavaForConditionalGeneration(config)
    side = {"height": spec.image_size, "width": spec.image_size}
    image_processor = tf.CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size}, crop_size=side)
    processor = tf.LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tok.chat_template, image_token="<image>")
    return model, processor


def _llava_next(spec: TinySpec, tok: Any) -> tuple[Any, Any]:
    """LLaVA-NeXT (LLaVA-1.6): CLIP vision + Llama text, any-resolution tiles of ``image_size``
    (grid pinpoints 1x1, 1x2, 2x1 tiles) plus the downscaled whole image, as in
    llava-v1.6-vicuna-7b-hf."""
    import transformers as tf

    side = spec.image_size
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    config = tf.LlavaNextConfig(
        vision_config=_clip_vision(spec), text_config=tf.LlamaConfig(**_text_kwargs(spec, tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(side // spec.patch_size) ** 2, image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu", tie_word_embeddings=False)
    model = tf.LlavaNextForConditionalGeneration(config)
    image_processor = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints)
    processor = tf.LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tok.chat_template, image_token="<image>")
    return model, processor


def _idefics3(spec: TinySpec, tok: Any) -> tuple[Any, Any]:
    import transformers as tf

    scale = 2
    vision = tf.Idefics3VisionConfig(
        hidden_size=spec.vision_hidden_size, intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=spec.image_size, patch_size=spec.patch_size)
    config = tf.Idefics3Config(
        vision_config=vision, text_config=tf.LlamaConfig(**_text_kwargs(spec, tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale,
        tie_word_embeddings=False, pad_token_id=tok.pad_token_id)
    model = tf.Idefics3ForConditionalGeneration(config)
    edge = {"longest_edge": spec.image_size}
    image_processor = tf.Idefics3ImageProcessorPil(
        do_image_splitting=False, size=edge, max_image_size=edge)
    seq_len = (spec.image_size // spec.patch_size) ** 2 // scale**2
    processor = tf.Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len,
        chat_template=tok.chat_template)
    return model, processor


def _clip(spec: TinySpec, tok: Any) -> tuple[Any, Any]:
    import transformers as tf

    text = tf.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, max_position_embeddings=77,
        projection_dim=spec.hidden_size, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = tf.CLIPConfig(text_config=text.to_dict(), vision_config=_clip_vision(spec).to_dict(),
                           projection_dim=spec.hidden_size)
    model = tf.CLIPModel(config)
    side = {"height": spec.image_size, "width": spec.image_size}
    image_processor = tf.CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size}, crop_size=side)
    return model, tf.CLIPProcessor(image_processor=image_processor, tokenizer=tok)


def make_tiny(
    arch: str,
    out_dir: str | Path,
    seed: int = 0,
    corpus: list[str] | None = None,
    vocab_size: int | None = None,
    **overrides: Any,
) -> Path:
    """Build a tiny random ``arch`` model + tokenizer + processor and save them in ``out_dir``.

    ``arch``: one of ``ARCHS``. ``corpus``: sentences the byte-level BPE is trained on (default
    ``DEFAULT_CORPUS``); ``vocab_size``: BPE vocabulary including the 256 byte tokens and the
    special tokens (default 512). ``overrides``: any ``TinySpec`` field (``hidden_size``,
    ``num_layers``, ``num_heads``, ``num_kv_heads``, ``intermediate_size``,
    ``vision_hidden_size``, ``vision_layers``, ``vision_heads``, ``image_size``, ``patch_size``).
    Weights are random (``torch.manual_seed(seed)``). Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"make_tiny: unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    valid = {f.name for f in fields(TinySpec)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"make_tiny: unknown override(s) {unknown}; expected any of {sorted(valid)}")
    spec = replace(TinySpec(), **overrides)
    if spec.image_size % spec.patch_size or spec.hidden_size % spec.num_heads:
        raise ValueError(f"make_tiny: image_size must be a multiple of patch_size and "
                         f"hidden_size of num_heads; got {spec}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus else list(DEFAULT_CORPUS)
    tok = _wrap_tokenizer(arch, _train_tokenizer(arch, texts, vocab_size or 512))
    torch.manual_seed(seed)
    if arch in ("qwen2-vl", "qwen2.5-vl"):
        model, processor = _qwen2vl(arch, spec, tok)
    elif arch == "llava":
        model, processor = _llava(spec, tok)
    elif arch == "llava-next":
        model, processor = _llava_next(spec, tok)
    elif arch == "idefics3":
        model, processor = _idefics3(spec, tok)
    else:
        model, processor = _clip(spec, tok)
    model.eval()
    if arch != "clip":
        stop = [tok.eos_token_id]
        model.generation_config = GenerationConfig(
            eos_token_id=stop, pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
