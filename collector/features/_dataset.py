"""Dataset meta-features computed from raw texts and labels.

Everything here is cheap and deterministic: text statistics are vectorized with pyarrow compute kernels (RE2 regexes
in C++), the language guess reads a seeded sample, and the only learned part (the TF-IDF + logistic regression
landmark) runs on a stratified subsample of at most ``landmark_sample`` rows.

Definitions (the contract of :func:`compute_meta_features`):

- **Tokens** come from a regex word tokenizer: Unicode letters/digits/marks/underscore runs are words, every
  punctuation or symbol character is a token of its own, every Han/Hiragana/Katakana character is a token of its own
  (no spaces in those scripts), control/format characters and variation selectors are separators. Tokens are
  lower-cased for ``vocab_size`` and ``type_token_ratio``.
- **Lengths** (``chars_*``, ``tokens_*``) are per row; for a text pair the row length is the sum of both texts, i.e.
  what a model reads. Characters are Unicode code points.
- **vocab_size** is the number of distinct lower-cased tokens over the whole dataset (both texts of a pair).
- **type_token_ratio** is distinct / total tokens over a fixed-size sample of :data:`TTR_SAMPLE_TOKENS` tokens: rows
  are shuffled (seeded) and their tokens taken in that order until the sample is full. Datasets with fewer tokens use
  all of them (the ratio is then biased upwards; a 250-row dataset of short sentences is the typical case).
- **non_ascii_share** is the share of *characters* (code points, over all texts) outside ASCII.
- **language** is an ISO 639-1 guess from the dominant Unicode script and, for Latin and Cyrillic scripts, stopword
  hit rates over a sample; ``None`` when the evidence is weak or ambiguous.
- **landmark_tfidf_lr** is the mean accuracy over 3 stratified folds of TF-IDF (word 1-2 grams, at most
  :data:`LANDMARK_MAX_FEATURES` features, sublinear tf) + ``LogisticRegression`` on a stratified, seeded subsample.
  The vectorizer is fitted once on the subsample (label-free, so no label leaks across folds). Pairs are joined with
  ``" | "``. Classes with fewer than 3 rows in the whole dataset are left out of the landmark.
- Labels with many distinct float values (regression targets such as STS-B scores) leave every label feature
  ``None``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector.schema._record import DatasetMeta

#: Tokens in the fixed-size sample the type-token ratio is computed on.
TTR_SAMPLE_TOKENS = 10_000
#: Feature cap of the TF-IDF landmark.
LANDMARK_MAX_FEATURES = 20_000
#: Folds of the landmark's cross-validation.
LANDMARK_FOLDS = 3
#: Characters of each text the landmark reads (keeps long-document datasets such as IMDB fast).
LANDMARK_MAX_CHARS = 2_000
#: Rows the language guess reads, and characters of each.
LANGUAGE_SAMPLE_ROWS = 1_000
LANGUAGE_SAMPLE_CHARS = 400
#: Float labels with more distinct values than this (and some non-integer value) are a regression target.
REGRESSION_MIN_DISTINCT = 20

# RE2 patterns (pyarrow). Separators: control and format characters, non-ASCII spaces, line/paragraph separators and
# variation selectors. ASCII whitespace is left alone (the split handles it; rewriting every space is 10x slower), and
# the classes are narrow on purpose (\p{C} includes the private-use and unassigned ranges and is slow).
_SEPARATORS = (
    r"[\x{00}-\x{08}\x{0E}-\x{1F}\x{7F}-\x{A0}\p{Cf}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}"
    r"\x{3000}\x{FE00}-\x{FE0F}]+"
)
# Characters that are tokens on their own: punctuation (but connector punctuation such as "_", a word character as in
# Python's \w), symbols, and the scripts written without spaces.
_SINGLE_CHAR_TOKENS = r"([\p{Pd}\p{Ps}\p{Pe}\p{Pi}\p{Pf}\p{Po}\p{S}\p{Han}\p{Hiragana}\p{Katakana}])"
_NON_ASCII = r"[^\x00-\x7F]"


def compute_meta_features(
    texts: Sequence[str],
    labels: Sequence[Any] | None,
    *,
    text_pairs: Sequence[str] | None = None,
    landmark_sample: int = 2000,
    seed: int = 0,
    domain: str | None = None,
) -> DatasetMeta:
    """Compute the :class:`~collector.schema.DatasetMeta` of a text classification dataset.

    See the module docstring for the exact definition of each feature. The result depends only on the inputs and
    ``seed``.

    Args:
        texts: one text per row (``None`` counts as an empty text).
        labels: one label per row: ints, strings or bools for classification, floats for regression; ``None``
            entries are unlabelled rows and are left out of the label features. ``None`` for an unlabelled dataset.
        text_pairs: the second text of each row for sentence-pair datasets (``n_text_fields`` is then 2).
        landmark_sample: most rows the TF-IDF landmark is trained and evaluated on; 0 skips the landmark.
        seed: seed of every sample drawn (landmark subsample and folds, TTR sample, language sample).
        domain: the dataset's domain when the caller knows it (news, social, reviews...); never guessed.

    Returns:
        The meta-features; label features are ``None`` for regression targets and unlabelled data.

    Raises:
        ValueError: no texts, ``labels`` / ``text_pairs`` of another length than ``texts``, or labels that are not
            one scalar per row.
    """
    n = len(texts)
    if n == 0:
        raise ValueError("cannot compute meta-features of an empty dataset (no texts)")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} texts")
    if text_pairs is not None and len(text_pairs) != n:
        raise ValueError(f"{len(text_pairs)} paired texts for {n} texts")
    if landmark_sample < 0:
        raise ValueError(f"landmark_sample must be >= 0, got {landmark_sample}")

    fields = [_to_arrow(texts)] + ([_to_arrow(text_pairs)] if text_pairs is not None else [])
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)

    out: dict[str, Any] = {"n_samples": n, "n_text_fields": len(fields), "domain": domain}
    out.update(_length_features(fields, order))
    out["language"] = guess_language(_sample_text(fields, order))

    label_info = _encode_labels(labels) if labels is not None else None
    if label_info is not None:
        codes, n_classes = label_info
        out.update(_label_features(codes, n_classes))
        if landmark_sample > 0 and n_classes >= 2:
            out["landmark_tfidf_lr"] = _landmark(fields, codes, landmark_sample, seed)
    return DatasetMeta(**out)


# --------------------------------------------------------------------------------------------------- text statistics


def _to_arrow(values: Sequence[Any]) -> pa.Array:
    """Texts as a null-free Arrow string array."""
    try:
        arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array([None if v is None else str(v) for v in values], type=pa.large_string())
    return pc.fill_null(arr, "")


def _tokenize(arr: pa.Array) -> pa.Array:
    """Lower-cased regex word tokens of each text, as an Arrow list array (one list per row)."""
    spaced = pc.replace_substring_regex(arr, pattern=_SEPARATORS, replacement=" ")
    spaced = pc.replace_substring_regex(spaced, pattern=_SINGLE_CHAR_TOKENS, replacement=r" \1 ")
    # Arrow's split keeps an empty token for leading/trailing whitespace: trim first.
    return pc.ascii_split_whitespace(pc.ascii_trim_whitespace(pc.utf8_lower(spaced)))


def _stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        f"{prefix}_mean": float(values.mean()),
        f"{prefix}_std": float(values.std()),
        f"{prefix}_p10": float(p10),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p90": float(p90),
    }


def _length_features(fields: list[pa.Array], order: np.ndarray) -> dict[str, Any]:
    """Character and token length statistics, vocabulary size, type-token ratio and non-ASCII share."""
    n = len(fields[0])
    chars = np.zeros(n, dtype=np.int64)
    tokens = np.zeros(n, dtype=np.int64)
    non_ascii = 0
    token_lists = []
    for arr in fields:
        chars += pc.utf8_length(arr).to_numpy(zero_copy_only=False)
        non_ascii += int(pc.sum(pc.count_substring_regex(arr, pattern=_NON_ASCII)).as_py() or 0)
        toks = _tokenize(arr)
        tokens += pc.list_value_length(toks).to_numpy(zero_copy_only=False)
        token_lists.append(toks)
    total_chars = int(chars.sum())
    out: dict[str, Any] = {**_stats(chars, "chars"), **_stats(tokens, "tokens")}
    out["non_ascii_share"] = non_ascii / total_chars if total_chars else 0.0

    flat = pa.chunked_array([pc.list_flatten(t) for t in token_lists])
    out["vocab_size"] = int(pc.count_distinct(flat).as_py())
    out["type_token_ratio"] = _type_token_ratio(token_lists, tokens, order)
    return out


def _type_token_ratio(token_lists: list[pa.Array], tokens_per_row: np.ndarray, order: np.ndarray) -> float | None:
    """Distinct / total over the first :data:`TTR_SAMPLE_TOKENS` tokens of the rows taken in shuffled order."""
    cumulative = np.cumsum(tokens_per_row[order])
    if cumulative.size == 0 or cumulative[-1] == 0:
        return None
    n_rows = int(np.searchsorted(cumulative, TTR_SAMPLE_TOKENS)) + 1
    rows = pa.array(order[:n_rows])
    # Interleave the fields row by row: a pair's two texts are read together, as a model reads them.
    per_field = [pc.take(t, rows) for t in token_lists]
    if len(per_field) == 1:
        sample = pc.list_flatten(per_field[0])
    else:
        joined = [a + b for a, b in zip(*(f.to_pylist() for f in per_field), strict=True)]
        sample = pa.array([tok for row in joined for tok in row], type=pa.large_string())
    sample = sample.slice(0, TTR_SAMPLE_TOKENS)
    return int(pc.count_distinct(sample).as_py()) / len(sample) if len(sample) else None


def _sample_text(fields: list[pa.Array], order: np.ndarray) -> str:
    """A seeded sample of rows (truncated) joined into one string, for the language guess."""
    rows = pa.array(order[:LANGUAGE_SAMPLE_ROWS])
    parts: list[str] = []
    for arr in fields:
        parts.extend(pc.utf8_slice_codeunits(pc.take(arr, rows), 0, LANGUAGE_SAMPLE_CHARS).to_pylist())
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------- labels


def _encode_labels(labels: Sequence[Any]) -> tuple[np.ndarray, int] | None:
    """Integer class codes (-1 = unlabelled) and the number of classes; ``None`` for regression or no labels."""
    import pandas as pd

    try:
        arr = labels.to_numpy() if isinstance(labels, pd.Series) else np.asarray(labels)
    except ValueError as e:  # ragged lists
        raise ValueError("labels must hold one scalar per row (multi-label data is not supported)") from e
    if arr.ndim != 1:
        raise ValueError("labels must hold one scalar per row (multi-label data is not supported)")
    if arr.dtype.kind == "f":
        present = arr[~np.isnan(arr)]
        if present.size == 0:
            return None
        distinct = np.unique(present)
        if (distinct != np.round(distinct)).any() and len(distinct) > REGRESSION_MIN_DISTINCT:
            return None
    elif arr.dtype.kind == "O":
        missing = pd.isna(arr)
        present = arr[~missing]
        if present.size == 0:
            return None
        if all(_is_real(v) and not isinstance(v, bool | np.bool_) for v in present):
            return _encode_labels(np.where(missing, np.nan, arr).astype(float))
        arr = np.array([None if m else str(v) for v, m in zip(arr, missing, strict=True)], dtype=object)
    codes, uniques = pd.factorize(arr, sort=True, use_na_sentinel=True)
    if len(uniques) == 0:
        return None
    return np.asarray(codes, dtype=np.int64), len(uniques)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def _label_features(codes: np.ndarray, n_classes: int) -> dict[str, Any]:
    counts = np.bincount(codes[codes >= 0], minlength=n_classes).astype(float)
    shares = counts / counts.sum()
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    return {
        "n_classes": n_classes,
        "class_entropy": min(1.0, entropy / math.log(n_classes)) if n_classes > 1 else None,
        "min_class_share": float(shares.min()),
        "max_class_share": float(shares.max()),
        "imbalance_ratio": float(counts.max() / counts.min()),
        "landmark_majority": float(shares.max()),
    }


# --------------------------------------------------------------------------------------------------------- landmark


def stratified_subsample(codes: np.ndarray, size: int, *, seed: int = 0, min_per_class: int = 0) -> np.ndarray:
    """Indices of a stratified random subsample (sorted), proportional to class counts.

    Args:
        codes: class code per row, ``-1`` for rows to leave out.
        size: most rows to draw; all labelled rows when there are fewer.
        seed: random seed.
        min_per_class: rows every class keeps (or all its rows when it has fewer), budget permitting.

    Returns:
        Sorted row indices.
    """
    labelled = np.flatnonzero(codes >= 0)
    if len(labelled) <= size:
        return labelled
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(codes[labelled], return_counts=True)
    floors = np.minimum(counts, min_per_class)
    if floors.sum() > size:
        floors[:] = 0
    budget = size - int(floors.sum())
    spare = counts - floors
    exact = budget * spare / spare.sum()
    quota = np.floor(exact).astype(np.int64)
    leftover = budget - int(quota.sum())
    if leftover > 0:
        by_remainder = np.lexsort((np.arange(len(exact)), -(exact - quota)))
        quota[by_remainder[:leftover]] += 1
    quota += floors
    picked = [
        rng.choice(labelled[codes[labelled] == c], size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
        if q > 0
    ]
    return np.sort(np.concatenate(picked))


def _landmark(fields: list[pa.Array], codes: np.ndarray, sample: int, seed: int) -> float | None:
    """3-fold stratified CV accuracy of TF-IDF + logistic regression on a stratified subsample."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(codes[codes >= 0])
    usable = np.where((codes >= 0) & (counts[np.maximum(codes, 0)] >= LANDMARK_FOLDS), codes, -1)
    idx = stratified_subsample(usable, sample, seed=seed, min_per_class=LANDMARK_FOLDS)
    y = usable[idx]
    if len(np.unique(y)) < 2:
        return None
    rows = pa.array(idx)
    parts = [pc.utf8_slice_codeunits(pc.take(arr, rows), 0, LANDMARK_MAX_CHARS) for arr in fields]
    docs = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, pa.scalar(" | ", pa.large_string()))
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), max_features=LANDMARK_MAX_FEATURES, sublinear_tf=True, dtype=np.float32
    )
    x = vectorizer.fit_transform(docs.to_pylist())
    folds = StratifiedKFold(n_splits=LANDMARK_FOLDS, shuffle=True, random_state=seed)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in folds.split(x, y):
            # newton-cg: deterministic, and 10-30x faster than lbfgs on many classes x 20k sparse features.
            model = LogisticRegression(solver="newton-cg", tol=1e-3, max_iter=200)
            model.fit(x[train], y[train])
            scores.append(float((model.predict(x[test]) == y[test]).mean()))
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------------------- language

