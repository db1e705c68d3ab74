"""Model features from configs and ids, the analytic parameter counts, and the model registry table.

Counts are checked three ways: against published exact counts of real checkpoints (configs below are copied from the
public default ``config.json`` files), against the real ``config.json`` files inside TaskWeb's run archive, and against
TransferGraph's ``number_of_parameters`` column. Real files are read from ``../shared/data`` (``METAML_PUBLIC_DATA``
overrides).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import re
import statistics
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from collector.features._model import (
    count_parameters,
    infer_features_from_id,
    model_features_from_config,
    sequence_classification_head_params,
)
from collector.features._registry import REGISTRY_COLUMNS, ModelRegistry, default_registry_path
from collector.schema import Model

REPO = Path(__file__).resolve().parents[1]
PUBLIC_DATA = Path(os.environ.get("METAML_PUBLIC_DATA") or REPO.parent / "shared" / "data")
META = PUBLIC_DATA / "metadatasets"
REGISTRY_CSV = REPO / "collector" / "data" / "models.csv"

needs_public_data = pytest.mark.skipif(not META.is_dir(), reason=f"public data not found at {PUBLIC_DATA}")

# ----------------------------------------------------------------------------------------------------------------------
# Public default configs (architecture fields as in each checkpoint's config.json on the Hub)

BERT_BASE_UNCASED = {
    "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "position_embedding_type": "absolute", "type_vocab_size": 2,
    "vocab_size": 30522,
}  # fmt: skip
BERT_BASE_CASED = {**BERT_BASE_UNCASED, "vocab_size": 28996}
ROBERTA_BASE = {
    "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 514,
    "model_type": "roberta", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "type_vocab_size": 1, "vocab_size": 50265,
}  # fmt: skip
T5_SMALL = {
    "architectures": ["T5ForConditionalGeneration"], "d_ff": 2048, "d_kv": 64, "d_model": 512,
    "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "initializer_factor": 1.0,
    "is_encoder_decoder": True, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
    "num_heads": 8, "num_layers": 6, "output_past": True, "pad_token_id": 0, "relative_attention_num_buckets": 32,
    "vocab_size": 32128,
}  # fmt: skip
GPT2_MEDIUM = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": 50256,
    "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1024, "n_head": 16, "n_layer": 24, "n_positions": 1024,
    "n_special": 0, "predict_special_tokens": True, "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "vocab_size": 50257,
}  # fmt: skip
DISTILBERT_BASE_UNCASED = {
    "activation": "gelu", "architectures": ["DistilBertForMaskedLM"], "attention_dropout": 0.1, "dim": 768,
    "dropout": 0.1, "hidden_dim": 3072, "initializer_range": 0.02, "max_position_embeddings": 512,
    "model_type": "distilbert", "n_heads": 12, "n_layers": 6, "pad_token_id": 0, "qa_dropout": 0.1,
    "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False, "tie_weights_": True, "vocab_size": 30522,
}  # fmt: skip
DEBERTA_V3_BASE = {
    "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512,
    "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm", "share_att_key": True,
    "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7, "max_relative_positions": -1, "position_biased_input": False,
    "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 0, "vocab_size": 128100,
}  # fmt: skip
DEBERTA_BASE = {
    "model_type": "deberta", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512,
    "relative_attention": True, "pos_att_type": "c2p|p2c", "layer_norm_eps": 1e-7, "max_relative_positions": -1,
    "position_biased_input": False, "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 0,
    "vocab_size": 50265,
}  # fmt: skip
ALBERT_XXLARGE_V2 = {
    "architectures": ["AlbertForMaskedLM"], "attention_probs_dropout_prob": 0, "embedding_size": 128,
    "hidden_act": "gelu_new", "hidden_dropout_prob": 0, "hidden_size": 4096, "initializer_range": 0.02,
    "inner_group_num": 1, "intermediate_size": 16384, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "model_type": "albert", "num_attention_heads": 64, "num_hidden_groups": 1, "num_hidden_layers": 12,
    "type_vocab_size": 2, "vocab_size": 30000,
}  # fmt: skip
ALBERT_BASE_V2 = {**ALBERT_XXLARGE_V2, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}
ELECTRA_SMALL_DISCRIMINATOR = {
    "architectures": ["ElectraForPreTraining"], "attention_probs_dropout_prob": 0.1, "embedding_size": 128,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 256, "initializer_range": 0.02,
    "intermediate_size": 1024, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "electra",
    "num_attention_heads": 4, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30522,
}  # fmt: skip
ELECTRA_BASE_DISCRIMINATOR = {
    **ELECTRA_SMALL_DISCRIMINATOR, "embedding_size": 768, "hidden_size": 768, "intermediate_size": 3072,
    "num_attention_heads": 12,
}  # fmt: skip
XLM_ROBERTA_BASE = {**ROBERTA_BASE, "model_type": "xlm-roberta", "vocab_size": 250002}
BART_BASE = {
    "model_type": "bart", "d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 12,
    "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072, "max_position_embeddings": 1024,
    "vocab_size": 50265, "is_encoder_decoder": True, "scale_embedding": False, "activation_function": "gelu",
}  # fmt: skip
MPNET_BASE = {
    "model_type": "mpnet", "hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 514,
    "num_attention_heads": 12, "num_hidden_layers": 12, "relative_attention_num_buckets": 32, "vocab_size": 30527,
    "pad_token_id": 1,
}  # fmt: skip
GPT_NEO_125M = {
    "model_type": "gpt_neo", "hidden_size": 768, "num_layers": 12, "num_heads": 12, "max_position_embeddings": 2048,
    "vocab_size": 50257, "attention_types": [[["global", "local"], 6]], "window_size": 256,
}  # fmt: skip
OPT_125M = {
    "model_type": "opt", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "ffn_dim": 3072,
    "max_position_embeddings": 2048, "word_embed_proj_dim": 768, "do_layer_norm_before": True, "vocab_size": 50272,
    "enable_bias": True,
}  # fmt: skip
LLAMA_2_7B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "vocab_size": 32000,
}  # fmt: skip
MISTRAL_7B = {**LLAMA_2_7B, "model_type": "mistral", "intermediate_size": 14336, "num_key_value_heads": 8}
QWEN2_0_5B = {
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "tie_word_embeddings": True, "vocab_size": 151936,
}  # fmt: skip
FLAN_T5_BASE = {
    "model_type": "t5", "d_ff": 2048, "d_kv": 64, "d_model": 768, "feed_forward_proj": "gated-gelu",
    "num_decoder_layers": 12, "num_heads": 12, "num_layers": 12, "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False, "vocab_size": 32128, "is_encoder_decoder": True,
}  # fmt: skip
XLNET_BASE = {"model_type": "xlnet", "d_model": 768, "n_layer": 12, "n_head": 12, "d_head": 64, "d_inner": 3072,
              "vocab_size": 32000}  # fmt: skip

# (config, published count of the base model) -- the six reference models first, then further checks.
PUBLISHED_BASE_COUNTS = {
    "bert-base-uncased": (BERT_BASE_UNCASED, 109_482_240),
    "roberta-base": (ROBERTA_BASE, 124_645_632),
    "t5-small": (T5_SMALL, 60_506_624),
    "gpt2-medium": (GPT2_MEDIUM, 354_823_168),
    "distilbert-base-uncased": (DISTILBERT_BASE_UNCASED, 66_362_880),
    "microsoft/deberta-v3-base": (DEBERTA_V3_BASE, 183_831_552),
    "bert-base-cased": (BERT_BASE_CASED, 108_310_272),
    "microsoft/deberta-base": (DEBERTA_BASE, 138_601_728),
    "albert-base-v2": (ALBERT_BASE_V2, 11_683_584),
    "albert-xxlarge-v2": (ALBERT_XXLARGE_V2, 222_595_584),
    "google/electra-small-discriminator": (ELECTRA_SMALL_DISCRIMINATOR, 13_483_008),
    "xlm-roberta-base": (XLM_ROBERTA_BASE, 278_043_648),
    "facebook/bart-base": (BART_BASE, 139_420_416),
    "microsoft/mpnet-base": (MPNET_BASE, 109_486_464),
    "EleutherAI/gpt-neo-125M": (GPT_NEO_125M, 125_198_592),
    "facebook/opt-125m": (OPT_125M, 125_239_296),
    "Qwen/Qwen2-0.5B": (QWEN2_0_5B, 494_032_768),
}


@pytest.mark.parametrize("model_id", list(PUBLISHED_BASE_COUNTS))
def test_count_matches_published_base_model_count(model_id: str) -> None:
    """The analytic count of a public default config equals the published exact count of its base model class
    (``BertModel``, ``RobertaModel``, ``T5Model``, ``GPT2Model``, ``DistilBertModel``, ``DebertaV2Model`` ...)."""
    config, expected = PUBLISHED_BASE_COUNTS[model_id]
    count = count_parameters(config)
    assert count is not None and count.exact
    assert count.n_params == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [(LLAMA_2_7B, 6_738_415_616), (MISTRAL_7B, 7_241_732_096), (FLAN_T5_BASE, 247_577_856), (GPT2_MEDIUM, 354_823_168)],
    ids=["llama-2-7b", "mistral-7b", "flan-t5-base", "gpt2-medium-tied"],
)
def test_with_lm_head_adds_only_an_untied_head(config: dict[str, Any], expected: int) -> None:
    """``with_lm_head=True`` adds vocab x hidden for untied heads (Llama, Mistral, FLAN-T5: published totals) and
    nothing for a tied head (GPT-2, whose published total is the base count)."""
    assert count_parameters(config, with_lm_head=True).n_params == expected


def test_shared_and_factorized_parts_are_counted_once() -> None:
    """ALBERT's shared layer weights do not grow with depth; ELECTRA-small's 128-wide embeddings are projected to
    its 256-wide layers."""
    deeper = count_parameters({**ALBERT_BASE_V2, "num_hidden_layers": 24}).n_params
    assert deeper == count_parameters(ALBERT_BASE_V2).n_params
    same_width = count_parameters({**ELECTRA_SMALL_DISCRIMINATOR, "embedding_size": 256}).n_params
    factorized = count_parameters(ELECTRA_SMALL_DISCRIMINATOR).n_params
    assert same_width - factorized == (256 - 128) * (30522 + 512 + 2 + 2) - (128 * 256 + 256)


def test_gqa_heads_shrink_key_value_projections() -> None:
    """Grouped-query attention: 8 KV heads instead of 32 removes 2 x 24 x 128 x 4096 weights per layer."""
    full = count_parameters({**MISTRAL_7B, "num_key_value_heads": 32}).n_params
    assert full - count_parameters(MISTRAL_7B).n_params == 32 * 2 * 24 * 128 * 4096


def test_generic_fallback_is_flagged_approximate() -> None:
    """An unknown architecture gets 12·L·h² + V·h and ``exact=False``; a config without sizes gets no count."""
    config = {"model_type": "brand-new", "num_hidden_layers": 10, "hidden_size": 512, "vocab_size": 1000}
    count = count_parameters(config)
    assert count is not None and not count.exact and count.rule.startswith("generic")
    assert count.n_params == 12 * 10 * 512**2 + 1000 * 512
    assert count_parameters({"model_type": "brand-new"}) is None
    assert "n_params" in model_features_from_config(config)


# ----------------------------------------------------------------------------------------------------------------------
# Family, architecture type, objective

FAMILY_CASES = [
    ("bert", BERT_BASE_UNCASED, "bert", "encoder", "mlm"),
    ("roberta", ROBERTA_BASE, "roberta", "encoder", "mlm"),
    ("xlm-roberta", XLM_ROBERTA_BASE, "xlm-roberta", "encoder", "mlm"),
    ("camembert", {**ROBERTA_BASE, "model_type": "camembert", "vocab_size": 32005}, "camembert", "encoder", "mlm"),
    ("distilbert", DISTILBERT_BASE_UNCASED, "distilbert", "encoder", "mlm"),
    ("albert", ALBERT_BASE_V2, "albert", "encoder", "mlm"),
    ("electra", ELECTRA_BASE_DISCRIMINATOR, "electra", "encoder", "rtd"),
    ("deberta", DEBERTA_BASE, "deberta", "encoder", "mlm"),
    ("deberta-v3", DEBERTA_V3_BASE, "deberta-v2", "encoder", "rtd"),
    ("deberta-v2-xlarge", {**DEBERTA_V3_BASE, "conv_kernel_size": 3}, "deberta-v2", "encoder", "mlm"),
    ("mpnet", MPNET_BASE, "mpnet", "encoder", "mlm"),
    ("xlnet", XLNET_BASE, "xlnet", "encoder", "permutation"),
    ("t5", T5_SMALL, "t5", "encoder-decoder", "span-corruption"),
    ("flan-t5", FLAN_T5_BASE, "t5", "encoder-decoder", "span-corruption"),
    ("mt5", {**FLAN_T5_BASE, "model_type": "mt5", "vocab_size": 250112}, "mt5", "encoder-decoder", "span-corruption"),
    ("bart", BART_BASE, "bart", "encoder-decoder", "denoising"),
    ("gpt2", GPT2_MEDIUM, "gpt2", "decoder", "clm"),
    ("gpt-neo", GPT_NEO_125M, "gpt-neo", "decoder", "clm"),
    ("opt", OPT_125M, "opt", "decoder", "clm"),
    ("llama", LLAMA_2_7B, "llama", "decoder", "clm"),
    ("mistral", MISTRAL_7B, "mistral", "decoder", "clm"),
    ("qwen2", QWEN2_0_5B, "qwen2", "decoder", "clm"),
    ("no-model-type", {"architectures": ["XLMRobertaForSequenceClassification"]}, "xlm-roberta", "encoder", "mlm"),
]


@pytest.mark.parametrize(("config", "family", "arch_type", "objective"), [c[1:] for c in FAMILY_CASES],
                         ids=[c[0] for c in FAMILY_CASES])  # fmt: skip
def test_family_arch_type_and_objective(config: dict[str, Any], family: str, arch_type: str, objective: str) -> None:
    """Each family maps to its normalized family name, architecture type and pre-training objective, and the features
    validate as the record's ``Model`` part."""
    features = model_features_from_config(config)
    assert (features["family"], features["arch_type"], features["pretraining_objective"]) == (
        family,
        arch_type,
        objective,
    )
    assert set(features) <= set(Model.model_fields) - {"id", "revision"}
    Model(id="some/model", **features)


