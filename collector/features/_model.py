"""Model features from a Hugging Face ``config.json``, or from a Hub id alone.

Everything here is computed from the config dictionary; no weights are loaded and ``transformers`` is not needed.

Parameter-count convention (``n_params``):

* The count is that of the **base model**, the class ``AutoModel`` builds from the config (``BertModel``,
  ``RobertaModel``, ``T5Model``, ``GPT2Model``, ``LlamaModel`` ...), with that class's default parts: the pooler
  where the base class has one (BERT, RoBERTa, XLM-R, ALBERT, MPNet, FNet), none where it has none (DistilBERT,
  ELECTRA, DeBERTa, GPT-2, T5). No task head (classifier, QA span head, MLM head) is counted.
* A language-model head is never counted by default. With ``with_lm_head=True`` (decoders and encoder-decoders
  only) an *untied* head adds ``vocab_size x hidden`` (Llama, Mistral, T5 v1.1 / FLAN-T5); a head tied to the input
  embedding adds nothing, because a tied matrix is counted once (GPT-2, original T5, OPT).
* Shared matrices are counted once: T5/BART's shared input embedding, ALBERT's shared layer groups.
* Buffers (attention masks, ``position_ids``) are not parameters and are not counted.
* The families listed in ``EXACT_FAMILIES`` are counted exactly, layer by layer; any other config with a layer count,
  a width and a vocabulary gets the rule of thumb ``12·L·h² + V·h`` and ``ParamCount.exact`` is ``False``.

Layer convention (``n_layers``): the encoder stack for encoder-decoders (T5's ``num_layers``; the decoder usually has
as many), the number of layer applications for ALBERT (its weights are shared). ``max_positions`` is the longest
input the position embeddings allow: RoBERTa-style configs store ``pad_token_id + 1`` extra rows (514 -> 512).

Architecture type: XLNet is listed as an encoder (it is fine-tuned with full bidirectional attention, like BERT, even
though its pre-training is autoregressive over permutations); convolutional vision models get no type.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from collector.schema._vocab import canonical_dataset, canonical_model_id

__all__ = [
    "EXACT_FAMILIES",
    "ParamCount",
    "count_parameters",
    "infer_features_from_id",
    "model_features_from_config",
    "normalize_family",
    "sequence_classification_head_params",
]


class ParamCount(NamedTuple):
    """A parameter count and how it was obtained.

    Attributes:
        n_params: number of parameters of the base model (see the module docstring for the convention).
        exact: ``True`` when counted layer by layer for a known architecture, ``False`` for the generic rule.
        rule: the counting rule used, e.g. ``"bert"``, ``"t5"``, ``"generic:12Lh^2+Vh"``.
    """

    n_params: int
    exact: bool
    rule: str


# ----------------------------------------------------------------------------------------------------------------------
# Config access


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in ``config`` with a non-null value."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return default


def _hidden(c: dict[str, Any]) -> int | None:
    return _get(c, "hidden_size", "d_model", "n_embd", "dim", "embed_dim")


def _layers(c: dict[str, Any]) -> int | None:
    return _get(c, "num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers")


def _heads(c: dict[str, Any]) -> int | None:
    return _get(c, "num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads")


def _ffn(c: dict[str, Any], hidden: int, default_mult: int = 4) -> int:
    return int(
        _get(
            c,
            "intermediate_size",
            "d_ff",
            "n_inner",
            "hidden_dim",
            "encoder_ffn_dim",
            "d_inner",
            default=default_mult * hidden,
        )
    )


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _layer_norm(width: int) -> int:
    return 2 * width


# ----------------------------------------------------------------------------------------------------------------------
# Families

_FAMILY_ALIASES = {
    "xlm_roberta": "xlm-roberta",
    "xlmroberta": "xlm-roberta",
    "debertav2": "deberta-v2",
    "deberta_v2": "deberta-v2",
    "data2vec_text": "data2vec-text",
    "data2vec_vision": "data2vec-vision",
    "gpt_neo": "gpt-neo",
    "gpt_neox": "gpt-neox",
    "gptneo": "gpt-neo",
}

_ENCODER_FAMILIES = frozenset({
    "albert", "bert", "big-bird", "camembert", "canine", "convbert", "data2vec-text", "deberta", "deberta-v2",
    "distilbert", "electra", "ernie", "esm", "flaubert", "fnet", "funnel", "ibert", "layoutlm", "longformer", "luke",
    "megatron-bert", "mobilebert", "mpnet", "nystromformer", "perceiver", "rembert", "roberta", "roformer",
    "squeezebert", "xlm", "xlm-roberta", "xlm-roberta-xl", "xlnet", "xmod",
    "beit", "data2vec-vision", "deit", "dinov2", "swin", "swinv2", "vit",
})  # fmt: skip
_DECODER_FAMILIES = frozenset({
    "bloom", "codegen", "ctrl", "falcon", "gemma", "gemma2", "gpt-bigcode", "gpt-neo", "gpt-neox", "gpt2", "gptj",
    "llama", "mistral", "mixtral", "mpt", "olmo", "openai-gpt", "opt", "phi", "phi3", "qwen2", "qwen3", "stablelm",
    "starcoder2", "transfo-xl", "xglm",
})  # fmt: skip
_ENCODER_DECODER_FAMILIES = frozenset({
    "bart", "bigbird-pegasus", "blenderbot", "fsmt", "led", "longt5", "m2m-100", "marian", "mbart", "mt5", "mvp",
    "nllb-moe", "pegasus", "plbart", "prophetnet", "switch-transformers", "t5", "umt5",
})  # fmt: skip

#: Families whose parameter count is computed exactly, layer by layer.
EXACT_FAMILIES = frozenset({
    "albert", "bart", "bert", "camembert", "data2vec-text", "deberta", "deberta-v2", "deit", "distilbert", "electra",
    "fnet", "gemma", "gpt-neo", "gpt-neox", "gpt2", "llama", "mbart", "mistral", "mpnet", "mt5", "opt", "phi3",
    "qwen2", "roberta", "t5", "vit", "xlm-roberta", "xlnet",
})  # fmt: skip

# RoBERTa-style position embeddings reserve pad_token_id + 1 rows before the first position.
_PADDING_OFFSET_FAMILIES = frozenset({"roberta", "xlm-roberta", "camembert", "data2vec-text", "mpnet", "longformer"})

_ARCH_SUFFIX_FAMILIES = (
    ("xlmroberta", "xlm-roberta"), ("distilbert", "distilbert"), ("camembert", "camembert"), ("roberta", "roberta"),
    ("debertav2", "deberta-v2"), ("deberta", "deberta"), ("albert", "albert"),
    ("electra", "electra"), ("mpnet", "mpnet"), ("xlnet", "xlnet"), ("bert", "bert"), ("mt5", "mt5"), ("t5", "t5"),
    ("mbart", "mbart"), ("bart", "bart"), ("gptneox", "gpt-neox"), ("gptneo", "gpt-neo"), ("gpt2", "gpt2"),
    ("opt", "opt"), ("llama", "llama"), ("mistral", "mistral"), ("qwen2", "qwen2"), ("vit", "vit"), ("deit", "deit"),
)  # fmt: skip


def normalize_family(model_type: str) -> str:
    """The family name for a ``model_type``: lower case, ``_`` -> ``-``, known aliases folded.

    Args:
        model_type: the config's ``model_type`` (``"xlm-roberta"``, ``"gpt_neo"``, ``"deberta-v2"`` ...).

    Returns:
        The normalized family, e.g. ``"gpt-neo"``.
    """
    key = model_type.strip().lower()
    key = _FAMILY_ALIASES.get(key, key)
    return key.replace("_", "-")


def _family(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type.strip():
        return normalize_family(model_type)
    for arch in config.get("architectures") or []:
        low = str(arch).lower()
        for prefix, family in _ARCH_SUFFIX_FAMILIES:
            if low.startswith(prefix):
                return family
    return None


def _arch_type(config: dict[str, Any], family: str | None) -> str | None:
    if config.get("is_encoder_decoder") is True or family in _ENCODER_DECODER_FAMILIES:
        return "encoder-decoder"
    if family in _DECODER_FAMILIES:
        return "decoder"
    if family in _ENCODER_FAMILIES:
        return "encoder"
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    if any(a.endswith("ForConditionalGeneration") for a in archs):
        return "encoder-decoder"
    if any(a.endswith(("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification")) for a in archs):
        return "encoder"
    return None


def _is_deberta_v3(config: dict[str, Any], name: str) -> bool:
    """DeBERTaV3 (ELECTRA-style replaced-token detection) shares ``model_type`` deberta-v2 with DeBERTaV2 (MLM)."""
    if "v3" in name:
        return True
    if "v2" in name:
        return False
    # v2 xlarge/xxlarge checkpoints use a convolution layer next to the first layer; no v3 checkpoint does.
    return not config.get("conv_kernel_size")


def _objective(family: str | None, name: str, config: dict[str, Any]) -> str | None:
    if family is None:
        return None
    if family == "electra":
        return "rtd"
    if family == "deberta-v2":
        return "rtd" if _is_deberta_v3(config, name) else "mlm"
    if family == "xlnet":
        return "permutation"
    if family in {"bart", "mbart", "pegasus", "plbart", "mvp"}:
        return "denoising"
    if family in {"t5", "mt5", "umt5", "longt5", "switch-transformers"}:
        return "span-corruption"
    if family in {"vit", "deit", "swin", "swinv2", "convnext", "resnet", "van"}:
        return "supervised"
    if family in {"beit", "data2vec-vision"}:
        return "mim"
    if family in _DECODER_FAMILIES:
        return "clm"
    if family in _ENCODER_FAMILIES:
        return "mlm"
    return None


_DOMAIN_HINTS: tuple[tuple[str, str], ...] = (
    (r"bertweet|twitter-(?:xlm-)?roberta|twhin|tweet-?bert", "social-media"),
    (r"biobert|pubmed|bioclinical|clinical-?bert|biomed|bio_?clinical|bluebert|sapbert", "biomedical"),
    (r"scibert|scincl|specter", "scientific"),
    (r"finbert|fin-?roberta", "finance"),
    (r"legal-?bert|caselaw", "legal"),
    (r"codebert|codet5|graphcodebert|starcoder|codegen|santacoder", "code"),
    (r"bert-for-patents|patentbert", "patents"),
    (r"multilingual|xlm-r|xlmr|xlm-roberta|mt5|mdeberta|mbert|mminilm|labse|mbart", "multilingual-web"),
)


def _domain_hint(name: str) -> str | None:
    for pattern, domain in _DOMAIN_HINTS:
        if re.search(pattern, name):
            return domain
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Exact counts, one function per architecture. Each returns the base-model count (see the module docstring).


def _bert_embeddings(c: dict[str, Any], width: int, token_types: bool = True) -> int:
    vocab, positions = c["vocab_size"], _get(c, "max_position_embeddings", default=512)
    n = vocab * width + positions * width + _layer_norm(width)
    if token_types:
        n += int(_get(c, "type_vocab_size", default=2)) * width
    return n


def _bert_layer(h: int, ffn: int) -> int:
    """Post-LN transformer encoder layer: Q, K, V, O with biases, two LayerNorms, a two-matrix FFN."""
    return 4 * _linear(h, h) + _layer_norm(h) + _linear(h, ffn) + _linear(ffn, h) + _layer_norm(h)


def _count_bert(c: dict[str, Any], pooler: bool = True) -> int:
    h = c["hidden_size"]
    return (
        _bert_embeddings(c, h) + c["num_hidden_layers"] * _bert_layer(h, _ffn(c, h)) + (_linear(h, h) if pooler else 0)
    )


def _count_electra(c: dict[str, Any]) -> int:
    """ELECTRA: factorized embeddings of width ``embedding_size`` (128 for small, equal to the hidden size for the
    base/large discriminators, the discriminator's width for generators), projected to ``hidden_size`` when they
    differ; no pooler."""
    h = c["hidden_size"]
    emb = int(_get(c, "embedding_size", default=h))
    n = _bert_embeddings(c, emb) + (_linear(emb, h) if emb != h else 0)
    return n + c["num_hidden_layers"] * _bert_layer(h, _ffn(c, h))


def _count_albert(c: dict[str, Any]) -> int:
    """ALBERT: factorized embeddings, ``num_hidden_groups`` x ``inner_group_num`` layers whose weights every layer
    application shares, and a pooler."""
    h = c["hidden_size"]
    emb = int(_get(c, "embedding_size", default=128))
    groups = int(_get(c, "num_hidden_groups", default=1)) * int(_get(c, "inner_group_num", default=1))
    return _bert_embeddings(c, emb) + _linear(emb, h) + groups * _bert_layer(h, _ffn(c, h)) + _linear(h, h)


def _count_distilbert(c: dict[str, Any]) -> int:
    d = _get(c, "dim", "hidden_size")
    vocab, positions = c["vocab_size"], _get(c, "max_position_embeddings", default=512)
    # Sinusoidal position embeddings are still an (un-trained) nn.Embedding parameter, so they count either way.
    emb = vocab * d + positions * d + _layer_norm(d)
    return emb + _get(c, "n_layers", "num_hidden_layers") * _bert_layer(d, _ffn(c, d))


def _count_fnet(c: dict[str, Any]) -> int:
    """FNet: BERT embeddings plus a projection, Fourier mixing (no weights) instead of attention, and a pooler."""
    h = c["hidden_size"]
    ffn = _ffn(c, h)
    layer = _layer_norm(h) + _linear(h, ffn) + _linear(ffn, h) + _layer_norm(h)
    return _bert_embeddings(c, h) + _linear(h, h) + c["num_hidden_layers"] * layer + _linear(h, h)


def _count_mpnet(c: dict[str, Any]) -> int:
    h = c["hidden_size"]
    rel_bias = int(_get(c, "relative_attention_num_buckets", default=32)) * c["num_attention_heads"]
    layers = c["num_hidden_layers"] * _bert_layer(h, _ffn(c, h))
    return _bert_embeddings(c, h, token_types=False) + layers + rel_bias + _linear(h, h)


def _deberta_embeddings(c: dict[str, Any], h: int) -> int:
    emb = int(_get(c, "embedding_size", default=h))
    n = c["vocab_size"] * emb + _layer_norm(h)
    if _get(c, "position_biased_input", default=True):
        n += int(_get(c, "max_position_embeddings", default=512)) * emb
    if int(_get(c, "type_vocab_size", default=0)) > 0:
        n += int(c["type_vocab_size"]) * emb
    if emb != h:
        n += _linear(emb, h, bias=False)
    return n


def _pos_att_types(c: dict[str, Any]) -> set[str]:
    value = _get(c, "pos_att_type", default=[])
    if isinstance(value, str):
        value = value.lower().split("|")
    return {str(v).strip().lower() for v in value}


def _max_relative_positions(c: dict[str, Any]) -> int:
    value = int(_get(c, "max_relative_positions", default=-1))
    return value if value >= 1 else int(_get(c, "max_position_embeddings", default=512))


def _count_deberta(c: dict[str, Any]) -> int:
    """DeBERTa (v1): fused QKV without bias plus separate q/v biases, disentangled position projections, and one table
    of relative position embeddings shared by all layers."""
    h, heads = c["hidden_size"], c["num_attention_heads"]
    all_head = heads * (h // heads)
    ffn = _ffn(c, h)
    relative = bool(_get(c, "relative_attention", default=False))
    att_types = _pos_att_types(c) if relative else set()
    attention = _linear(h, 3 * all_head, bias=False) + 2 * all_head
    if "c2p" in att_types:
        attention += _linear(h, all_head, bias=False)
    if "p2c" in att_types:
        attention += _linear(h, all_head)
    if _get(c, "talking_head", default=False):
        attention += 2 * _linear(heads, heads, bias=False)
    layer = attention + _linear(h, h) + _layer_norm(h) + _linear(h, ffn) + _linear(ffn, h) + _layer_norm(h)
    rel = 2 * _max_relative_positions(c) * h if relative else 0
    return _deberta_embeddings(c, h) + c["num_hidden_layers"] * layer + rel


def _count_deberta_v2(c: dict[str, Any]) -> int:
    """DeBERTaV2/V3: separate Q/K/V with bias, position projections unless ``share_att_key``, log-bucketed relative
    positions (``position_buckets``), optional LayerNorm on them, and the optional convolution of v2 xlarge."""
    h, heads = c["hidden_size"], c["num_attention_heads"]
    all_head = heads * (h // heads)
    ffn = _ffn(c, h)
    relative = bool(_get(c, "relative_attention", default=False))
    attention = 3 * _linear(h, all_head)
    if relative and not _get(c, "share_att_key", default=False):
        att_types = _pos_att_types(c)
        attention += _linear(h, all_head) if "c2p" in att_types else 0
        attention += _linear(h, all_head) if "p2c" in att_types else 0
    layer = attention + _linear(h, h) + _layer_norm(h) + _linear(h, ffn) + _linear(ffn, h) + _layer_norm(h)
    n = _deberta_embeddings(c, h) + c["num_hidden_layers"] * layer
    if relative:
        buckets = int(_get(c, "position_buckets", default=-1))
        n += (2 * buckets if buckets > 0 else 2 * _max_relative_positions(c)) * h
        if "layer_norm" in str(_get(c, "norm_rel_ebd", default="none")).lower():
            n += _layer_norm(h)
    kernel = int(_get(c, "conv_kernel_size", default=0))
    if kernel > 0:
        groups = int(_get(c, "conv_groups", default=1))
        n += h * (h // groups) * kernel + h + _layer_norm(h)
    return n


def _count_xlnet(c: dict[str, Any]) -> int:
    """XLNet: q, k, v, o, r projections without bias, three relative biases and a segment embedding per layer."""
    d = _get(c, "d_model", "hidden_size")
    heads = _get(c, "n_head", "num_attention_heads")
    d_head = int(_get(c, "d_head", default=d // heads))
    inner = heads * d_head
    ffn = _ffn(c, d)
    layer = 5 * d * inner + 3 * inner + 2 * inner + _layer_norm(d) + _layer_norm(d) + _linear(d, ffn) + _linear(ffn, d)
    return c["vocab_size"] * d + d + _get(c, "n_layer", "num_hidden_layers") * layer


def _count_t5(c: dict[str, Any]) -> int:
    """T5 / mT5 / FLAN-T5: bias-free projections, RMS LayerNorm weights only, relative-position bias in the first layer
    of each stack, gated FFN (``wi_0``, ``wi_1``, ``wo``) for ``gated-*`` (v1.1, FLAN, mT5), one shared embedding."""
    d = c["d_model"]
    inner = c["num_heads"] * int(_get(c, "d_kv", default=d // c["num_heads"]))
    d_ff = int(c["d_ff"])
    gated = str(_get(c, "feed_forward_proj", default="relu")).startswith("gated") or bool(c.get("is_gated_act"))
    ffn = (3 if gated else 2) * d * d_ff + d
    attention = 4 * d * inner + d
    rel_bias = int(_get(c, "relative_attention_num_buckets", default=32)) * c["num_heads"]
    n_enc = c["num_layers"]
    n_dec = int(_get(c, "num_decoder_layers", default=n_enc))
    encoder = n_enc * (attention + ffn) + rel_bias + d
    decoder = n_dec * (2 * attention + ffn) + rel_bias + d
    return c["vocab_size"] * d + encoder + decoder


def _count_bart(c: dict[str, Any], final_layer_norm: bool = False) -> int:
    """BART / mBART: learned positions with an offset of 2 rows, biased projections, an embedding LayerNorm per stack
    (and a final LayerNorm per stack for mBART)."""
    d = c["d_model"]
    positions = (int(_get(c, "max_position_embeddings", default=1024)) + 2) * d
    enc_ffn, dec_ffn = int(_get(c, "encoder_ffn_dim", default=4 * d)), int(_get(c, "decoder_ffn_dim", default=4 * d))
    attention = 4 * _linear(d, d) + _layer_norm(d)
    enc_layer = attention + _linear(d, enc_ffn) + _linear(enc_ffn, d) + _layer_norm(d)
    dec_layer = 2 * attention + _linear(d, dec_ffn) + _linear(dec_ffn, d) + _layer_norm(d)
    extra = 2 * _layer_norm(d) if final_layer_norm else 0
    stacks = c["encoder_layers"] * enc_layer + c["decoder_layers"] * dec_layer
    return c["vocab_size"] * d + 2 * (positions + _layer_norm(d)) + stacks + extra


def _count_gpt2(c: dict[str, Any]) -> int:
    h = c["n_embd"]
    ffn = int(_get(c, "n_inner", default=4 * h))
    layer = _layer_norm(h) + _linear(h, 3 * h) + _linear(h, h) + _layer_norm(h) + _linear(h, ffn) + _linear(ffn, h)
    return c["vocab_size"] * h + c["n_positions"] * h + c["n_layer"] * layer + _layer_norm(h)


def _count_gpt_neo(c: dict[str, Any]) -> int:
    h = c["hidden_size"]
    ffn = int(_get(c, "intermediate_size", default=4 * h))
    layer = 2 * _layer_norm(h) + 3 * _linear(h, h, bias=False) + _linear(h, h) + _linear(h, ffn) + _linear(ffn, h)
    positions = int(_get(c, "max_position_embeddings", default=2048)) * h
    return c["vocab_size"] * h + positions + c["num_layers"] * layer + _layer_norm(h)


def _count_gpt_neox(c: dict[str, Any]) -> int:
    h = c["hidden_size"]
    ffn = _ffn(c, h)
    bias = bool(_get(c, "attention_bias", default=True))
    layer = 2 * _layer_norm(h) + _linear(h, 3 * h, bias) + _linear(h, h, bias) + _linear(h, ffn) + _linear(ffn, h)
    return c["vocab_size"] * h + c["num_hidden_layers"] * layer + _layer_norm(h)


def _count_opt(c: dict[str, Any]) -> int:
    h = c["hidden_size"]
    proj = int(_get(c, "word_embed_proj_dim", default=h))
    bias = bool(_get(c, "enable_bias", default=True))
    norm = _layer_norm(h) if _get(c, "layer_norm_elementwise_affine", default=True) else 0
    ffn = int(_get(c, "ffn_dim", default=4 * h))
    layer = 4 * _linear(h, h, bias) + norm + _linear(h, ffn, bias) + _linear(ffn, h, bias) + norm
    n = c["vocab_size"] * proj + (int(_get(c, "max_position_embeddings", default=2048)) + 2) * h
    if proj != h:
        n += 2 * _linear(h, proj, bias=False)  # project_in and project_out
    if _get(c, "do_layer_norm_before", default=True) and not c.get("_remove_final_layer_norm", False):
        n += norm
    return n + c["num_hidden_layers"] * layer


def _count_llama(c: dict[str, Any], family: str) -> int:
    """Llama-style decoders (Llama, Mistral, Qwen2, Gemma, Phi-3): grouped-query attention with
    ``num_key_value_heads``, gated MLP (gate, up, down), RMSNorm weights only. Qwen2 has Q/K/V biases."""
    h, heads = c["hidden_size"], c["num_attention_heads"]
    kv_heads = int(_get(c, "num_key_value_heads", default=heads))
    head_dim = int(_get(c, "head_dim", default=h // heads))
    ffn = c["intermediate_size"]
    qkv_bias = family == "qwen2" or bool(_get(c, "attention_bias", default=False))
    o_bias = family != "qwen2" and bool(_get(c, "attention_bias", default=False))
    mlp_bias = bool(_get(c, "mlp_bias", default=False))
    attention = (
        _linear(h, heads * head_dim, qkv_bias)
        + 2 * _linear(h, kv_heads * head_dim, qkv_bias)
        + _linear(heads * head_dim, h, o_bias)
    )
    mlp = 2 * _linear(h, ffn, mlp_bias) + _linear(ffn, h, mlp_bias)
    return c["vocab_size"] * h + c["num_hidden_layers"] * (attention + mlp + 2 * h) + h


def _count_vit(c: dict[str, Any], distilled: bool = False) -> int:
    """ViT / DeiT: patch projection, class token (+ distillation token for DeiT), learned positions, pre-LN layers,
    final LayerNorm and pooler (``ViTModel``'s default)."""
    h = c["hidden_size"]
    patch, image = int(_get(c, "patch_size", default=16)), int(_get(c, "image_size", default=224))
    tokens = (image // patch) ** 2 + (2 if distilled else 1)
    emb = (2 if distilled else 1) * h + tokens * h + int(_get(c, "num_channels", default=3)) * patch * patch * h + h
    ffn = _ffn(c, h)
    layer = 3 * _linear(h, h, bool(_get(c, "qkv_bias", default=True))) + _linear(h, h) + 2 * _layer_norm(h)
    layer += _linear(h, ffn) + _linear(ffn, h)
    return emb + c["num_hidden_layers"] * layer + _layer_norm(h) + _linear(h, h)


def _count_exact(c: dict[str, Any], family: str) -> tuple[int, str] | None:
    if family in {"bert", "roberta", "xlm-roberta", "camembert", "data2vec-text"}:
        return _count_bert(c), "bert"
    simple = {
        "electra": _count_electra, "albert": _count_albert, "distilbert": _count_distilbert, "fnet": _count_fnet,
        "mpnet": _count_mpnet, "deberta": _count_deberta, "deberta-v2": _count_deberta_v2, "xlnet": _count_xlnet,
        "gpt2": _count_gpt2, "gpt-neo": _count_gpt_neo, "gpt-neox": _count_gpt_neox, "opt": _count_opt,
    }  # fmt: skip
    if family in simple:
        return simple[family](c), family
    if family in {"t5", "mt5"}:
        return _count_t5(c), "t5"
    if family in {"bart", "mbart"}:
        return _count_bart(c, final_layer_norm=family == "mbart"), family
    if family in {"llama", "mistral", "qwen2", "gemma", "phi3"}:
        return _count_llama(c, family), "llama"
    if family in {"vit", "deit"}:
        return _count_vit(c, distilled=family == "deit"), family
    return None


_TIED_BY_DEFAULT = {"llama": False, "mistral": False, "qwen2": False, "gpt-neox": False, "phi3": False}


def _untied_lm_head(c: dict[str, Any], family: str, arch_type: str | None) -> int:
    """Extra parameters of an untied LM head (0 when tied or for encoders)."""
    if arch_type not in {"decoder", "encoder-decoder"}:
        return 0
    tied = c.get("tie_word_embeddings", _TIED_BY_DEFAULT.get(family, True))
    width = _get(c, "word_embed_proj_dim") or _hidden(c)
    if tied or not width or not c.get("vocab_size"):
        return 0
    return int(c["vocab_size"]) * int(width)


def count_parameters(config: dict[str, Any], *, with_lm_head: bool = False) -> ParamCount | None:
    """Count the parameters of the base model a Hugging Face config describes, without building it.

    Args:
        config: the parsed ``config.json``.
        with_lm_head: add an untied language-model head (decoders and encoder-decoders only; a tied head is already
            counted as the input embedding).

    Returns:
        The count, exact for ``EXACT_FAMILIES`` and approximate (``12·L·h² + V·h``) otherwise; ``None`` when the config
        lacks a layer count, width or vocabulary for the rule of thumb.
    """
    family = _family(config)
    result: tuple[int, str] | None = None
    if family in EXACT_FAMILIES:
        try:
            result = _count_exact(config, family)
        except (KeyError, TypeError, ZeroDivisionError):
            result = None
    exact = result is not None
    if result is None:
        layers, hidden, vocab = _layers(config), _hidden(config), config.get("vocab_size")
        if not (layers and hidden and vocab):
            return None
        if _arch_type(config, family) == "encoder-decoder":
            layers += int(_get(config, "num_decoder_layers", "decoder_layers", default=layers))
        result = (12 * int(layers) * int(hidden) ** 2 + int(vocab) * int(hidden), "generic:12Lh^2+Vh")
    n_params, rule = result
    if with_lm_head and family:
        n_params += _untied_lm_head(config, family, _arch_type(config, family))
    return ParamCount(int(n_params), exact, rule)


def sequence_classification_head_params(config: dict[str, Any], num_labels: int) -> int | None:
    """Parameters that ``AutoModelForSequenceClassification`` adds to (or removes from) the base model.

    The base-model count plus this number is the count of the classification model; it lets counts that include a
    classifier (e.g. TransferGraph's ``number_of_parameters``) be compared exactly. Negative parts account for base
    parts the classification model drops (RoBERTa's classifier replaces the pooler with a dense layer of the same size).

    Args:
        config: the parsed ``config.json``.
        num_labels: number of output labels.

    Returns:
        The parameter difference, or ``None`` for a family whose head is not modelled.
    """
    family = _family(config)
    h = _hidden(config)
    if family is None or not h:
        return None
    n = int(num_labels)
    if family in {"bert", "albert", "fnet", "xlnet"}:
        if family == "xlnet":  # sequence summary: a dense projection then the classifier
            return _linear(h, h) + _linear(h, n)
        return _linear(h, n)  # the base model's pooler feeds the classifier
    if family in {"roberta", "xlm-roberta", "camembert", "data2vec-text", "mpnet"}:
        return _linear(h, n)  # classifier dense (h x h) replaces the pooler of the same size, then out_proj
    if family in {"distilbert", "electra"}:
        return _linear(h, h) + _linear(h, n)
    if family in {"deberta", "deberta-v2"}:
        pooled = int(_get(config, "pooler_hidden_size", default=h))
        return _linear(h, pooled) + _linear(pooled, n)
    if family in {"vit", "deit"}:
        heads = 2 if family == "deit" else 1  # distilled DeiT: class and distillation classifiers
        return heads * _linear(h, n) - _linear(h, h)  # the classification model drops ViTModel's pooler
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Features


def _max_positions(config: dict[str, Any], family: str | None) -> int | None:
    positions = _get(config, "max_position_embeddings", "n_positions", "n_ctx")
    if family in {"xlnet", "vit", "deit"} or positions is None:
        return None
    positions = int(positions)
    if family in _PADDING_OFFSET_FAMILIES:
        positions -= int(_get(config, "pad_token_id", default=1)) + 1
    return positions if positions > 0 else None


def _hub_like(name: str) -> bool:
    """Whether ``name`` looks like a Hub id rather than a local path."""
    return bool(name) and not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def model_features_from_config(config: dict[str, Any], *, model_id: str | None = None) -> dict[str, Any]:
    """The ``Model`` enrichment fields a Hugging Face ``config.json`` determines.

    Args:
        config: the parsed ``config.json``; nested ``text_config`` is used when the top level has no text fields.
        model_id: the checkpoint's Hub id, when known; refines name-dependent fields (DeBERTaV3 vs V2, domain) and keeps
            ``base_model`` from pointing at the model itself.

    Returns:
        A dict with keys among ``family, arch_type, n_params, n_layers, hidden_size, n_heads, vocab_size,
        max_positions, pretraining_objective, pretraining_domain, base_model, upstream_task``; what the config cannot
        tell is left out. ``n_params`` follows the module's convention (base model, no task or LM head).

    Raises:
        TypeError: ``config`` is not a dict.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    if _hidden(config) is None and isinstance(config.get("text_config"), dict):
        config = {
            **config["text_config"],
            "model_type": config["text_config"].get("model_type", config.get("model_type")),
        }
    family = _family(config)
    name_or_path = str(config.get("_name_or_path") or "")
    name = (model_id or name_or_path).lower()
    out: dict[str, Any] = {
        "family": family,
        "arch_type": _arch_type(config, family),
        "n_layers": _layers(config),
        "hidden_size": _hidden(config),
        "n_heads": _heads(config),
        "vocab_size": config.get("vocab_size"),
        "max_positions": _max_positions(config, family),
        "pretraining_objective": _objective(family, name, config),
        "pretraining_domain": _domain_hint(name),
    }
    count = count_parameters(config)
    if count is not None:
        out["n_params"] = count.n_params
    if _hub_like(name_or_path) and model_id and canonical_model_id(name_or_path) != canonical_model_id(model_id):
        out["base_model"] = canonical_model_id(name_or_path)
    task = config.get("finetuning_task")
    if isinstance(task, str) and task.strip():
        out["upstream_task"] = canonical_dataset(task)
    return {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in out.items() if v is not None}


# ----------------------------------------------------------------------------------------------------------------------
# Inference from a Hub id alone

# (pattern on the lower-cased id, family, variant) in priority order: more specific names first.
_ID_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (r"distilroberta", "roberta", "distil"),
    (r"distilbert", "distilbert", "default"),
    (r"distilgpt2", "gpt2", "distil"),
    (r"xlm-?roberta|xlmr\b|xlm-r\b", "xlm-roberta", "default"),
    (r"bertweet|roberta|codebert|phobert", "roberta", "default"),
    (r"camembert", "camembert", "default"),
    (r"m?deberta-?v[23]", "deberta-v2", "default"),
    (r"deberta", "deberta", "default"),
    (r"albert", "albert", "default"),
    (r"electra|electricidad", "electra", "default"),
    (r"mpnet", "mpnet", "default"),
    (r"xlnet", "xlnet", "default"),
    (r"\bmt5", "mt5", "v1.1"),
    (r"flan-?t5|t5-?v1[._]1|t5-.*lm-?adapt|\bt0", "t5", "v1.1"),
    (r"\bt5|/t5", "t5", "default"),
    (r"mbart", "mbart", "default"),
    (r"\bbart", "bart", "default"),
    (r"gpt-?neox|pythia", "gpt-neox", "default"),
    (r"gpt-?neo", "gpt-neo", "default"),
    (r"gpt2|gpt-2", "gpt2", "default"),
    (r"\bopt-\d", "opt", "default"),
    (r"llama", "llama", "default"),
    (r"mistral", "mistral", "default"),
    (r"qwen2", "qwen2", "default"),
    (r"minilm|tinybert|bert", "bert", "default"),
    (r"\bdeit", "deit", "default"),
    (r"\bbeit", "beit", "default"),
    (r"\bvit|vision-?transformer", "vit", "default"),
    (r"swin", "swin", "default"),
    (r"convnext", "convnext", "default"),
    (r"resnet", "resnet", "default"),
)

# (layers, hidden, heads) per family variant and size word.
_BERT_SIZES = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8),
               "base": (12, 768, 12), "large": (24, 1024, 16)}  # fmt: skip
_ENCODER_SIZES = {"base": (12, 768, 12), "large": (24, 1024, 16)}
_SIZE_TABLE: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {
    ("bert", "default"): _BERT_SIZES,
    ("roberta", "default"): _ENCODER_SIZES,
    ("roberta", "distil"): {"base": (6, 768, 12)},
    ("xlm-roberta", "default"): _ENCODER_SIZES,
    ("camembert", "default"): _ENCODER_SIZES,
    ("deberta", "default"): _ENCODER_SIZES,
    ("mpnet", "default"): {"base": (12, 768, 12)},
    ("xlnet", "default"): _ENCODER_SIZES,
    ("distilbert", "default"): {"base": (6, 768, 12)},
    ("albert", "default"): {"base": (12, 768, 12), "large": (24, 1024, 16), "xlarge": (24, 2048, 16),
                            "xxlarge": (12, 4096, 64)},
    ("electra", "default"): {"small": (12, 256, 4), "base": (12, 768, 12), "large": (24, 1024, 16)},
    ("deberta-v2", "default"): {"xsmall": (12, 384, 6), "small": (6, 768, 12), "base": (12, 768, 12),
                                "large": (24, 1024, 16), "xlarge": (24, 1536, 24), "xxlarge": (48, 1536, 24)},
    ("t5", "default"): {"small": (6, 512, 8), "base": (12, 768, 12), "large": (24, 1024, 16), "3b": (24, 1024, 32),
                        "11b": (24, 1024, 128)},
    ("t5", "v1.1"): {"small": (8, 512, 6), "base": (12, 768, 12), "large": (24, 1024, 16), "xl": (24, 2048, 32),
                     "3b": (24, 2048, 32), "xxl": (24, 4096, 64), "11b": (24, 4096, 64)},
    ("mt5", "v1.1"): {"small": (8, 512, 6), "base": (12, 768, 12), "large": (24, 1024, 16), "xl": (24, 2048, 32),
                      "xxl": (24, 4096, 64)},
    ("bart", "default"): {"base": (6, 768, 12), "large": (12, 1024, 16)},
    ("gpt2", "default"): {"small": (12, 768, 12), "medium": (24, 1024, 16), "large": (36, 1280, 20),
                          "xl": (48, 1600, 25)},
    ("gpt2", "distil"): {"small": (6, 768, 12)},
    ("vit", "default"): {"tiny": (12, 192, 3), "small": (12, 384, 6), "base": (12, 768, 12), "large": (24, 1024, 16),
                         "huge": (32, 1280, 16)},
    ("deit", "default"): {"tiny": (12, 192, 3), "small": (12, 384, 6), "base": (12, 768, 12)},
    ("beit", "default"): {"base": (12, 768, 12), "large": (24, 1024, 16)},
}  # fmt: skip
_SHAPE_LETTERS = (("n_layers", "l"), ("hidden_size", "h"), ("n_heads", "a"))
_SIZE_WORDS = r"xxsmall|xsmall|small|base|medium|large|xlarge|xxlarge|xxl|xl|tiny|mini|huge|3b|11b"


def _size_word(name: str, family: str, variant: str) -> str | None:
    match = re.search(rf"(?:^|[-_/.])({_SIZE_WORDS})(?=$|[-_/.\d])", name)
    if match:
        return match.group(1)
    if family == "gpt2" and re.search(r"(?:^|/)(distil)?gpt2$", name):
        return "small"
    if family in {"distilbert"} or (family, variant) in {("roberta", "distil")}:
        return "base"
    return None


def infer_features_from_id(model_id: str) -> dict[str, Any]:
    """Family, architecture type and size hints from a Hub id alone, for runs whose source carries no config.

    Recognizes family names (``bert-base-uncased``, ``roberta-large``, ``t5-small``, ``deberta-v3-base``,
    ``xlm-roberta-base``, ``distilbert`` ...), size words (tiny ... xxl, 3b, 11b), explicit shapes such as
    ``L-4_H-256_A-4`` or ``L6-H384``, and a few pre-training domain names (bertweet, biobert, codebert ...).

    Args:
        model_id: a Hub id or model name.

    Returns:
        A dict with the ``Model`` enrichment keys it could infer (``family``, ``arch_type``,
        ``pretraining_objective`` and, when a size or an explicit shape is named, ``n_layers``, ``hidden_size``,
        ``n_heads``); empty when nothing is recognized. No parameter count is inferred.
    """
    name = canonical_model_id(model_id).lower()
    out: dict[str, Any] = {}
    family = variant = None
    for pattern, fam, var in _ID_FAMILIES:
        if re.search(pattern, name):
            family, variant = fam, var
            break
    if family is not None:
        out["family"] = family
        out["arch_type"] = _arch_type({}, family)
        out["pretraining_objective"] = _objective(family, name, {})
    # Explicit shapes (``L-4_H-256_A-4``, ``L6-H384``, ``MiniLM-L-4``) win over size words (a distilled
    # ``...-L6-H384-distilled-from-XLMR-Large`` is not large). A layer count alone is common enough in names of
    # distilled models to trust; a width or head count only next to a layer count (``-h100`` may be a GPU).
    explicit = {key: re.search(rf"(?:^|[-_/]){letter}-?(\d+)(?=$|[-_/])", name) for key, letter in _SHAPE_LETTERS}
    if explicit["n_layers"] and int(explicit["n_layers"].group(1)) > 0:
        out.update({key: int(m.group(1)) for key, m in explicit.items() if m and int(m.group(1)) > 0})
    elif family is not None:
        size = _size_word(name, family, variant or "default")
        shape = _SIZE_TABLE.get((family, variant or "default"), {}).get(size or "")
        if shape is not None:
            out["n_layers"], out["hidden_size"], out["n_heads"] = shape
    domain = _domain_hint(name)
    if domain:
        out["pretraining_domain"] = domain
    return {k: v for k, v in out.items() if v is not None}