# (first code point, last code point, script)
_SCRIPT_RANGES: list[tuple[int, int, str]] = sorted(
    [
        (0x0041, 0x005A, "latin"),
        (0x0061, 0x007A, "latin"),
        (0x00C0, 0x00D6, "latin"),
        (0x00D8, 0x00F6, "latin"),
        (0x00F8, 0x024F, "latin"),
        (0x1E00, 0x1EFF, "latin"),
        (0x0370, 0x03FF, "greek"),
        (0x1F00, 0x1FFF, "greek"),
        (0x0400, 0x052F, "cyrillic"),
        (0x0530, 0x058F, "armenian"),
        (0x0590, 0x05FF, "hebrew"),
        (0x0600, 0x06FF, "arabic"),
        (0x0750, 0x077F, "arabic"),
        (0xFB50, 0xFDFF, "arabic"),
        (0xFE70, 0xFEFF, "arabic"),
        (0x0900, 0x097F, "devanagari"),
        (0x0980, 0x09FF, "bengali"),
        (0x0B80, 0x0BFF, "tamil"),
        (0x0E00, 0x0E7F, "thai"),
        (0x10A0, 0x10FF, "georgian"),
        (0x1100, 0x11FF, "hangul"),
        (0x3130, 0x318F, "hangul"),
        (0xAC00, 0xD7AF, "hangul"),
        (0x3040, 0x30FF, "kana"),
        (0x3400, 0x4DBF, "han"),
        (0x4E00, 0x9FFF, "han"),
    ]
)
_RANGE_STARTS = np.array([r[0] for r in _SCRIPT_RANGES], dtype=np.int64)
_RANGE_ENDS = np.array([r[1] for r in _SCRIPT_RANGES], dtype=np.int64)
_RANGE_SCRIPTS = [r[2] for r in _SCRIPT_RANGES]
#: Scripts used by one language only (for our purposes).
_SCRIPT_LANGUAGE = {
    "greek": "el",
    "armenian": "hy",
    "hebrew": "he",
    "devanagari": "hi",
    "bengali": "bn",
    "tamil": "ta",
    "thai": "th",
    "georgian": "ka",
    "hangul": "ko",
}
_PERSIAN_LETTERS = set("پچژگکی")