def test_shape_fields_follow_each_config_convention() -> None:
    """Layers, width, heads, vocabulary and usable positions come from each family's own key names; RoBERTa-style
    position tables lose the padding offset (514 -> 512); T5 reports its encoder stack."""
    roberta = model_features_from_config(ROBERTA_BASE)
    shape = ("n_layers", "hidden_size", "n_heads", "max_positions")
    assert tuple(roberta[k] for k in shape) == (12, 768, 12, 512)
    gpt2 = model_features_from_config(GPT2_MEDIUM)
    assert tuple(gpt2[k] for k in shape) == (24, 1024, 16, 1024)
    t5 = model_features_from_config(T5_SMALL)
    assert (t5["n_layers"], t5["hidden_size"], t5["n_heads"], t5["vocab_size"]) == (6, 512, 8, 32128)
    assert "max_positions" not in model_features_from_config(XLNET_BASE)


def test_name_or_path_and_finetuning_task_give_base_and_upstream() -> None:
    """A Hub-like ``_name_or_path`` different from the model's own id is its base; a local path is ignored; the
    config's ``finetuning_task`` is the upstream task."""
    config = {**BERT_BASE_UNCASED, "_name_or_path": "bert-base-uncased", "finetuning_task": "sst-2"}
    features = model_features_from_config(config, model_id="someone/bert-sst2")
    assert features["base_model"] == "bert-base-uncased"
    assert features["upstream_task"] == "glue/sst2"
    local = model_features_from_config({**config, "_name_or_path": "../../models/bert"}, model_id="someone/bert-sst2")
    assert "base_model" not in local


