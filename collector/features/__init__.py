"""Features the meta-learner needs: dataset meta-features from raw text, model features from configs, the registry."""

from collector.features._dataset import compute_meta_features, guess_language
from collector.features._model import (
    EXACT_FAMILIES,
    ParamCount,
    count_parameters,
    infer_features_from_id,
    model_features_from_config,
    normalize_family,
    sequence_classification_head_params,
)
from collector.features._public_text import (
    PUBLIC_TEXT_DATASETS,
    PublicTextSource,
    describe_public_texts,
    load_public_text,
    public_text_source,
)
from collector.features._registry import (
    FEATURE_COLUMNS,
    FEATURE_SOURCES,
    REGISTRY_COLUMNS,
    ModelRegistry,
    default_registry_path,
)
from collector.features._text_io import TextDataset, TextDatasetError, load_text_dataset

__all__ = [
    "EXACT_FAMILIES",
    "FEATURE_COLUMNS",
    "FEATURE_SOURCES",
    "PUBLIC_TEXT_DATASETS",
    "REGISTRY_COLUMNS",
    "ModelRegistry",
    "ParamCount",
    "PublicTextSource",
    "TextDataset",
    "TextDatasetError",
    "compute_meta_features",
    "count_parameters",
    "default_registry_path",
    "describe_public_texts",
    "guess_language",
    "infer_features_from_id",
    "load_public_text",
    "load_text_dataset",
    "model_features_from_config",
    "normalize_family",
    "public_text_source",
    "sequence_classification_head_params",
]