_STOPWORDS: dict[str, dict[str, frozenset[str]]] = {
    "latin": {
        lang: frozenset(words.split())
        for lang, words in {
            "en": "the and of to is in that it for was with on as this be are you have not but at by from they his "
            "her she he we i my me an or had were will would there what which so if about their has been just do "
            "can your",
            "de": "der die das und ist nicht ein eine ich sie es zu den dem mit von auf für sich auch wir wie aber "
            "noch nur oder wenn dass war sind werden hat haben bei aus nach einen einer kann",
            "fr": "le la les et est une un des du que qui pas pour dans sur au aux avec ce cette il elle je nous vous "
            "ils sont mais ou par plus ne se son sa ses été être",
            "es": "el los las y que en es por con una un para del al se lo como pero más su sus le muy está son ya fue "
            "este esta también porque sin sobre hay yo mi",
            "it": "il lo gli la le e di che è non un una per con del della dei delle nel nella sono ma come anche più "
            "questo questa si da al alla ho ha io mi ci",
            "pt": "o os a as e de que não um uma para com do da dos das no na nos em por mais se ao é foi mas como eu "
            "ele ela seu sua também está são",
            "nl": "de het een en van ik te dat die in is niet op zijn met voor je er maar om ook als aan bij nog wat "
            "was wordt naar dan zo deze hij ze worden kan heeft geen uit",
            "sv": "och att det som en ett är på för med den till av inte jag har de om var men så kan vi från du han "
            "hon sig vid eller när detta man mycket",
            "da": "og at det som en et er på for med den til af ikke jeg har de om var men så kan vi fra du han hun "
            "sig ved eller når dette meget også",
            "pl": "i w z na nie się do to jest że o a jak ale po co tak za od przez dla jego już czy tylko był jej są "
            "ten ta może mnie jestem",
            "tr": "ve bir bu da de için ile çok ne ama gibi daha olan var ben sen o ki mi değil en kadar sonra her şey "
            "olarak yok",
            "id": "yang dan di ini itu dengan untuk tidak dari dalam akan pada ke ada saya juga adalah bisa atau kita "
            "mereka sudah karena oleh seperti tapi aku kamu",
            "fi": "ja on ei se että oli ole kuin mutta niin joka hän minä tämä ovat myös jos sen kun vain mitä olen "
            "sinä me te he",
            "cs": "a se na je že v to s z do o jsem jako ale pro by tak jsou už jeho které který jak bylo být také "
            "není",
            "ro": "și în la cu nu pe este o un care din să ca mai pentru sunt ce dar sau fost acest această",
        }.items()
    },
    "cyrillic": {
        lang: frozenset(words.split())
        for lang, words in {
            "ru": "и в не на что я с он как это по но к у из за то так же от все она мы вы был его для ты только было",
            "uk": "і в не на що я з він як це по але до у та так же від все вона ми ви був його для ти тільки було й є "
            "із",
            "bg": "и в не на че аз с той как това по но за да се от са е ще тя ние вие беше към със му ги",
        }.items()
    },
}
_WORD = re.compile(r"[^\W\d_]+")
#: Fewest letters in the sample for any guess; least stopword hit rate; least ratio of best to second-best rate.
_MIN_LETTERS = 50
_MIN_STOPWORD_RATE = 0.08
_MIN_STOPWORD_MARGIN = 1.5


