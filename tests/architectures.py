"""Small random-initialised models of the architectures researchers use, saved as Hugging Face folders.

Each folder holds the model (a few hundred thousand parameters at most) and a byte-level BPE tokenizer with
a chat template, built offline with the `tokenizers` library, as a real base would arrive:
`save_small_model("gpt2", tmp_path / "gpt2")`. The shapes that break LLaMA-only code are kept: Qwen2's
q/k/v biases and tied embeddings, Phi3's and GPT-NeoX's fused q/k/v projections, GPT-2's `Conv1D` layers
(weights stored [in, out]), Gemma2's separate head_dim and soft-capped logits.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "Bees make honey in the summer.",
    "Rain falls from grey clouds over the hills.",
    "Volcanoes can erupt with hot lava and ash!",
    "The moon pulls the tides of the sea.",
    "Magnets attract iron, and that is useful.",
    "Snow is frozen water; children love it.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
HIDDEN, INTERMEDIATE, LAYERS, HEADS = 32, 64, 2, 4


def _llama_like(cls_name: str, **extra):
    def config(tokens: dict):
        import transformers

        return getattr(transformers, cls_name)(
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS // 2,  # grouped-query attention, as current bases have
            max_position_embeddings=512,
            **tokens,
            **extra,
        )

    return config


def _gpt2(tokens: dict):
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=HIDDEN,
        n_inner=INTERMEDIATE,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=512,
        **tokens,
    )


def _gpt_neox(tokens: dict):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=512,
        **tokens,
    )


# name -> (config builder, the model class's name); every one loads with AutoModelForCausalLM
ARCHITECTURES = {
    "llama": _llama_like("LlamaConfig"),
    "qwen2": _llama_like("Qwen2Config", tie_word_embeddings=True),  # q/k/v biases are Qwen2's own
    "qwen3": _llama_like("Qwen3Config", head_dim=8),
    "mistral": _llama_like("MistralConfig", sliding_window=64),
    "gemma2": _llama_like(
        "Gemma2Config", head_dim=16, query_pre_attn_scalar=16, sliding_window=64, final_logit_softcapping=30.0
    ),
    "phi3": _llama_like("Phi3Config"),  # qkv_proj and gate_up_proj fused
    "olmo2": _llama_like("Olmo2Config"),
    "gpt2": _gpt2,  # Conv1D
    "gpt_neox": _gpt_neox,  # query_key_value fused
}


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on a few sentences, with pad/bos/eos and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_small_model(arch: str, tokenizer, seed: int = 0):
    """A random causal LM of `arch` (a key of ARCHITECTURES) for `tokenizer`'s vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    tokens = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = ARCHITECTURES[arch](tokens)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def save_small_model(arch: str, folder, seed: int = 0) -> Path:
    """`arch`'s random model and the chat-template tokenizer saved as a Hugging Face folder."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tokenizer = build_tokenizer()
    model = build_small_model(arch, tokenizer, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # transformers may load the folder's tokenizer as the architecture's own class, which can add a special
    # token (Qwen2's <|endoftext|>): the vocabulary is the tokenizer's as it loads back
    loaded = len(AutoTokenizer.from_pretrained(folder))
    if loaded != model.config.vocab_size:
        model.resize_token_embeddings(loaded)
        model.save_pretrained(folder)
    return folder
