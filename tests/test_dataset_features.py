"""Dataset meta-features on the real public text datasets (``$METAML_PUBLIC_DATA/text``, never copied here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from collector.features._dataset import compute_meta_features, guess_language, stratified_subsample
from collector.features._public_text import (
    PUBLIC_TEXT_DATASETS,
    describe_public_texts,
    load_public_text,
    public_text_source,
)
from collector.features._text_io import TextDataset, TextDatasetError
from collector.schema._record import DatasetMeta
from collector.schema._vocab import canonical_dataset
from service.cli.describe import default_public_text_root, describe

#: Rows kept per dataset (stratified, seeded) for the whole-collection checks, and the landmark's sample there.
SUBSAMPLE = 4000
LANDMARK = 600
PAIR_DATASETS = ["glue/rte", "glue/mnli", "glue/qnli", "super_glue/cb", "anli"]


@pytest.fixture(scope="module")
def text_root(public_data: Path) -> Path:
    """The folder of the 22 raw text datasets; skips when it is absent."""
    root = public_data / "text"
    if not root.is_dir():
        pytest.skip(f"no public text datasets at {root}")
    return root


@pytest.fixture(scope="module")
def loaded(text_root: Path) -> dict[str, TextDataset]:
    """Every public text dataset, read in full once (about 3 s)."""
    return {folder: load_public_text(text_root, folder) for folder in PUBLIC_TEXT_DATASETS}


def _subsample(ds: TextDataset, size: int, seed: int = 0) -> TextDataset:
    """A stratified seeded subsample of a dataset (every class kept)."""
    if len(ds) <= size:
        return ds
    codes = np.unique(np.asarray([str(v) for v in ds.labels]), return_inverse=True)[1]
    idx = stratified_subsample(codes, size, seed=seed, min_per_class=1)
    return TextDataset(
        name=ds.name,
        split=ds.split,
        texts=[ds.texts[i] for i in idx],
        labels=[ds.labels[i] for i in idx],
        text_pairs=[ds.text_pairs[i] for i in idx] if ds.text_pairs is not None else None,
        source=ds.source,
    )


@pytest.fixture(scope="module")
def metas(loaded: dict[str, TextDataset]) -> dict[str, DatasetMeta]:
    """Meta-features of every public dataset on a stratified subsample of at most SUBSAMPLE rows (about 10 s)."""
    out = {}
    for folder, ds in loaded.items():
        sub = _subsample(ds, SUBSAMPLE)
        out[ds.name] = compute_meta_features(
            sub.texts, sub.labels, text_pairs=sub.text_pairs, landmark_sample=LANDMARK, seed=0
        )
        assert out[ds.name].n_samples == len(sub), folder
    return out


def test_table_covers_every_folder_with_canonical_names(text_root: Path) -> None:
    """Every folder under data/text has a table entry and back; each entry's name is already canonical."""
    folders = sorted(p.name for p in text_root.iterdir() if p.is_dir())
    assert sorted(PUBLIC_TEXT_DATASETS) == folders
    for folder, source in PUBLIC_TEXT_DATASETS.items():
        assert canonical_dataset(source.name) == source.name, folder
        assert canonical_dataset(folder) == source.name, folder
        assert public_text_source(source.name) is source
        if source.split == "train" and source.full_split:
            assert source.official_train_size == source.n_rows, folder


@pytest.mark.parametrize("folder", sorted(PUBLIC_TEXT_DATASETS))
def test_every_public_dataset_loads_with_origin_row_counts(loaded: dict[str, TextDataset], folder: str) -> None:
    """Each dataset loads with exactly the row count its ORIGIN.txt states, one label per text, non-empty texts, and
    a second text per row for the sentence-pair datasets only."""
    ds, source = loaded[folder], PUBLIC_TEXT_DATASETS[folder]
    assert len(ds) == source.n_rows
    assert len(ds.labels) == len(ds.texts)
    assert ds.name == source.name and ds.split == source.split
    assert all(label is not None for label in ds.labels)
    assert sum(1 for t in ds.texts if not t.strip()) <= 0.001 * len(ds)
    assert (ds.text_pairs is not None) == (source.name in PAIR_DATASETS)
    if ds.text_pairs is not None:
        assert len(ds.text_pairs) == len(ds)