def test_config_must_be_a_dict() -> None:
    """Anything but a dict is refused with TypeError."""
    with pytest.raises(TypeError):
        model_features_from_config(["not", "a", "config"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# Inference from an id


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("bert-base-uncased", {"family": "bert", "arch_type": "encoder", "n_layers": 12, "hidden_size": 768}),
        ("roberta-large", {"family": "roberta", "n_layers": 24, "hidden_size": 1024, "n_heads": 16}),
        ("t5-small", {"family": "t5", "arch_type": "encoder-decoder", "n_layers": 6, "hidden_size": 512}),
        ("google/flan-t5-small", {"family": "t5", "n_layers": 8, "n_heads": 6}),
        ("microsoft/deberta-v3-base", {"family": "deberta-v2", "pretraining_objective": "rtd", "n_layers": 12}),
        ("distilbert/distilbert-base-uncased", {"family": "distilbert", "n_layers": 6}),
        ("someone/distilbert-finetuned-imdb", {"family": "distilbert", "n_layers": 6}),
        ("FacebookAI/xlm-roberta-base", {"family": "xlm-roberta", "pretraining_domain": "multilingual-web"}),
        ("google/electra-small-discriminator", {"family": "electra", "pretraining_objective": "rtd", "n_heads": 4}),
        ("albert-xxlarge-v2", {"family": "albert", "n_layers": 12, "hidden_size": 4096}),
        ("gpt2", {"family": "gpt2", "arch_type": "decoder", "n_layers": 12}),
        ("gpt2-xl", {"family": "gpt2", "n_layers": 48, "hidden_size": 1600}),
        ("google/bert_uncased_L-4_H-256_A-4", {"family": "bert", "n_layers": 4, "hidden_size": 256, "n_heads": 4}),
        ("nreimers/mMiniLMv2-L6-H384-distilled-from-XLMR-Large", {"family": "xlm-roberta", "hidden_size": 384}),
        ("vinai/bertweet-base", {"family": "roberta", "pretraining_domain": "social-media"}),
        ("facebook/bart-large", {"family": "bart", "pretraining_objective": "denoising", "n_layers": 12}),
    ],
)
def test_infer_features_from_id(model_id: str, expected: dict[str, Any]) -> None:
    """Family, architecture type, objective, size and domain hints are read from the id alone."""
    features = infer_features_from_id(model_id)
    assert {k: features.get(k) for k in expected} == expected
    assert "n_params" not in features


