"""Hub model cards: what a card's run was trained on (the dataset) and for what (the task), by the precedence
documented in ``docs/sources/hf_cards.md``. Raises :class:`~collector.formats.RecordProblem` with the reason when a
card names no usable dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from collector.formats._base import RecordProblem
from collector.importers.hf.card import HUB_ID, CardParts
from collector.schema._vocab import canonical_dataset

#: Hub pipeline tags that are task types of the record as they are.
DIRECT_TASKS = {
    "text-classification", "token-classification", "question-answering", "multiple-choice", "summarization",
    "translation", "text-generation", "image-classification", "automatic-speech-recognition",
}
#: Hub pipeline tags without a task type of their own (-> ``other``, the tag kept in ``hparams.extra["hf_task"]``).
OTHER_TASKS = {
    "fill-mask", "audio-classification", "image-segmentation", "object-detection", "feature-extraction",
    "sentence-similarity", "text-to-speech", "image-to-text", "conversational", "table-question-answering",
    "text2text-generation", "audio-to-audio", "voice-activity-detection",
    "visual-question-answering", "document-question-answering", "text-to-image", "reinforcement-learning",
    "tabular-classification", "tabular-regression", "depth-estimation", "video-classification",
    "zero-shot-image-classification", "image-to-image", "text-to-audio",
}
TASK_ALIASES = {
    "speech-recognition": "automatic-speech-recognition",
    "asr": "automatic-speech-recognition",
    "ner": "token-classification",
    "named-entity-recognition": "token-classification",
    "sequence-classification": "text-classification",
    "natural-language-inference": "text-classification",
    "sentiment-analysis": "text-classification",
    "causal-lm": "text-generation",
    "text generation": "text-generation",
    "masked-language-modeling": "fill-mask",
    "zero-shot-classification": "text-classification",
}
LM_TASKS = {"text-generation", "fill-mask"}

#: Dataset (first path part, canonical) -> task, for cards that name no task.
DATASET_TASKS: dict[str, str] = {
    **dict.fromkeys(
        ["conll2003", "conll2002", "wnut_17", "wikiann", "ncbi_disease", "jnlpba", "mim_gold_ner", "harem",
         "lener_br", "germeval_14", "few_nerd", "bc2gm_corpus", "species_800", "xtreme", "polyglot_ner", "nerd"],
        "token-classification"),
    **dict.fromkeys(
        ["squad", "squad_v2", "squad_es", "squadv1", "squad1.1", "adversarial_qa", "tydiqa", "xquad", "mlqa",
         "covid_qa_deepset", "thaiqa_squad", "quoref", "subjqa", "squad_it", "germanquad"],
        "question-answering"),
    **dict.fromkeys(["swag", "commonsense_qa", "cosmos_qa", "race", "piqa", "hellaswag", "social_i_qa"],
                    "multiple-choice"),
    **dict.fromkeys(
        ["xsum", "cnn_dailymail", "samsum", "scientific_papers", "billsum", "multi_news", "mlsum", "wikihow",
         "gigaword", "reddit_tifu", "big_patent", "newsroom"],
        "summarization"),
    **dict.fromkeys(["wmt14", "wmt16", "wmt19", "wmt16_en_ro_pre_processed", "kde4", "opus_books", "opus100",
                     "opus_wikipedia", "tatoeba", "ted_talks_iwslt", "iwslt2017"], "translation"),
    **dict.fromkeys(["common_voice", "librispeech_asr", "timit_asr", "ami", "openslr", "fleurs", "voxpopuli",
                     "mozilla-foundation", "google", "multilingual_librispeech", "speech-recognition-community-v2"],
                    "automatic-speech-recognition"),
    **dict.fromkeys(["cifar10", "cifar100", "beans", "cats_vs_dogs", "imagefolder", "huggingpics", "food101", "mnist",
                     "fashion_mnist", "eurosat"], "image-classification"),
    **dict.fromkeys(
        ["glue", "super_glue", "tweet_eval", "imdb", "emotion", "amazon_reviews_multi", "ag_news", "yelp_review_full",
         "yelp_polarity", "rotten_tomatoes", "financial_phrasebank", "dbpedia_14", "clinc_oos", "banking77",
         "sst2", "trec", "sms_spam", "ade_corpus_v2", "indonlu", "klue", "tamilmixsentiment", "emo", "go_emotions",
         "snli", "multi_nli", "anli", "xnli", "paws", "hate_speech18", "poem_sentiment", "app_reviews"],
        "text-classification"),
}
#: Datasets that a base model's language-modelling run uses (task: text-generation or fill-mask by the model).
LM_DATASETS = {"wikitext", "oscar", "bookcorpus", "c4", "wikipedia", "cc100", "openwebtext"}

#: Multi-task benchmarks whose name alone does not identify the task: name -> its configs.
BENCHMARK_CONFIGS: dict[str, tuple[str, ...]] = {
    "glue": ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"),
    "super_glue": ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "axb", "axg"),
    "tweet_eval": ("emoji", "emotion", "hate", "irony", "offensive", "sentiment", "stance_abortion",
                   "stance_atheism", "stance_climate", "stance_feminist", "stance_hillary"),
}
#: Card spellings of datasets -> their Hub names.
DATASET_NAMES = {
    "cnn/dailymail": "cnn_dailymail",
    "cnn_dailymail": "cnn_dailymail",
    "squadv1": "squad",
    "squad_v1": "squad",
    "squad1.1": "squad",
    "squadv2": "squad_v2",
    "squad2": "squad_v2",
}
#: Words of a free-text dataset phrase that mean "no identifiable dataset".
VAGUE_DATASET_WORDS = {
    "none", "unknown", "unkown", "custom", "our", "my", "own", "private", "the", "a", "an", "some", "texts", "this",
    "their", "internal", "mysterious", "proprietary", "in-house", "company",
}



@dataclass
class CardContext:
    """What is known about a card besides its text: the fine-tuned model's id, its Hub tags, its config.json."""

    model_id: str
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None


