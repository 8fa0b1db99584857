"""Loading and building models and tokenizers: real ones from the Hub or a folder, tiny ones from a config."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from rlphf_cli.errors import UserError, first_line

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "<s>", "eos_token": "</s>"}
CHAT_TOKENS = ["<|user|>", "<|assistant|>"]
_warned_pad: set[str] = set()


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name} asked for, but no CUDA device is available; use device=cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def torch_dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise UserError(f"unknown dtype {name!r}; valid: float32, bfloat16, float16") from None


# Named prompt formats (`model.prompt_template`); any other value is a string holding `{prompt}` once.
TEMPLATES = {
    "tulu": "<|user|>\n{prompt}\n<|assistant|>\n",  # Tulu's chat format, as P-Soups used
    "alpaca": "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n",
}
TEMPLATE_NAMES = ("auto", "chat", *TEMPLATES)  # auto: chat when the tokenizer has a chat template, else tulu


def uses_chat_template(template: str, tokenizer) -> bool:
    has_one = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_one:
        raise UserError(
            "model.prompt_template=chat, but the tokenizer has no chat template; use tulu, alpaca or a string "
            "with {prompt}"
        )
    return template == "chat" or (template == "auto" and has_one)


def format_prompt(template: str, text: str, tokenizer=None) -> str:
    """The instruction in the model's prompt format: the tokenizer's chat template (`chat`, or `auto` when it
    has one), a named format (`tulu`, `alpaca`), or a string holding `{prompt}` (checked by validate.py)."""
    if uses_chat_template(template, tokenizer):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        bos = tokenizer.bos_token
        if bos and rendered.startswith(bos) and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]:
            rendered = rendered[len(bos) :]  # the tokenizer adds BOS itself when encoding
        return rendered
    return TEMPLATES.get(template, TEMPLATES["tulu"] if template == "auto" else template).replace(
        "{prompt}", text
    )


def sentence_end_ids(tokenizer) -> set[int]:
    """The token ids that end a sentence (".", "!", "?") in the tokenizer's vocabulary."""
    ids = {tokenizer.convert_tokens_to_ids(t) for t in (".", "!", "?")}
    return {i for i in ids if i is not None and i != tokenizer.unk_token_id}


def build_tokenizer(texts: list[str]):
    """A word-level tokenizer over a closed vocabulary, built offline with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(cleanup=True)  # joins words with spaces, no space before punctuation
    specials = list(SPECIAL_TOKENS.values()) + CHAT_TOKENS
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, **SPECIAL_TOKENS, additional_special_tokens=CHAT_TOKENS, padding_side="left"
    )


def build_tiny_model(model_cfg, tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_hidden_layers,
        num_attention_heads=model_cfg.num_attention_heads,
        num_key_value_heads=model_cfg.num_attention_heads,
        max_position_embeddings=model_cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def looks_local(name_or_path: str) -> bool:
    """A folder path rather than a hub id (`org/name`): starts with . / ~, or has more than one part."""
    return name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]


def _check_exists(name_or_path: str, what: str) -> None:
    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise UserError(f"{what} not found: {name_or_path}")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """Load a tokenizer; one without a pad token gets its EOS token as pad (with one warning)."""
    from transformers import AutoTokenizer

    _check_exists(name_or_path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer from {name_or_path}: {first_line(exc)}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"tokenizer {name_or_path} has neither a pad token nor an EOS token")
        tok.pad_token = tok.eos_token
        if name_or_path not in _warned_pad:
            _warned_pad.add(name_or_path)
            log.warning("tokenizer %s has no pad token; using its EOS token %r", name_or_path, tok.eos_token)
    tok.padding_side = "left"
    return tok


def load_causal_lm(name_or_path: str, model_cfg, device: torch.device | None = None):
    from transformers import AutoModelForCausalLM

    _check_exists(name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            dtype=torch_dtype(model_cfg.dtype),
            trust_remote_code=model_cfg.trust_remote_code,
            use_safetensors=None,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model from {name_or_path}: {first_line(exc)}") from None
    return model.to(device) if device is not None else model