def test_infer_features_from_unknown_id_is_empty() -> None:
    """An id naming no known family yields no features rather than a guess."""
    assert infer_features_from_id("someone/my-classifier") == {}


# ----------------------------------------------------------------------------------------------------------------------
# Real configs and real counts


@functools.cache
def _taskweb_configs() -> dict[str, dict[str, Any]]:
    """The first config.json of each TaskWeb run prefix (gpt2m, roberta, t5s, t5l)."""
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(META / "taskweb" / "runs.tar.gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[3] == "config.json":
                found.setdefault(parts[2].split("-")[0], json.load(tar.extractfile(member)))
    return found


@needs_public_data
def test_taskweb_real_configs() -> None:
    """TaskWeb's real config.json files give the right families and counts: gpt2-medium with 3 added tokens, the
    roberta-base sequence classifier's base, and T5 v1.1 (gated, untied) small/large with a 32100-token vocabulary."""
    configs = _taskweb_configs()
    assert set(configs) == {"gpt2m", "roberta", "t5s", "t5l"}
    gpt2m = model_features_from_config(configs["gpt2m"])
    assert (gpt2m["family"], gpt2m["arch_type"], gpt2m["n_params"]) == ("gpt2", "decoder", 354_823_168 + 3 * 1024)
    roberta = model_features_from_config(configs["roberta"])
    assert roberta["n_params"] == 124_645_632 and "base_model" not in roberta  # _name_or_path is a local path
    t5s, t5l = model_features_from_config(configs["t5s"]), model_features_from_config(configs["t5l"])
    assert (t5s["n_layers"], t5s["hidden_size"], t5s["n_heads"]) == (8, 512, 6)
    assert (t5l["n_layers"], t5l["hidden_size"], t5l["n_heads"]) == (24, 1024, 16)
    hub_t5l = {**configs["t5l"], "vocab_size": 32128}
    assert count_parameters(hub_t5l).n_params - t5l["n_params"] == 28 * 1024


# TransferGraph's counts are of AutoModelForSequenceClassification, so they include the classifier. Compared with the
# base-model count, the head is h·n+n for BERT/ALBERT/RoBERTa-family (whose classifier dense layer replaces a pooler of
# the same size), and h²+h more for DistilBERT/ELECTRA (a pre-classifier layer their base models lack): at most ~0.9%
# of a base-sized model. Hence: the median relative error must be below 1%, and adding the modelled head must
# reproduce TransferGraph's number exactly for nearly all checkpoints whose name states a base with a public config.
TG_EQUIVALENTS = {
    "bert-base-uncased": BERT_BASE_UNCASED,
    "bert-base-cased": BERT_BASE_CASED,
    "distilbert-base-uncased": DISTILBERT_BASE_UNCASED,
    "roberta-base": ROBERTA_BASE,
    "xlm-roberta-base": XLM_ROBERTA_BASE,
    "albert-base-v2": ALBERT_BASE_V2,
    "electra-base-discriminator": ELECTRA_BASE_DISCRIMINATOR,
}


def _named_base(model_id: str) -> str | None:
    hits = [k for k in TG_EQUIVALENTS if re.search(rf"(?:^|[/_\-.]){re.escape(k)}(?=$|[/_\-.])", model_id.lower())]
    return max(hits, key=len) if hits else None


@needs_public_data
def test_counts_against_transfergraph() -> None:
    """Over TransferGraph text checkpoints whose id names a base with a public config, the base count is within 1% of
    TransferGraph's count (median), and base + modelled classification head equals it exactly for at least 90%.
    (The exceptions are checkpoints whose name says roberta-base but whose vocabulary differs: roberta-base-bne ...)"""
    table = pd.read_csv(META / "transfergraph" / "sequence_classification" / "model_config_dataset.csv")
    errors, exact, misses = [], 0, []
    for row in table.itertuples(index=False):
        base = _named_base(str(row.model))
        if base is None:
            continue
        config = TG_EQUIVALENTS[base]
        analytic, reported = count_parameters(config).n_params, int(row.number_of_parameters)
        errors.append(abs(analytic - reported) / reported)
        if analytic + sequence_classification_head_params(config, int(row.number_of_labels)) == reported:
            exact += 1
        else:
            misses.append(row.model)
    assert len(errors) >= 40
    assert statistics.median(errors) < 0.01
    assert exact / len(errors) >= 0.9, misses


@needs_public_data
def test_vit_counts_against_transfergraph_images() -> None:
    """Vision: ViT-B/16-224 fine-tunes in TransferGraph's image table equal ViTModel's count plus the classifier,
    minus the pooler the classification model drops."""
    vit_b16 = {"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
               "intermediate_size": 3072, "image_size": 224, "patch_size": 16}  # fmt: skip
    table = pd.read_csv(META / "transfergraph" / "image_classification" / "model_config_dataset.csv")
    rows = table[table["model"].str.contains("vit-base-patch16-224") & (table["model_type"] == "vit")]
    assert len(rows) >= 5
    for _, row in rows.iterrows():
        head = sequence_classification_head_params(vit_b16, int(row["#labels"]))
        assert count_parameters(vit_b16).n_params + head == int(row["number_of_parameters"]), row["model"]


# ----------------------------------------------------------------------------------------------------------------------
# Registry


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.from_csv(REGISTRY_CSV)


def test_registry_loads_with_expected_columns(registry: ModelRegistry) -> None:
    """``collector/data/models.csv`` has the registry columns in order, one row per id, and every row validates as
    ``Model``."""
    with REGISTRY_CSV.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == REGISTRY_COLUMNS
    assert len(registry) > 300
    for model_id in registry:
        Model(id=model_id, **registry.lookup(model_id))
        assert registry.row(model_id)["feature_source"] in {"config", "transfergraph", "taskweb", "card", "inferred"}


REQUIRED_IDS = [
    "bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased", "distilbert-base-uncased",
    "roberta-base", "roberta-large", "distilroberta-base", "xlm-roberta-base", "xlm-roberta-large",
    "microsoft/deberta-base", "microsoft/deberta-large", "microsoft/deberta-v3-xsmall", "microsoft/deberta-v3-small",
    "microsoft/deberta-v3-base", "microsoft/deberta-v3-large",
    *[f"albert-{s}-{v}" for s in ("base", "large", "xlarge", "xxlarge") for v in ("v1", "v2")],
    *[f"google/electra-{s}-discriminator" for s in ("small", "base", "large")],
    "t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b",
    *[f"google/flan-t5-{s}" for s in ("small", "base", "large", "xl", "xxl")],
    *[f"google/t5-v1_1-{s}" for s in ("small", "base", "large", "xl", "xxl")],
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
]  # fmt: skip


def test_registry_has_required_families(registry: ModelRegistry) -> None:
    """The standard checkpoints of BERT, DistilBERT, RoBERTa, XLM-R, DeBERTa(V3), ALBERT, ELECTRA, T5, FLAN-T5,
    T5 v1.1 and GPT-2 are present, computed from their configs."""
    missing = [m for m in REQUIRED_IDS if m not in registry]
    assert not missing
    assert all(registry.row(m)["feature_source"] == "config" for m in REQUIRED_IDS)
    assert registry.lookup("microsoft/deberta-v3-base")["n_params"] == 183_831_552


@needs_public_data
def test_registry_has_every_transfergraph_model(registry: ModelRegistry) -> None:
    """Every model id of TransferGraph's text and image tables (configs and run records) is in the registry, and the
    fine-tuned text checkpoints carry their upstream dataset."""
    ids: set[str] = set()
    for kind in ("sequence_classification", "image_classification"):
        for name in ("model_config_dataset.csv", "records.csv"):
            column = pd.read_csv(META / "transfergraph" / kind / name, usecols=["model"])["model"]
            ids |= {m for m in column.dropna().astype(str) if "/" in m or "-" in m}
    missing = sorted(m for m in ids if m not in registry)
    assert not missing
    assert registry.lookup("Jeevesh8/bert_ft_qqp-40")["upstream_task"] == "glue/qqp"
    assert registry.lookup("Jeevesh8/bert_ft_qqp-40")["base_model"] == "bert-base-uncased"
    assert "upstream_task" not in registry.lookup("bert-base-uncased")  # 'wikipedia' there is the pre-training corpus


@needs_public_data
def test_registry_has_every_taskweb_and_opda_model(registry: ModelRegistry) -> None:
    """TaskWeb's base checkpoints (by run prefix, under the names its cards use and the names its ORIGIN uses) and
    OPDA's two DeBERTa checkpoints (named by its result files) are in the registry."""
    prefixes = set(_taskweb_configs()) | {"t5b"}
    by_prefix = {
        "gpt2m": ["gpt2-medium"],
        "roberta": ["roberta-base"],
        "t5s": ["google/t5-small-lm-adapt", "t5-small"],
        "t5b": ["google/t5-base-lm-adapt", "t5-base"],
        "t5l": ["google/t5-large-lm-adapt", "t5-large"],
    }
    assert all(m in registry for p in prefixes for m in by_prefix[p])
    opda = [f"microsoft/{p.name.split('_tuning')[0]}" for p in (META / "opda_deberta").glob("*_tuning.results.jsonl")]
    assert sorted(opda) == ["microsoft/deberta-base", "microsoft/deberta-v3-base"]
    assert all(m in registry for m in opda)


def test_registry_lookup_canonical_ids_and_fallback(registry: ModelRegistry) -> None:
    """Renamed Hub organisations fold onto the legacy id; an unknown id falls back to inference from the name."""
    assert "FacebookAI/roberta-base" in registry
    assert registry.lookup("https://huggingface.co/FacebookAI/roberta-base")["n_params"] == 124_645_632
    unknown = "someone/roberta-large-finetuned-my-data"
    assert unknown not in registry
    assert registry.lookup(unknown) == infer_features_from_id(unknown)
    assert registry.lookup(unknown)["n_layers"] == 24


def test_registry_upsert_save_roundtrip(tmp_path: Path) -> None:
    """Upsert merges non-null values into a row; save writes every column; loading the file gives the same rows."""
    reg = ModelRegistry()
    reg.upsert("FacebookAI/roberta-base", {"family": "roberta", "n_params": 1, "feature_source": "config"})
    reg.upsert("roberta-base", {"n_params": 124_645_632, "family": None, "note": "updated"})
    assert len(reg) == 1
    assert reg.row("roberta-base") == {"model_id": "roberta-base", "family": "roberta", "n_params": 124_645_632,
                                       "feature_source": "config", "note": "updated"}  # fmt: skip
    path = tmp_path / "models.csv"
    reg.save(path)
    again = ModelRegistry.from_csv(path)
    assert again.row("roberta-base") == reg.row("roberta-base")
    with pytest.raises(ValueError):
        reg.upsert("x", {"feature_source": "guess"})


def test_default_registry_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``$METAML_DATA_DIR/models.csv`` when set, else the package's ``collector/data/models.csv``."""
    monkeypatch.delenv("METAML_DATA_DIR", raising=False)
    assert default_registry_path() == REGISTRY_CSV
    monkeypatch.setenv("METAML_DATA_DIR", str(tmp_path))
    assert default_registry_path() == tmp_path / "models.csv"


@needs_public_data
def test_registry_table_is_reproducible(tmp_path: Path) -> None:
    """Rerunning ``data/build_model_registry.py`` on the public data reproduces the committed table byte for byte."""
    spec = importlib.util.spec_from_file_location("build_model_registry", REPO / "data" / "build_model_registry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "models.csv"
    assert module.main(["--public-data", str(PUBLIC_DATA), "--out", str(out)]) == 0
    assert out.read_bytes() == REGISTRY_CSV.read_bytes()