def guess_language(text: str) -> str | None:
    """Guess the ISO 639-1 language of a text sample from its script and stopwords.

    Args:
        text: a sample of the dataset's texts (a few hundred kilobytes at most is plenty).

    Returns:
        A two-letter code such as ``en``, or ``None`` when the sample is too small, mixes scripts, or no language's
        stopwords clearly dominate.
    """
    if not text:
        return None
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    slot = np.searchsorted(_RANGE_STARTS, points, side="right") - 1
    inside = (slot >= 0) & (points <= _RANGE_ENDS[np.maximum(slot, 0)])
    if inside.sum() < _MIN_LETTERS:
        return None
    per_script: Counter[str] = Counter()
    for s, c in zip(*np.unique(slot[inside], return_counts=True), strict=True):
        per_script[_RANGE_SCRIPTS[int(s)]] += int(c)
    total = sum(per_script.values())
    if per_script["han"] + per_script["kana"] > 0.5 * total:
        return "ja" if per_script["kana"] > 0.05 * (per_script["han"] + per_script["kana"]) else "zh"
    script, count = per_script.most_common(1)[0]
    if count < 0.5 * total:
        return None
    if script in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[script]
    if script == "arabic":
        persian = sum(text.count(ch) for ch in _PERSIAN_LETTERS)
        return "fa" if persian > 0.02 * count else "ar"
    return _stopword_guess(text, _STOPWORDS[script])


def _stopword_guess(text: str, lists: dict[str, frozenset[str]]) -> str | None:
    words = _WORD.findall(text.lower())
    if len(words) < 20:
        return None
    counts = Counter(words)
    rates = sorted(
        ((sum(counts[w] for w in stop) / len(words), lang) for lang, stop in lists.items()),
        reverse=True,
    )
    (best, lang), (second, _) = rates[0], rates[1]
    if best < _MIN_STOPWORD_RATE or best < _MIN_STOPWORD_MARGIN * second:
        return None
    return lang
