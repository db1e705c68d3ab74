"""Build ``collector/data/models.csv``, the model registry table, from public configs and the public metadatasets.

Rerunnable: ``python data/build_model_registry.py [--public-data DIR] [--out FILE]``. The public data folder defaults
to ``$METAML_PUBLIC_DATA``, else ``../shared/data`` beside the repository. Nothing from the sources is copied; the
table holds derived features only.

Where each row comes from (``feature_source``):

* ``config``: the checkpoint's public default ``config.json``, written below as a dict of its architecture fields
  (``KNOWN``); ``n_params`` is counted analytically by ``collector.features._model.count_parameters``. Published counts
  that confirm the analytic count are kept in ``PUBLISHED_COUNTS`` and checked on every build.
* ``transfergraph``: TransferGraph's ``model_config_dataset.csv`` (text and image). Its ``number_of_parameters`` is the
  count of the checkpoint *with* its classification head, so the base-model count is that number minus the head
  (``sequence_classification_head_params``; for vision ``output_shape x labels + labels``). Shapes (layers, width,
  heads, vocabulary) come from a known config when the checkpoint is config-equivalent to one: same family and the
  head-less count equal to that config's count, or equal up to a whole number of vocabulary rows.
* ``inferred``: only the Hub id was available (``infer_features_from_id``).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from collector.features._model import (  # noqa: E402
    count_parameters,
    infer_features_from_id,
    model_features_from_config,
    normalize_family,
    sequence_classification_head_params,
)
from collector.features._registry import ModelRegistry  # noqa: E402
from collector.schema._vocab import canonical_dataset, canonical_model_id  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------------
# Public default configs: the architecture fields of each checkpoint's config.json, built by small helpers


def _bert(vocab: int, h: int = 768, layers: int = 12, heads: int = 12, ffn: int = 3072, **kw: Any) -> dict[str, Any]:
    config = dict(model_type="bert", vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, pad_token_id=0)
    config.update(num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512, type_vocab_size=2)
    return config | kw


def _roberta(vocab: int = 50265, model_type: str = "roberta", **kw: Any) -> dict[str, Any]:
    base = {"model_type": model_type, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1}
    return _bert(vocab, **(base | kw))


_LARGE = {"h": 1024, "layers": 24, "heads": 16, "ffn": 4096}


def _albert(h: int, layers: int, heads: int, ffn: int) -> dict[str, Any]:
    extra = {"model_type": "albert", "embedding_size": 128, "num_hidden_groups": 1, "inner_group_num": 1}
    return _bert(30000, h, layers, heads, ffn, **extra)


def _electra(emb: int, h: int, layers: int, heads: int, ffn: int) -> dict[str, Any]:
    return _bert(30522, h, layers, heads, ffn, model_type="electra", embedding_size=emb)


def _distilbert(vocab: int) -> dict[str, Any]:
    config = dict(model_type="distilbert", vocab_size=vocab, dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
    return config | {"max_position_embeddings": 512}


def _deberta(vocab: int, h: int, layers: int, heads: int, ffn: int, v3: bool) -> dict[str, Any]:
    config = _bert(vocab, h, layers, heads, ffn, model_type="deberta-v2" if v3 else "deberta", type_vocab_size=0)
    config.update(relative_attention=True, position_biased_input=False, max_relative_positions=-1)
    config.update(pos_att_type=["p2c", "c2p"])
    if v3:
        config.update(position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True)
    return config


def _t5(d: int, d_ff: int, layers: int, heads: int, v11: bool, d_kv: int = 64, **kw: Any) -> dict[str, Any]:
    config = dict(model_type="t5", vocab_size=32128, d_model=d, d_kv=d_kv, d_ff=d_ff, num_heads=heads)
    config.update(num_layers=layers, num_decoder_layers=layers, relative_attention_num_buckets=32)
    if v11:
        config.update(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    else:
        config.update(feed_forward_proj="relu", n_positions=512)
    return config | {"is_encoder_decoder": True} | kw


def _gpt2(h: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(model_type="gpt2", vocab_size=50257, n_embd=h, n_layer=layers, n_head=heads, n_positions=1024)


def _bart(d: int, layers: int, heads: int) -> dict[str, Any]:
    config = dict(model_type="bart", vocab_size=50265, d_model=d, encoder_layers=layers, decoder_layers=layers)
    config.update(encoder_attention_heads=heads, decoder_attention_heads=heads, max_position_embeddings=1024)
    return config | {"encoder_ffn_dim": 4 * d, "decoder_ffn_dim": 4 * d, "is_encoder_decoder": True}


def _xlnet(d: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(model_type="xlnet", vocab_size=32000, d_model=d, n_layer=layers, n_head=heads, d_head=64, d_inner=4 * d)


def _opt(h: int, layers: int, heads: int, proj: int, pre_ln: bool) -> dict[str, Any]:
    config = dict(model_type="opt", vocab_size=50272, hidden_size=h, num_hidden_layers=layers, ffn_dim=4 * h)
    config.update(num_attention_heads=heads, max_position_embeddings=2048, word_embed_proj_dim=proj)
    return config | {"do_layer_norm_before": pre_ln}


def _llama(vocab: int, h: int, ffn: int, layers: int, heads: int, kv: int, **kw: Any) -> dict[str, Any]:
    config = dict(model_type="llama", vocab_size=vocab, hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers)
    return config | {"num_attention_heads": heads, "num_key_value_heads": kv} | kw


def _vit(h: int, layers: int, heads: int, image: int = 224, patch: int = 16) -> dict[str, Any]:
    config = dict(model_type="vit", hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads)
    return config | {"intermediate_size": 4 * h, "image_size": image, "patch_size": patch, "num_channels": 3}


class Known(NamedTuple):
    """A checkpoint with a public config: its config, pre-training domain, base, upstream task and a note."""

    config: dict[str, Any]
    domain: str | None = None
    base: str | None = None
    upstream: str | None = None
    note: str = ""


_BOOKS_WIKI = "books+wikipedia"
_WEB_BOOKS = "web+books"
_MULTI_WIKI = "multilingual-wikipedia"
_MULTI_WEB = "multilingual-web"
_T5_V11 = {"small": (512, 1024, 8, 6), "base": (768, 2048, 12, 12), "large": (1024, 2816, 24, 16)}
_T5_V11_XL = {"xl": (2048, 5120, 24, 32), "xxl": (4096, 10240, 24, 64)}
_ALBERT = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "xlarge": (2048, 24, 16, 8192)}
_ALBERT_XX = {"xxlarge": (4096, 12, 64, 16384)}
_MPNET = _bert(30527, model_type="mpnet", max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
_GATED = "gated-GELU FFN, untied LM head"
_LM_HEAD = "untied LM head (131,072,000) not counted"

KNOWN: dict[str, Known] = {
    # BERT and BERT-shaped
    "bert-base-uncased": Known(_bert(30522), _BOOKS_WIKI),
    "bert-base-cased": Known(_bert(28996), _BOOKS_WIKI),
    "bert-large-uncased": Known(_bert(30522, **_LARGE), _BOOKS_WIKI),
    "bert-large-cased": Known(_bert(28996, **_LARGE), _BOOKS_WIKI),
    "bert-large-uncased-whole-word-masking": Known(_bert(30522, **_LARGE), _BOOKS_WIKI, note="whole-word masking"),
    "bert-large-cased-whole-word-masking": Known(_bert(28996, **_LARGE), _BOOKS_WIKI, note="whole-word masking"),
    "bert-base-multilingual-cased": Known(_bert(119547), _MULTI_WIKI, note="104 languages"),
    "bert-base-multilingual-uncased": Known(_bert(105879), _MULTI_WIKI, note="102 languages"),
    "bert-base-chinese": Known(_bert(21128), "chinese-wikipedia"),
    "google/bert_uncased_L-4_H-256_A-4": Known(_bert(30522, 256, 4, 4, 1024), _BOOKS_WIKI, note="BERT-mini"),
    "microsoft/MiniLM-L12-H384-uncased": Known(_bert(30522, 384, 12, 12, 1536), _BOOKS_WIKI, note="distilled"),
    "google/fnet-base": Known(_bert(32000, model_type="fnet", type_vocab_size=4, pad_token_id=3), "web", note="C4"),
    # DistilBERT
    "distilbert-base-uncased": Known(_distilbert(30522), _BOOKS_WIKI, note="distilled from bert-base-uncased"),
    "distilbert-base-cased": Known(_distilbert(28996), _BOOKS_WIKI, note="distilled from bert-base-cased"),
    "distilbert-base-multilingual-cased": Known(_distilbert(119547), _MULTI_WIKI, note="distilled from mBERT"),
    "distilbert-base-uncased-finetuned-sst-2-english": Known(
        _distilbert(30522), _BOOKS_WIKI, "distilbert-base-uncased", "glue/sst2"
    ),
    # RoBERTa, XLM-R and RoBERTa-shaped
    "roberta-base": Known(_roberta(), _WEB_BOOKS),
    "roberta-large": Known(_roberta(**_LARGE), _WEB_BOOKS),
    "distilroberta-base": Known(_roberta(layers=6), _WEB_BOOKS, note="distilled from roberta-base"),
    "roberta-large-mnli": Known(_roberta(**_LARGE), _WEB_BOOKS, "roberta-large", "glue/mnli"),
    "xlm-roberta-base": Known(_roberta(250002, "xlm-roberta"), _MULTI_WEB, note="CC100"),
    "xlm-roberta-large": Known(_roberta(250002, "xlm-roberta", **_LARGE), _MULTI_WEB, note="CC100"),
    "nreimers/mMiniLMv2-L6-H384-distilled-from-XLMR-Large": Known(
        _roberta(250002, "xlm-roberta", h=384, layers=6, ffn=1536), _MULTI_WEB, note="distilled from XLM-R large"
    ),
    "vinai/bertweet-base": Known(_roberta(64001, max_position_embeddings=130), "social-media", note="850M tweets"),
    "vinai/bertweet-covid19-base-cased": Known(
        _roberta(64001, max_position_embeddings=130), "social-media", "vinai/bertweet-base", note="COVID-19 tweets"
    ),
    "vinai/bertweet-covid19-base-uncased": Known(
        _roberta(64001, max_position_embeddings=130), "social-media", "vinai/bertweet-base", note="COVID-19 tweets"
    ),
    "camembert-base": Known(_roberta(32005, "camembert"), "french-web", note="French OSCAR"),
    "facebook/data2vec-text-base": Known(_roberta(model_type="data2vec-text"), _WEB_BOOKS, note="self-distillation"),
    "microsoft/codebert-base": Known(_roberta(), "code", "roberta-base", note="bimodal code/text pre-training"),
    # DeBERTa, DeBERTaV3
    "microsoft/deberta-base": Known(_deberta(50265, 768, 12, 12, 3072, v3=False), _WEB_BOOKS),
    "microsoft/deberta-large": Known(_deberta(50265, 1024, 24, 16, 4096, v3=False), _WEB_BOOKS),
    "microsoft/deberta-v3-xsmall": Known(_deberta(128100, 384, 12, 6, 1536, v3=True), _WEB_BOOKS),
    "microsoft/deberta-v3-small": Known(_deberta(128100, 768, 6, 12, 3072, v3=True), _WEB_BOOKS),
    "microsoft/deberta-v3-base": Known(_deberta(128100, 768, 12, 12, 3072, v3=True), _WEB_BOOKS),
    "microsoft/deberta-v3-large": Known(_deberta(128100, 1024, 24, 16, 4096, v3=True), _WEB_BOOKS),
    "microsoft/mdeberta-v3-base": Known(_deberta(251000, 768, 12, 12, 3072, v3=True), _MULTI_WEB, note="CC100"),
    # ALBERT v1 and v2 (same shapes; v2 changed dropout and training length)
    **{
        f"albert-{size}-{version}": Known(_albert(*shape), _BOOKS_WIKI, note="weights shared across layers")
        for version in ("v1", "v2")
        for size, shape in (_ALBERT | _ALBERT_XX).items()
    },
    # ELECTRA discriminators
    "google/electra-small-discriminator": Known(_electra(128, 256, 12, 4, 1024), _BOOKS_WIKI),
    "google/electra-base-discriminator": Known(_electra(768, 768, 12, 12, 3072), _BOOKS_WIKI),
    "google/electra-large-discriminator": Known(_electra(1024, 1024, 24, 16, 4096), _BOOKS_WIKI),
    # T5: original (ReLU FFN, tied embeddings, C4 + supervised mixture), v1.1, LM-adapted, FLAN-T5, mT5, T0
    "t5-small": Known(_t5(512, 2048, 6, 8, v11=False), "web", note="C4; original T5"),
    "t5-base": Known(_t5(768, 3072, 12, 12, v11=False), "web", note="C4; original T5"),
    "t5-large": Known(_t5(1024, 4096, 24, 16, v11=False), "web", note="C4; original T5"),
    "t5-3b": Known(_t5(1024, 16384, 24, 32, v11=False, d_kv=128), "web", note="C4; original T5"),
    "t5-11b": Known(_t5(1024, 65536, 24, 128, v11=False, d_kv=128), "web", note="C4; original T5"),
    **{
        f"google/t5-v1_1-{size}": Known(_t5(*shape, v11=True), "web", note=f"C4 only; {_GATED}")
        for size, shape in (_T5_V11 | _T5_V11_XL).items()
    },
    **{
        f"google/t5-{size}-lm-adapt": Known(
            _t5(*shape, v11=True), "web", f"google/t5-v1_1-{size}", note="T5 v1.1 + 100k steps of prefix-LM adaptation"
        )
        for size, shape in (_T5_V11 | {"xl": _T5_V11_XL["xl"]}).items()
    },
    **{
        f"google/flan-t5-{size}": Known(
            _t5(*shape, v11=True), "web", f"google/t5-{size}-lm-adapt", "flan-collection", note="instruction-tuned"
        )
        for size, shape in (_T5_V11 | _T5_V11_XL).items()
    },
    "google/mt5-small": Known(_t5(512, 1024, 8, 6, v11=True, model_type="mt5", vocab_size=250112), _MULTI_WEB),
    "google/mt5-base": Known(_t5(768, 2048, 12, 12, v11=True, model_type="mt5", vocab_size=250112), _MULTI_WEB),
    "bigscience/T0_3B": Known(_t5(*_T5_V11_XL["xl"], v11=True), "web", "google/t5-xl-lm-adapt", "p3"),
    # GPT-2 (WebText, tied LM head)
    "gpt2": Known(_gpt2(768, 12, 12), "web", note="WebText"),
    "gpt2-medium": Known(_gpt2(1024, 24, 16), "web", note="WebText"),
    "gpt2-large": Known(_gpt2(1280, 36, 20), "web", note="WebText"),
    "gpt2-xl": Known(_gpt2(1600, 48, 25), "web", note="WebText"),
    "distilgpt2": Known(_gpt2(768, 6, 12), "web", "gpt2", note="distilled from gpt2 on OpenWebText"),
    # Other families counted exactly
    "facebook/bart-base": Known(_bart(768, 6, 12), _WEB_BOOKS),
    "facebook/bart-large": Known(_bart(1024, 12, 16), _WEB_BOOKS),
    "microsoft/mpnet-base": Known(_MPNET, _WEB_BOOKS, note="masked and permuted pre-training"),
    "sentence-transformers/all-mpnet-base-v2": Known(_MPNET, _WEB_BOOKS, "microsoft/mpnet-base", "sentence-pairs"),
    "sentence-transformers/paraphrase-mpnet-base-v2": Known(_MPNET, _WEB_BOOKS, "microsoft/mpnet-base", "paraphrases"),
    "xlnet-base-cased": Known(_xlnet(768, 12, 12), _WEB_BOOKS),
    "xlnet-large-cased": Known(_xlnet(1024, 24, 16), _WEB_BOOKS),
    "EleutherAI/gpt-neo-125M": Known(
        dict(model_type="gpt_neo", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12)
        | {"max_position_embeddings": 2048},
        "the-pile",
    ),
    "facebook/opt-125m": Known(_opt(768, 12, 12, 768, pre_ln=True), "web"),
    "facebook/opt-350m": Known(_opt(1024, 24, 16, 512, pre_ln=False), "web", note="post-LN; 512-wide embeddings"),
    "meta-llama/Llama-2-7b-hf": Known(
        _llama(32000, 4096, 11008, 32, 32, 32, max_position_embeddings=4096, tie_word_embeddings=False),
        "web",
        note=_LM_HEAD,
    ),
    "mistralai/Mistral-7B-v0.1": Known(
        _llama(
            32000,
            4096,
            14336,
            32,
            32,
            8,
            model_type="mistral",
            tie_word_embeddings=False,
            max_position_embeddings=32768,
        ),
        "web",
        note=_LM_HEAD,
    ),
    "meta-llama/Llama-3.2-3B": Known(
        _llama(128256, 3072, 8192, 28, 24, 8, head_dim=128, tie_word_embeddings=True, max_position_embeddings=131072),
        "web",
        note="tied LM head",
    ),
    "Qwen/Qwen2-0.5B": Known(
        _llama(151936, 896, 4864, 24, 14, 2, model_type="qwen2", tie_word_embeddings=True), "web", note="Q/K/V biases"
    ),
    # Vision transformers met in TransferGraph's image table (ImageNet-21k pre-training, ImageNet-1k fine-tuning)
    "google/vit-base-patch16-224-in21k": Known(_vit(768, 12, 12), "imagenet-21k"),
    "google/vit-base-patch16-224": Known(
        _vit(768, 12, 12), "imagenet-21k", "google/vit-base-patch16-224-in21k", "imagenet"
    ),
    "google/vit-base-patch16-384": Known(
        _vit(768, 12, 12, image=384), "imagenet-21k", "google/vit-base-patch16-224-in21k", "imagenet"
    ),
    "google/vit-base-patch32-384": Known(_vit(768, 12, 12, image=384, patch=32), "imagenet-21k", None, "imagenet"),
    "google/vit-large-patch16-224": Known(_vit(1024, 24, 16), "imagenet-21k", None, "imagenet"),
    "google/vit-large-patch32-384": Known(_vit(1024, 24, 16, image=384, patch=32), "imagenet-21k", None, "imagenet"),
}

#: Published base-model counts that confirm the analytic count (all found in public code; see the test module).
PUBLISHED_COUNTS: dict[str, int] = {
    "bert-base-uncased": 109_482_240,
    "bert-base-cased": 108_310_272,
    "bert-large-uncased": 335_141_888,
    "bert-large-cased": 333_579_264,
    "bert-base-chinese": 102_267_648,
    "bert-base-multilingual-cased": 177_853_440,
    "distilbert-base-uncased": 66_362_880,
    "roberta-base": 124_645_632,
    "roberta-large": 355_359_744,
    "xlm-roberta-base": 278_043_648,
    "xlm-roberta-large": 559_890_432,
    "microsoft/deberta-base": 138_601_728,
    "microsoft/deberta-large": 405_163_008,
    "microsoft/deberta-v3-small": 141_304_320,
    "microsoft/deberta-v3-base": 183_831_552,
    "microsoft/deberta-v3-large": 434_012_160,
    "albert-base-v2": 11_683_584,
    "albert-large-v2": 17_683_968,
    "albert-xlarge-v2": 58_724_864,
    "albert-xxlarge-v2": 222_595_584,
    "google/electra-small-discriminator": 13_483_008,
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
    "t5-large": 737_668_096,
    "t5-3b": 2_851_598_336,
    "t5-11b": 11_307_321_344,
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "facebook/bart-base": 139_420_416,
    "facebook/bart-large": 406_291_456,
    "microsoft/mpnet-base": 109_486_464,
    "EleutherAI/gpt-neo-125M": 125_198_592,
    "facebook/opt-125m": 125_239_296,
    "Qwen/Qwen2-0.5B": 494_032_768,
    "meta-llama/Llama-3.2-3B": 3_212_749_824,
}
#: Published counts that include an untied LM head (checked with ``with_lm_head=True``).
PUBLISHED_COUNTS_WITH_LM_HEAD: dict[str, int] = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "google/flan-t5-base": 247_577_856,
}


def known_rows() -> dict[str, dict[str, Any]]:
    """Registry rows for the checkpoints in ``KNOWN``, checked against ``PUBLISHED_COUNTS``.

    Returns:
        ``model_id -> row``.

    Raises:
        AssertionError: an analytic count disagrees with a published one.
    """
    rows = {}
    for model_id, (config, domain, base, upstream, note) in KNOWN.items():
        features = model_features_from_config(config, model_id=model_id)
        count = count_parameters(config)
        notes = [note] if note else []
        if model_id in PUBLISHED_COUNTS:
            assert count is not None and count.n_params == PUBLISHED_COUNTS[model_id], model_id
            notes.append("count = published")
        if model_id in PUBLISHED_COUNTS_WITH_LM_HEAD:
            with_head = count_parameters(config, with_lm_head=True)
            assert with_head is not None and with_head.n_params == PUBLISHED_COUNTS_WITH_LM_HEAD[model_id], model_id
            notes.append(f"with LM head {with_head.n_params:,} = published")
        rows[model_id] = {
            **features,
            "pretraining_domain": domain,
            "base_model": base,
            "upstream_task": upstream,
            "feature_source": "config",
            "note": "; ".join(notes),
        }
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# TransferGraph

#: TransferGraph ``dataset`` values that name a pre-training corpus, not a task the checkpoint was fine-tuned on.
PRETRAINING_CORPORA = frozenset({"wikipedia", "bertweet-covid19-cased-tweet-data"})

#: Bases evident from a checkpoint's name whose config is not in ``KNOWN`` (other vocabularies, other languages).
BASE_BY_NAME: dict[str, str] = {
    "JonatanGk/roberta-base-bne-finetuned-cyberbullying-spanish": "PlanTL-GOB-ES/roberta-base-bne",
    "robertou2/roberta-base-bne-finetuned-amazon_reviews_multi": "PlanTL-GOB-ES/roberta-base-bne",
    "JonatanGk/roberta-base-ca-finetuned-hate-speech-offensive-catalan": "projecte-aina/roberta-base-ca",
    "Recognai/bert-base-spanish-wwm-cased-xnli": "dccuchile/bert-base-spanish-wwm-cased",
    "mrm8488/electricidad-base-finetuned-pawsx-es": "mrm8488/electricidad-base-discriminator",
    "milyiyo/selectra-small-finetuned-amazon-review": "Recognai/selectra_small",
    "CAMeL-Lab/bert-base-arabic-camelbert-da-sentiment": "CAMeL-Lab/bert-base-arabic-camelbert-da",
    "CAMeL-Lab/bert-base-arabic-camelbert-mix-did-nadi": "CAMeL-Lab/bert-base-arabic-camelbert-mix",
    "classla/bcms-bertic-parlasent-bcs-ter": "classla/bcms-bertic",
    "vesteinn/XLMR-ENIS-finetuned-cola": "vesteinn/XLMR-ENIS",
    "nreimers/mmarco-mMiniLMv2-L6-H384-v1": "nreimers/mMiniLMv2-L6-H384-distilled-from-XLMR-Large",
    "fgaim/tiroberta-geezswitch": "fgaim/tiroberta-base",
    "ChrisUPM/BioBERT_Re_trained": "dmis-lab/biobert-v1.1",
}
#: Checkpoints pre-trained from scratch (or by a different recipe) although their shape equals a known config's.
NO_BASE = frozenset({"michiyasunaga/LinkBERT-base", "anferico/bert-for-patents", "dhimskyy/wiki-bert"})
#: Organisations whose ImageNet checkpoints in TransferGraph's image table are the original releases.
VISION_BASE_ORGS = frozenset({"google", "microsoft", "facebook", "Visual-Attention-Network"})
_POOLED_VISION = frozenset({"vit", "deit"})  # their classification models drop the base model's pooler


def _row_width(config: dict[str, Any]) -> int:
    """Parameters one vocabulary row costs: the (factorized) embedding width."""
    return int(config.get("embedding_size") or config.get("dim") or config.get("hidden_size") or config["d_model"])


def _short(model_id: str) -> str:
    return model_id.split("/")[-1].lower()


def _named_in(known_id: str, model_id: str) -> bool:
    """Whether ``known_id``'s name appears in ``model_id`` as a whole hyphenated/underscored token run."""
    return re.search(rf"(?:^|[/_\-.]){re.escape(_short(known_id))}(?=$|[/_\-.])", model_id.lower()) is not None