def card_dataset(parts: CardParts, ctx: CardContext, axolotl: dict[str, Any]) -> str:
    """The canonical dataset: model-index ``type/args`` > "on the X dataset" > front matter ``datasets`` > Hub
    ``dataset:`` tags > the axolotl config's datasets. The front matter's ``datasets`` (the Trainer's dataset tags)
    arbitrate when the sentence and the model-index disagree.

    Raises:
        RecordProblem: the card names no identifiable dataset, or a benchmark without its task.
    """
    fm = parts.front_matter
    declared = _declared_datasets(fm, ctx)
    indexed = [n for n in (_dataset_from_index(ds) for ds in parts.model_index.datasets) if n]
    said, strong = _dataset_from_phrase(parts.dataset_phrase, declared) if parts.dataset_phrase else (None, False)
    ordered: list[str] = []
    if said is not None:
        with_config = [n for n in indexed if n.startswith(said + "/")]
        ordered.append(with_config[0] if with_config else said)
        if not strong and not with_config:
            ordered = [*indexed, *ordered]
    ordered += [n for n in indexed if n not in ordered]
    known = {canonical_dataset(d) for d in declared}
    agreeing = [c for c in ordered if any(c == d or c.startswith(d + "/") for d in known)]
    name = (agreeing or ordered or [None])[0]
    if name is None:
        fallback = declared or axolotl_datasets(axolotl)
        if fallback:
            name = "+".join(dict.fromkeys(canonical_dataset(d) for d in fallback[:4]))
    if name is None:
        phrase = parts.dataset_phrase
        why = f"the card names it {phrase!r}" if phrase else "the card names none"
        raise RecordProblem("dataset.name", f"no dataset: {why}")
    return _complete_config(name, ctx.model_id, fm, ctx.tags)


def _dataset_from_index(ds: dict[str, Any]) -> str | None:
    hub = ds.get("type") or ds.get("name")
    if not isinstance(hub, str) or not hub.strip() or hub.strip().lower() in VAGUE_DATASET_WORDS:
        return None
    hub = hub.strip()
    if " " in hub and not HUB_ID.fullmatch(hub):
        hub = re.sub(r"\s+", "_", hub)
    config = ds.get("args", ds.get("config"))
    if isinstance(config, dict):
        config = config.get("name") or config.get("config") or config.get("lang")
    return _with_config(hub, config if isinstance(config, str) else None)


def _with_config(hub: str, config: str | None) -> str:
    """``hub/config`` canonical, without a config that only repeats the dataset's name (``conll2003/conll2003``)."""
    hub = DATASET_NAMES.get(hub.strip().lower(), hub.strip())
    if config is None or not config.strip() or config.strip().lower() in ("default", "none", "plain_text", "na"):
        return canonical_dataset(hub)
    config = config.strip()
    if re.sub(r"[^a-z0-9]", "", config.lower()) == re.sub(r"[^a-z0-9]", "", hub.lower().rsplit("/", 1)[-1]):
        return canonical_dataset(hub)
    return canonical_dataset(f"{hub}/{config}")


def _declared_datasets(fm: dict[str, Any], ctx: CardContext) -> list[str]:
    declared = fm.get("datasets", fm.get("dataset"))
    if isinstance(declared, str):
        declared = [declared]
    names = [d for d in declared or [] if isinstance(d, str) and d.strip()]
    names += [t.split(":", 1)[1] for t in ctx.tags if t.startswith("dataset:")]
    return list(dict.fromkeys(n.strip() for n in names))