def test_layouts_match_origin_details(loaded: dict[str, TextDataset], text_root: Path) -> None:
    """Spot checks of the per-folder layouts: TREC coarse labels and its bad byte read as a space, the emotion header
    skipped, DBpedia ids mapped to names, the sentiment parquet labels equal to cardiffnlp's label file, tweets
    stripped, SMS labels first."""
    trec = loaded["trec"]
    assert set(trec.labels) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert any("sister city" in t for t in trec.texts)
    assert set(loaded["emotion"].labels) == {"sadness", "joy", "love", "anger", "fear", "surprise"}
    assert "Artist" in set(loaded["dbpedia_14_subset"].labels) and len(set(loaded["dbpedia_14_subset"].labels)) == 14
    sentiment_labels = (text_root / "tweet_eval_sentiment" / "train_labels.txt").read_text().split()
    assert loaded["tweet_eval_sentiment"].labels == [int(v) for v in sentiment_labels]
    assert not any(t != t.strip() for t in loaded["tweet_eval_irony"].texts)
    assert set(loaded["sms_spam"].labels) == {"ham", "spam"}
    assert loaded["sms_spam"].labels.count("spam") == 747
    assert set(loaded["glue_cola"].labels) == {0, 1}


def test_meta_features_within_range(metas: dict[str, DatasetMeta]) -> None:
    """On every dataset: shares and ratios lie in [0, 1], percentiles are ordered, the imbalance ratio matches the
    shares, the majority landmark equals the largest share, and the language guess is English."""
    for name, m in metas.items():
        assert m.n_classes is not None and m.n_classes >= 2, name
        assert 0 < m.min_class_share <= 1 / m.n_classes <= m.max_class_share < 1, name
        assert math.isclose(m.imbalance_ratio, m.max_class_share / m.min_class_share, rel_tol=1e-9), name
        assert 0 < m.class_entropy <= 1, name
        assert m.landmark_majority == m.max_class_share, name
        assert 0 <= m.landmark_tfidf_lr <= 1, name
        assert 0 < m.chars_p10 <= m.chars_p50 <= m.chars_p90, name
        assert 0 < m.tokens_p10 <= m.tokens_p50 <= m.tokens_p90, name
        assert m.tokens_mean < m.chars_mean, name
        assert 0.05 < m.type_token_ratio < 0.6, name
        assert 0 <= m.non_ascii_share < 0.05, name
        assert m.vocab_size > 1000, name
        assert m.language == "en", name


def test_known_class_counts(metas: dict[str, DatasetMeta]) -> None:
    """n_classes is right for datasets whose label sets are well known."""
    expected = {
        "glue/sst2": 2,
        "glue/cola": 2,
        "trec": 6,
        "banking77": 77,
        "emotion": 6,
        "ag_news": 4,
        "dbpedia_14": 14,
        "glue/mnli": 3,
        "super_glue/cb": 3,
        "tweet_eval/emoji": 20,
        "tweet_eval/emotion": 4,
        "tweet_eval/sentiment": 3,
        "imdb": 2,
    }
    assert {name: metas[name].n_classes for name in expected} == expected


def test_length_statistics_are_plausible(metas: dict[str, DatasetMeta]) -> None:
    """Known length orderings hold: IMDB reviews are long (median over 150 tokens), SST-2 phrases and TREC questions
    short, and pairs count both texts."""
    assert metas["imdb"].tokens_p50 > 150
    assert metas["glue/sst2"].tokens_p50 < 15 and metas["trec"].tokens_p50 < 15
    assert metas["glue/rte"].tokens_mean > 2 * metas["glue/sst2"].tokens_mean
    assert metas["tweet_eval/hate"].chars_p90 < 300


def test_pair_datasets_report_two_text_fields(metas: dict[str, DatasetMeta]) -> None:
    """Sentence-pair datasets (RTE, MNLI, QNLI, CB, ANLI) have n_text_fields 2; the others 1."""
    for name, m in metas.items():
        assert m.n_text_fields == (2 if name in PAIR_DATASETS else 1), name