def _candidates(family: str, model_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Known configs of ``family`` (labelled by id), plus copies with the layer count a name like ``L-4`` states."""
    hints = infer_features_from_id(model_id)
    out: list[tuple[str, dict[str, Any]]] = []
    for known_id, entry in KNOWN.items():
        config = entry.config
        if normalize_family(config["model_type"]) != family:
            continue
        out.append((known_id, config))
        layers = hints.get("n_layers")
        key = "n_layers" if family == "distilbert" else "num_hidden_layers"
        if layers and key in config and layers != config[key]:
            out.append((f"{known_id} with {layers} layers", {**config, key: layers}))
    if "hidden_size" in hints:  # a name that states the width rules out other widths
        out = [(k, c) for k, c in out if (c.get("hidden_size") or c.get("dim")) == hints["hidden_size"]] or out
    return out


def match_transfergraph_text(model_id: str, family: str, n_labels: int, tg_count: int) -> dict[str, Any]:
    """Reconcile one TransferGraph text checkpoint with the known configs.

    Args:
        model_id: the checkpoint's id.
        family: normalized ``model_type``.
        n_labels: TransferGraph's ``number_of_labels`` (the head its count includes).
        tg_count: TransferGraph's ``number_of_parameters``.

    Returns:
        ``{"config": ..., "exact_ids": [...], "how": ...}`` where ``config`` is the config-equivalent config (with the
        vocabulary solved from the count when only that differs) or ``None``, ``exact_ids`` the known ids whose config
        reproduces the count exactly, and ``how`` one of ``exact``, ``vocab-derived``, ``none``.
    """
    exact: list[tuple[str, dict[str, Any]]] = []
    derived: list[tuple[tuple[bool, bool, float], dict[str, Any]]] = []  # (rank, config with the solved vocabulary)
    hints = infer_features_from_id(model_id)
    for known_id, config in _candidates(family, model_id):
        head = sequence_classification_head_params(config, n_labels)
        count = count_parameters(config)
        if head is None or count is None or not count.exact:
            continue
        target = tg_count - head
        if target == count.n_params:
            exact.append((known_id, config))
            continue
        rows, rest = divmod(target - count_parameters({**config, "vocab_size": 0}).n_params, _row_width(config))
        if rest == 0 and 1000 <= rows <= 300_000:
            solved = {**config, "vocab_size": rows}
            shape = model_features_from_config(solved)
            rank = (
                any(k in hints and hints[k] != shape.get(k) for k in ("n_layers", "hidden_size")),  # name disagrees
                (shape.get("n_layers"), shape.get("hidden_size")) != (12, 768),  # not the common base shape
                abs(math.log(rows / config["vocab_size"])),  # vocabulary far from the config's own
            )
            derived.append((rank, solved))
    if exact:
        return {"config": exact[0][1], "exact_ids": [k for k, _ in exact], "how": "exact"}
    if derived:
        # Several shapes can "fit" (any width dividing the remainder). Prefer the shape the name states, then the
        # common base shape, then the one whose solved vocabulary is closest to its own known vocabulary.
        rank, config = min(derived, key=lambda item: item[0])
        if rank[2] < math.log(8):
            return {"config": config, "exact_ids": [], "how": "vocab-derived"}
    return {"config": None, "exact_ids": [], "how": "none"}


def _pick_base(model_id: str, exact_ids: Sequence[str]) -> tuple[str | None, str]:
    """The base checkpoint among config-equivalent known ids: named in the id, else the only original release."""
    if model_id in BASE_BY_NAME:
        return BASE_BY_NAME[model_id], "base_model by name"
    if model_id in NO_BASE or model_id in exact_ids:
        return None, ""
    exact_ids = [k for k in exact_ids if k in KNOWN]
    named = [k for k in exact_ids if _named_in(k, model_id)]
    if named:
        return max(named, key=len), "base_model by name, count confirmed"
    originals = [k for k in exact_ids if KNOWN[k].base is None and "whole-word-masking" not in k]
    if len(originals) == 1:
        return originals[0], "base_model by architecture+size (config-equivalent)"
    return None, ""


def _upstream(dataset: Any) -> str | None:
    if not isinstance(dataset, str) or not dataset.strip() or dataset.strip() in PRETRAINING_CORPORA:
        return None
    return canonical_dataset(dataset)


def transfergraph_text_rows(path: Path, known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows for the checkpoints of TransferGraph's ``sequence_classification/model_config_dataset.csv``.

    Args:
        path: the CSV file.
        known: rows already built from public configs (their base rows supply domains; held ids get a check note).

    Returns:
        ``model_id -> row`` for checkpoints not in ``known``; ``known`` rows of checkpoints met here gain a note.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record in pd.read_csv(path).itertuples(index=False):
        model_id = canonical_model_id(str(record.model))
        family = normalize_family(str(record.model_type))
        n_labels, tg_count = int(record.number_of_labels), int(record.number_of_parameters)
        match = match_transfergraph_text(model_id, family, n_labels, tg_count)
        config = match["config"]
        if model_id in known:
            agrees = config is not None and model_id in match["exact_ids"]
            known[model_id]["note"] = "; ".join(
                filter(
                    None,
                    [
                        known[model_id].get("note"),
                        f"TransferGraph count with {n_labels}-label head {'matches' if agrees else 'differs'}",
                    ],
                )
            )
            continue
        notes = [f"TransferGraph {record.architectures}, {n_labels} labels"]
        features: dict[str, Any] = {"family": family}
        if config is not None:
            features.update(model_features_from_config(config, model_id=model_id))
            features["n_params"] = tg_count - sequence_classification_head_params(config, n_labels)
            base, how = _pick_base(model_id, match["exact_ids"])
            if match["how"] == "exact":
                ids = match["exact_ids"]
                notes.append(f"shape = {base if base in ids else (ids[0] if ids else 'a known config')}")
            else:
                notes.append("shape of a known config, vocabulary solved from the count")
        else:
            hints = infer_features_from_id(model_id)
            features.update({k: v for k, v in hints.items() if k in {"arch_type", "pretraining_objective"}})
            base, how = BASE_BY_NAME.get(model_id), "base_model by name" if model_id in BASE_BY_NAME else ""
            head = (
                sequence_classification_head_params(
                    {"model_type": family, "hidden_size": hints["hidden_size"]}, n_labels
                )
                if "hidden_size" in hints
                else None
            )
            if head is not None:
                features["n_params"] = tg_count - head
                features["hidden_size"] = hints["hidden_size"]
                notes.append("shape not resolved; head removed assuming the width the name states")
            else:
                features["n_params"] = tg_count
                notes.append("shape not resolved; n_params includes the classification head")
        for key, value in model_features_from_config({"model_type": family}).items():
            features.setdefault(key, value)  # arch_type and objective from the family alone
        domain = (known.get(base or "", {}).get("pretraining_domain") if base else None) or features.get(
            "pretraining_domain"
        )
        if isinstance(record.dataset, str) and record.dataset in PRETRAINING_CORPORA:
            notes.append(f"TransferGraph dataset '{record.dataset}' is the pre-training corpus")
        rows[model_id] = {
            **features,
            "pretraining_domain": domain,
            "base_model": base,
            "upstream_task": _upstream(record.dataset),
            "feature_source": "transfergraph",
            "note": "; ".join(filter(None, [*notes, how])),
        }
    return rows


_CONVOLUTIONAL = frozenset({"convnext", "resnet", "van"})  # no transformer layers: no arch_type, no hidden_size


def _objective_of(family: str) -> str | None:
    return model_features_from_config({"model_type": family}).get("pretraining_objective")


def _vision_family(record: Any) -> str | None:
    if isinstance(record.model_type, str):
        return normalize_family(record.model_type)
    archs = ast.literal_eval(record.architectures) if isinstance(record.architectures, str) else []
    return infer_features_from_id(archs[0]).get("family") if archs else None


def _vision_base_count(record: Any, family: str) -> int | None:
    """TransferGraph's image count minus the classifier(s), plus the pooler ViT/DeiT classifiers drop."""
    if not isinstance(record.number_of_parameters, float) or math.isnan(record.number_of_parameters):
        return None
    width, n = int(record["output_shape"]), int(record["#labels"])
    heads = 2 if "WithTeacher" in str(record.architectures) else 1
    count = int(record.number_of_parameters) - heads * (width * n + n)
    return count + (width * width + width if family in _POOLED_VISION else 0)


def transfergraph_image_rows(path: Path, known: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows for the checkpoints of TransferGraph's ``image_classification/model_config_dataset.csv``.

    Vision models get partial features: family, arch type, the base count (TransferGraph's count minus the classifier),
    the final feature width as ``hidden_size`` for transformer families, layers/heads from a config-equivalent ViT or
    from the name, and a base checkpoint by name or by unique architecture+size match among the original releases.

    Args:
        path: the CSV file.
        known: rows already built from public configs.

    Returns:
        ``model_id -> row`` for checkpoints not in ``known``.
    """
    table = pd.read_csv(path)
    records = [(canonical_model_id(str(r["model"])), r, _vision_family(r)) for _, r in table.iterrows()]
    pool: dict[str, tuple[str, int]] = {}  # original releases: id -> (family, base count)
    for model_id, record, family in records:
        count = _vision_base_count(record, family) if family else None
        if count is not None and model_id.split("/")[0] in VISION_BASE_ORGS:
            pool[model_id] = (family, count)
    known_vit = {k: count_parameters(v.config).n_params for k, v in KNOWN.items() if v.config["model_type"] == "vit"}
    rows: dict[str, dict[str, Any]] = {}
    for model_id, record, family in records:
        count = _vision_base_count(record, family) if family else None
        if model_id in known:
            agrees = count == known[model_id].get("n_params")
            known[model_id]["note"] = "; ".join(
                filter(None, [known[model_id].get("note"), f"TransferGraph count {'matches' if agrees else 'differs'}"])
            )
            continue
        features: dict[str, Any] = {"family": family, "n_params": count}
        same_vit: list[str] = []
        notes = [f"TransferGraph {ast.literal_eval(record.architectures)[0]}, {int(record['#labels'])} labels"]
        if family:
            hints = infer_features_from_id(model_id)
            features["arch_type"] = None if family in _CONVOLUTIONAL else "encoder"
            features["pretraining_objective"] = _objective_of(family) or "supervised"
            if family not in _CONVOLUTIONAL:
                features["hidden_size"] = int(record.output_shape)
            same_vit = [k for k, n in known_vit.items() if n == count]
            if same_vit:
                features.update(model_features_from_config(KNOWN[same_vit[0]].config))
                notes.append(f"shape = {same_vit[0]}")
            elif hints.get("hidden_size") == features.get("hidden_size"):
                features.update({k: hints[k] for k in ("n_layers", "n_heads") if k in hints})
        else:
            notes.append("no model_type or count in TransferGraph; features from the architecture name only")
            features.update({k: v for k, v in infer_features_from_id(model_id).items() if k != "pretraining_domain"})
            features.setdefault("family", "vit" if "ViT" in str(record.architectures) else None)
        named = [k for k in [*pool, *known_vit] if k != model_id and _named_in(k, model_id)]
        same_size = [k for k, (f, n) in pool.items() if k != model_id and f == family and n == count]
        base, how = None, ""
        if model_id.split("/")[0] not in VISION_BASE_ORGS:
            if named:
                base, how = max(named, key=len), "base_model by name"
            elif len(same_size) == 1 and not same_vit:
                base, how = same_size[0], "base_model by architecture+size"
        dataset = record.dataset if isinstance(record.dataset, str) else None
        rows[model_id] = {
            **features,
            "base_model": base,
            "upstream_task": canonical_dataset(dataset) if dataset else None,
            "pretraining_domain": known.get(base or "", {}).get("pretraining_domain"),
            "feature_source": "transfergraph",
            "note": "; ".join(filter(None, [*notes, how])),
        }
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# TaskWeb and OPDA

#: TaskWeb run-name prefixes -> the checkpoint the runs start from (per the Trainer cards and config.json files).
TASKWEB_BASES = {
    "gpt2m": "gpt2-medium",
    "roberta": "roberta-base",
    "t5s": "google/t5-small-lm-adapt",
    "t5b": "google/t5-base-lm-adapt",
    "t5l": "google/t5-large-lm-adapt",
}
#: The names TaskWeb's ORIGIN.txt gives the same prefixes.
TASKWEB_ORIGIN_NAMES = {"t5s": "t5-small", "t5b": "t5-base", "t5l": "t5-large"}
_SHAPE_KEYS = ("n_layers", "hidden_size", "n_heads", "family", "arch_type")


def taskweb_notes(archive: Path, known: dict[str, dict[str, Any]]) -> None:
    """Check TaskWeb's config.json files against the known configs and note what TaskWeb runs start from.

    Args:
        archive: ``taskweb/runs.tar.gz``.
        known: rows built from public configs; notes are added in place.

    Raises:
        AssertionError: a TaskWeb config disagrees with the known shape of its base checkpoint.
    """
    seen: dict[str, dict[str, Any]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[3] == "config.json":
                prefix = parts[2].split("-")[0]
                if prefix in TASKWEB_BASES and prefix not in seen:
                    seen[prefix] = json.load(tar.extractfile(member))
    for prefix, base in TASKWEB_BASES.items():
        row = known[base]
        notes = [row.get("note"), f"TaskWeb '{prefix}' runs start from this checkpoint"]
        if prefix in seen:
            got = model_features_from_config(seen[prefix])
            for key in _SHAPE_KEYS:
                assert got.get(key) == row.get(key), (prefix, key, got.get(key), row.get(key))
            vocab = got.get("vocab_size")
            notes.append(
                "TaskWeb config.json agrees"
                + (f" (vocabulary resized to {vocab})" if vocab != row.get("vocab_size") else "")
            )
        row["note"] = "; ".join(filter(None, notes))
    for prefix, name in TASKWEB_ORIGIN_NAMES.items():
        known[name]["note"] = "; ".join(
            filter(
                None,
                [
                    known[name].get("note"),
                    (
                        f"TaskWeb's ORIGIN.txt calls its '{prefix}' runs {name}, but their configs (and, for t5b/t5l, "
                        f"Trainer cards) are T5 v1.1 LM-adapted: see {TASKWEB_BASES[prefix]}"
                    ),
                ],
            )
        )


OPDA_MODELS = ("microsoft/deberta-base", "microsoft/deberta-v3-base")


def opda_notes(folder: Path, known: dict[str, dict[str, Any]]) -> None:
    """Note the OPDA checkpoints (their result files name them: ``<model>_tuning.results.jsonl``).

    Args:
        folder: ``opda_deberta/``.
        known: rows built from public configs; notes are added in place.

    Raises:
        AssertionError: a result file names a model not in ``OPDA_MODELS``.
    """
    for path in sorted(folder.glob("*_tuning.results.jsonl")):
        model_id = f"microsoft/{path.name.split('_tuning')[0]}"
        assert model_id in OPDA_MODELS, model_id
        known[model_id]["note"] = "; ".join(filter(None, [known[model_id].get("note"), "OPDA tuning runs on MultiNLI"]))


# ----------------------------------------------------------------------------------------------------------------------


def build(public_data: Path) -> ModelRegistry:
    """Build the registry from the public data folder.

    Args:
        public_data: the ``shared/data`` folder (with ``metadatasets/``).

    Returns:
        The registry.
    """
    meta = public_data / "metadatasets"
    known = known_rows()
    taskweb_notes(meta / "taskweb" / "runs.tar.gz", known)
    opda_notes(meta / "opda_deberta", known)
    text = transfergraph_text_rows(
        meta / "transfergraph" / "sequence_classification" / "model_config_dataset.csv", known
    )
    image = transfergraph_image_rows(
        meta / "transfergraph" / "image_classification" / "model_config_dataset.csv", known
    )
    registry = ModelRegistry()
    for rows in (known, text, image):
        for model_id, row in rows.items():
            registry.upsert(model_id, row)
    return registry


def _default_public_data() -> Path:
    env = os.environ.get("METAML_PUBLIC_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the table and print a summary.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the public data folder is missing.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--public-data",
        type=Path,
        default=_default_public_data(),
        help="shared/data folder (default: $METAML_PUBLIC_DATA or ../shared/data)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "collector" / "data" / "models.csv", help="output CSV")
    args = parser.parse_args(argv)
    if not (args.public_data / "metadatasets").is_dir():
        print(f"no metadatasets/ under {args.public_data}", file=sys.stderr)
        return 1
    registry = build(args.public_data)
    registry.save(args.out)
    rows = [registry.row(m) for m in registry]
    print(f"wrote {len(registry)} rows to {args.out}")
    print("by feature_source:", dict(Counter(r.get("feature_source") for r in rows).most_common()))
    print("by family:", dict(Counter(r.get("family") for r in rows).most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