def _dataset_from_phrase(phrase: str, declared: list[str]) -> tuple[str | None, bool]:
    """A canonical dataset name from "on the X dataset" (None when X names no identifiable dataset), and whether
    it is a strong name (a Hub id, ``NAME - CONFIG`` or ``GLUE TASK``) rather than free text."""
    text = re.sub(r"[\[\]`*]", "", phrase).strip().strip(".,;:")
    glue = re.fullmatch(r"(GLUE|SUPER_?GLUE)\s+(\w+)", text, re.I)
    if glue:
        bench = "glue" if glue.group(1).lower() == "glue" else "super_glue"
        return canonical_dataset(f"{bench}/{glue.group(2).lower()}"), True
    pieces = [p.strip() for p in re.split(r",|\s+and\s+|\s+&\s+", text) if p.strip()]
    found = [_phrase_piece(p, declared) for p in pieces]
    names = [n for n, _ in found if n]
    if not names:
        return None, False
    return "+".join(dict.fromkeys(names)), all(strong for n, strong in found if n)


def _phrase_piece(piece: str, declared: list[str]) -> tuple[str | None, bool]:
    piece = re.sub(r"^(?:the|a|an)\s+", "", piece, flags=re.I).strip()
    words = piece.split()
    if not words or words[0].lower() in VAGUE_DATASET_WORDS:
        return None, False
    if " - " in piece:
        hub, config = (s.strip() for s in piece.split(" - ", 1))
        hub = hub.split()[-1] if hub.split() else ""
        hub = _match_declared(hub, declared) or hub
        if not hub:
            return None, False
        return _with_config(hub.lower(), config.strip("-").strip().lower()), True
    match = _match_declared(piece, declared)
    if match:
        return _with_config(match, None), True
    if HUB_ID.fullmatch(piece):
        return _with_config(piece, None), True
    if len(words) > 4 or any(w.lower() in VAGUE_DATASET_WORDS for w in words) or re.search(
            r"\d+\s+(?:hours|epochs)", piece, re.I):
        return None, False
    return canonical_dataset(piece), False


def _match_declared(piece: str, declared: list[str]) -> str | None:
    """The declared dataset id (front matter / tags) whose letters contain the phrase's ("Common Voice 11.0" ->
    mozilla-foundation/common_voice_11_0)."""
    key = re.sub(r"[^a-z0-9]", "", piece.lower())
    for d in declared:
        if key and key in re.sub(r"[^a-z0-9]", "", d.lower()):
            return d
    return None


def _complete_config(name: str, model_id: str, fm: dict[str, Any], tags: list[str]) -> str:
    """Add the task of a benchmark named alone (from the model id) or the language of a speech corpus."""
    if name in BENCHMARK_CONFIGS:
        tokens = set(re.split(r"[^a-z0-9]+", model_id.lower().replace("sst-2", "sst2").replace("sts-b", "stsb")))
        found = [c for c in BENCHMARK_CONFIGS[name] if c in tokens]
        if len(found) != 1:
            raise RecordProblem("dataset.name", f"dataset {name!r} names a benchmark without its task (config) and "
                                f"the model id {model_id!r} does not name one")
        return canonical_dataset(f"{name}/{found[0]}")
    if _SPEECH_CORPUS.match(name):
        langs = _languages(fm, tags)
        if len(langs) == 1:
            return f"{name}/{langs[0]}"
    return name


_SPEECH_CORPUS = re.compile(r"^(?:mozilla-foundation/)?common_voice(?:_[\d_]+)?$|^(?:google/)?fleurs$")


def _languages(fm: dict[str, Any], tags: list[str]) -> list[str]:
    lang = fm.get("language", fm.get("languages"))
    langs = [lang] if isinstance(lang, str) else [x for x in lang or [] if isinstance(x, str)]
    if not langs:
        langs = [t for t in tags if re.fullmatch(r"[a-z]{2,3}(?:-[A-Za-z]{2,4})?", t)]
    return list(dict.fromkeys(x.lower() for x in langs))


# --- task ---------------------------------------------------------------------------------------------------------