def test_landmark_beats_majority_on_easy_datasets(metas: dict[str, DatasetMeta]) -> None:
    """TF-IDF + logistic regression is far above the majority class on topic classification (AG News, DBpedia)
    and clearly above it on IMDB sentiment."""
    for name, margin in (("ag_news", 0.4), ("dbpedia_14", 0.6), ("imdb", 0.2)):
        m = metas[name]
        assert m.landmark_tfidf_lr > m.landmark_majority + margin, (name, m.landmark_tfidf_lr)


def test_meta_features_are_deterministic(loaded: dict[str, TextDataset]) -> None:
    """The same inputs and seed give identical features; another seed changes only the sampled ones."""
    ds = _subsample(loaded["rotten_tomatoes"], 3000)
    a = compute_meta_features(ds.texts, ds.labels, landmark_sample=500, seed=0)
    b = compute_meta_features(list(ds.texts), list(ds.labels), landmark_sample=500, seed=0)
    c = compute_meta_features(ds.texts, ds.labels, landmark_sample=500, seed=1)
    assert a == b
    sampled = {"landmark_tfidf_lr", "type_token_ratio", "language"}
    assert a.model_dump(exclude=sampled) == c.model_dump(exclude=sampled)


def test_string_and_int_labels_give_the_same_features(loaded: dict[str, TextDataset]) -> None:
    """Labels as names or as ids describe the same dataset."""
    ds = _subsample(loaded["glue_rte"], 800)
    names = ds.labels
    ids = [0 if v == "entailment" else 1 for v in names]
    by_name = compute_meta_features(ds.texts, names, text_pairs=ds.text_pairs, landmark_sample=300)
    by_id = compute_meta_features(ds.texts, ids, text_pairs=ds.text_pairs, landmark_sample=300)
    assert by_name == by_id


def test_regression_labels_leave_label_features_empty(loaded: dict[str, TextDataset]) -> None:
    """Float targets with many distinct values (an STS-B-like similarity score) do not crash: text features are
    computed, n_classes / entropy / shares / landmarks are None."""
    ds = _subsample(loaded["glue_rte"], 500)
    scores = np.random.default_rng(0).uniform(0, 5, len(ds)).round(2).tolist()
    m = compute_meta_features(ds.texts, scores, text_pairs=ds.text_pairs)
    assert m.n_classes is None and m.class_entropy is None and m.imbalance_ratio is None
    assert m.landmark_tfidf_lr is None and m.landmark_majority is None
    assert m.n_samples == 500 and m.tokens_mean > 0 and m.n_text_fields == 2
    # Integer-valued floats are class ids, not a regression target.
    as_float = compute_meta_features(ds.texts, [float(i % 3) for i in range(len(ds))], landmark_sample=0)
    assert as_float.n_classes == 3


def test_bad_inputs_raise_value_error() -> None:
    """Empty data and mismatched lengths are refused with a clear message; unlabelled rows are left out."""
    with pytest.raises(ValueError, match="empty"):
        compute_meta_features([], [])
    with pytest.raises(ValueError, match="3 labels for 2 texts"):
        compute_meta_features(["a", "b"], [0, 1, 0])
    m = compute_meta_features(["good film", "bad film", "fine", None], ["pos", "neg", None, "pos"], landmark_sample=0)
    assert m.n_classes == 2 and m.max_class_share == pytest.approx(2 / 3) and m.n_samples == 4