def _normalize_task(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    key = name.strip().lower().replace("_", "-")
    key = TASK_ALIASES.get(key, key)
    return key if key in DIRECT_TASKS or key in OTHER_TASKS else None


def hub_task(parts: CardParts, ctx: CardContext, final: dict[str, float], dataset: str, base: str) -> str | None:
    """The Hub task name (pipeline tag spelling) of the run: model-index task > ``pipeline_tag`` > a pipeline-task
    Hub tag or card tag > the metric signature > the dataset > words in the model ids; None when nothing tells."""
    fm = parts.front_matter
    index_task = parts.model_index.task
    for candidate in (index_task.get("type"), index_task.get("name"), fm.get("pipeline_tag")):
        task = _normalize_task(candidate)
        if task:
            return task
    for tag in list(ctx.tags) + [t for t in fm.get("tags") or [] if isinstance(t, str)]:
        task = _normalize_task(tag)
        if task:
            return task
    return (_task_from_metrics(final) or _task_from_dataset(dataset, base, final)
            or _task_from_ids(ctx.model_id, base, final))


def _task_from_metrics(final: dict[str, float]) -> str | None:
    names = set(final)
    if names & {"wer", "cer"}:
        return "automatic-speech-recognition"
    if any(n.startswith("rouge") for n in names):
        return "summarization"
    if "bleu" in names:
        return "translation"
    if "exact_match" in names:
        return "question-answering"
    return None


def _task_from_dataset(dataset: str, base: str, final: dict[str, float]) -> str | None:
    head = dataset.split("+")[0].split("/")[0]
    if head in LM_DATASETS:
        return "text-generation" if _is_causal(base) else "fill-mask"
    if _AUDIO.search(base.lower()) and not final.keys() & {"wer", "cer"}:
        return None
    flat = dataset.split("+")[0]
    if "common_voice" in flat or "librispeech" in flat:
        return "automatic-speech-recognition"
    return DATASET_TASKS.get(head)


def _is_causal(model: str) -> bool:
    return bool(re.search(r"gpt|opt-|llama|bloom|pythia|mistral|falcon|codegen|neo|phi-|qwen|gemma", model.lower()))


_AUDIO = re.compile(r"wav2vec|hubert|whisper|wavlm|xls-?r|xlsr|unispeech|(?:^|[/_-])sew|speech|audio|(?:^|/)ast-")
_VISION = re.compile(r"(?:^|[/_-])vit(?:$|[/_-])|convnext|swin|beit|deit|resnet|image|segformer|mobilevit|"
                     r"efficientnet|dinov2|levit|regnet|poolformer|(?:^|/)cvt")
_CLASSIFICATION_METRICS = {"accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "matthews_correlation",
                           "pearson", "spearman", "mae", "mse", "rmse", "precision", "recall", "roc_auc"}


def _task_from_ids(model_id: str, base: str, final: dict[str, float]) -> str | None:
    """The task from words of the model ids, then from the base model's modality and the metrics."""
    ids = f"{model_id} {base}".lower()
    tokens = set(re.split(r"[^a-z0-9]+", ids))
    classifies = bool(final.keys() & _CLASSIFICATION_METRICS)
    if _AUDIO.search(base.lower()):
        if final.keys() & {"wer", "cer"}:
            return "automatic-speech-recognition"
        return "audio-classification" if classifies else None
    if _VISION.search(base.lower()):
        return "image-classification" if classifies else None
    rules: list[tuple[bool, str]] = [
        (bool(tokens & {"ner", "pos", "token", "conll", "conll2003", "wnut"}), "token-classification"),
        (bool(tokens & {"squad", "squad2", "squadv2", "qa"}), "question-answering"),
        ("swag" in tokens, "multiple-choice"),
        (bool(re.search(r"summar|xsum|cnn|samsum", ids)), "summarization"),
        (bool(re.search(r"translat|opus-mt|\ben-(?:ro|de|fr|es)\b", ids)), "translation"),
        (bool(tokens & {"mlm", "pretraining", "pretrained"}), "fill-mask"),
        (classifies, "text-classification"),
        (_is_causal(base), "text-generation"),
    ]
    return next((task for hit, task in rules if hit), None)


def record_task_type(hf_task: str | None, final: dict[str, float]) -> str:
    """The record's task type for a Hub task name."""
    if hf_task is None:
        return "other"
    if hf_task in DIRECT_TASKS:
        return hf_task
    if hf_task == "text2text-generation":
        names = set(final)
        if any(n.startswith("rouge") for n in names):
            return "summarization"
        if "bleu" in names:
            return "translation"
        return "text-generation"
    return "other"


_AXOLOTL_BLOCK = re.compile(r"```ya?ml\s*\n(.*?)```", re.S)


def axolotl_config(text: str) -> dict[str, Any]:
    """The axolotl training config a card embeds in a ```yaml block (base_model, adapter, lora_*), or {}."""
    if "axolotl" not in text.lower():
        return {}
    import yaml

    for block in _AXOLOTL_BLOCK.findall(text):
        if "base_model" not in block:
            continue
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def axolotl_datasets(axolotl: dict[str, Any]) -> list[str]:
    """The Hub datasets (``datasets[].path``) of an axolotl config."""
    datasets = axolotl.get("datasets")
    if not isinstance(datasets, list):
        return []
    return [d["path"] for d in datasets if isinstance(d, dict) and isinstance(d.get("path"), str)
            and not d["path"].startswith((".", "/"))]


__all__ = ["LM_TASKS", "CardContext", "axolotl_config", "axolotl_datasets", "card_dataset", "hub_task",
           "record_task_type"]