def test_language_guess_on_other_languages() -> None:
    """The script + stopword guess names a dozen languages and abstains on too little or ambiguous text."""
    samples = {
        "en": "The film was not as good as I had hoped, but the actors were fine and it was worth the time.",
        "de": "Der Film war nicht so gut, wie ich gehofft hatte, aber die Schauspieler sind gut und es ist gut.",
        "fr": "Le film n'était pas aussi bon que je l'espérais, mais les acteurs sont bons et il est bon.",
        "es": "La película no fue tan buena como esperaba, pero los actores son muy buenos y el guion es para todos.",
        "nl": "De film was niet zo goed als ik had gehoopt, maar de acteurs zijn goed en het is leuk.",
        "ru": "Фильм был не так хорош, как я надеялся, но актёры были хороши, и это было интересно для всех нас.",
        "zh": "这部电影没有我希望的那么好，但是演员们都很好，值得一看。我们都很喜欢这个故事和音乐。",
        "ja": "この映画は期待したほど良くなかったが、俳優たちはとても良かった。また見たいと思います。",
        "ko": "이 영화는 기대했던 것만큼 좋지는 않았지만 배우들은 훌륭했고 볼 만한 가치가 있었습니다.",
        "el": "Η ταινία δεν ήταν τόσο καλή όσο περίμενα, αλλά οι ηθοποιοί ήταν πολύ καλοί και άξιζε τον χρόνο.",
        "ar": "لم يكن الفيلم جيدا كما كنت آمل، لكن الممثلين كانوا جيدين جدا وكان الفيلم يستحق المشاهدة.",
    }
    for lang, sentence in samples.items():
        assert guess_language((sentence + "\n") * 3) == lang, lang
    assert guess_language("") is None
    assert guess_language("ok") is None
    assert guess_language("xq zzv plkt mrrw " * 20) is None


def test_describe_public_texts_returns_canonical_names(text_root: Path) -> None:
    """describe_public_texts keys its result by canonical name and passes the table's domain through."""
    out = describe_public_texts(text_root, names=["superglue_cb", "trec"], landmark_sample=200, progress=False)
    assert set(out) == {"super_glue/cb", "trec"}
    assert out["trec"].domain == "questions" and out["trec"].n_samples == 5452
    assert out["super_glue/cb"].n_text_fields == 2
    with pytest.raises(TextDatasetError, match="unknown public text dataset"):
        load_public_text(text_root, "no_such_dataset")


def test_default_public_root_follows_the_environment(tmp_path: Path) -> None:
    """The CLI's default root is $METAML_PUBLIC_DATA/text, else ../shared/data/text beside the working directory."""
    assert default_public_text_root({"METAML_PUBLIC_DATA": str(tmp_path)}) == tmp_path / "text"
    assert default_public_text_root({}) == Path.cwd().parent / "shared" / "data" / "text"


def test_describe_command_prints_json_for_a_public_name(text_root: Path) -> None:
    """`describe glue/rte --json` exits 0 and prints JSON whose meta validates as DatasetMeta with two text fields."""
    result = CliRunner().invoke(
        describe, ["glue/rte", "--public-root", str(text_root), "--json", "--landmark-sample", "200"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["name"] == "glue/rte" and payload["split"] == "train"
    meta = DatasetMeta.model_validate(payload["meta"])
    assert meta.n_samples == 2490 and meta.n_text_fields == 2 and meta.domain == "news"


def test_describe_command_prints_an_aligned_table_for_a_file(text_root: Path) -> None:
    """`describe FILE` prints one `field  value` line per feature, values aligned in one column."""
    path = text_root / "superglue_cb" / "train.jsonl"
    result = CliRunner().invoke(describe, [str(path), "--name", "cb", "--landmark-sample", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "cb"]
    assert len({len(line) - len(line.split("  ")[-1].lstrip()) for line in lines}) == 1
    assert any(line.startswith("n_text_fields") and line.endswith("2") for line in lines)
    assert any(line.startswith("landmark_tfidf_lr") and line.endswith("-") for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/file.csv"], "no such file or folder"),
        (["{root}/glue_sst2/test.tsv"], "no label column found"),
        (["{root}/trec/TREC.train"], "unknown file format"),
        (["{root}/glue_qnli"], "no train.<csv"),
        (["glue/sst2", "--split", "test"], "only its train split"),
        (["glue/sst2", "--text-column", "x"], "do not apply to a public dataset"),
    ],
)
def test_describe_command_fails_with_one_line_on_bad_input(text_root: Path, args: list[str], message: str) -> None:
    """Bad input exits 1 with a single-line 'Error: ...' message and no traceback."""
    args = [a.format(root=text_root) for a in args]
    result = CliRunner().invoke(describe, [*args, "--public-root", str(text_root)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
