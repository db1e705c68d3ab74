"""Reading labelled text datasets: CSV/TSV/JSONL/Parquet files and Hugging Face ``save_to_disk`` folders."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from collector.errors import CollectorError, FormatError
from collector.features._text_io import TextDatasetError, load_text_dataset
from service.cli.describe import describe

TEXTS = ["a great film", "dull and slow", "I loved it", "not for me", "wonderful cast", "boring plot"]
LABELS = [1, 0, 1, 0, 1, 0]


def _features(label_column: str) -> dict:
    """The ``features`` mapping of a dataset_info.json, as ``datasets`` writes it (Value + ClassLabel)."""
    return {
        "text": {"dtype": "string", "_type": "Value"},
        label_column: {"names": ["neg", "pos"], "_type": "ClassLabel"},
    }


def write_saved_dataset(
    folder: Path, columns: dict[str, list], *, label_column: str = "label", shards: int = 1, split: str = "train"
) -> None:
    """Lay out a folder the way ``datasets.Dataset.save_to_disk`` does, without the ``datasets`` library.

    ``data-XXXXX-of-YYYYY.arrow`` files in Arrow IPC *stream* format (schema metadata ``huggingface`` carries the
    features), ``state.json`` listing the data files in order, and ``dataset_info.json`` with the features.
    """
    folder.mkdir(parents=True)
    features = _features(label_column)
    schema = pa.schema(
        [pa.field("text", pa.string()), pa.field(label_column, pa.int64())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    table = pa.table(columns, schema=schema)
    per_shard = -(-table.num_rows // shards)
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    for i, name in enumerate(names):
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table.slice(i * per_shard, per_shard))
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    info = {"builder_name": None, "citation": "", "config_name": None, "description": "", "features": features}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))


def write_saved_dataset_dict(folder: Path, splits: dict[str, dict[str, list]]) -> None:
    """Lay out a ``DatasetDict.save_to_disk`` folder: ``dataset_dict.json`` and one dataset folder per split."""
    for split, columns in splits.items():
        write_saved_dataset(folder / split, columns, split=split)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))


def test_reads_a_save_to_disk_dataset(tmp_path: Path) -> None:
    """A save_to_disk folder (Arrow stream shards + state.json + dataset_info.json) reads back in shard order."""
    write_saved_dataset(tmp_path / "movies", {"text": TEXTS, "label": LABELS}, shards=3)
    ds = load_text_dataset(tmp_path / "movies")
    assert ds.texts == TEXTS and ds.labels == LABELS
    assert ds.name == "movies" and ds.split == "train" and ds.text_pairs is None
    assert ds.source == str(tmp_path / "movies")


def test_a_class_label_column_is_found_by_type(tmp_path: Path) -> None:
    """In a save_to_disk folder a ClassLabel column is the label even when its name is not a usual label name."""
    write_saved_dataset(tmp_path / "d", {"text": TEXTS, "polarity": LABELS}, label_column="polarity")
    assert load_text_dataset(tmp_path / "d").labels == LABELS
    (tmp_path / "d" / "dataset_info.json").unlink()  # the Arrow schema metadata carries the features too
    assert load_text_dataset(tmp_path / "d").labels == LABELS


def test_reads_one_split_of_a_dataset_dict(tmp_path: Path) -> None:
    """A DatasetDict folder gives the asked split; an unknown split is refused with the splits available."""
    write_saved_dataset_dict(
        tmp_path / "dd",
        {"train": {"text": TEXTS, "label": LABELS}, "test": {"text": TEXTS[:2], "label": LABELS[:2]}},
    )
    assert len(load_text_dataset(tmp_path / "dd")) == 6
    test = load_text_dataset(tmp_path / "dd", split="test")
    assert test.split == "test" and test.texts == TEXTS[:2]
    with pytest.raises(TextDatasetError, match="no split 'validation'; the DatasetDict has train, test"):
        load_text_dataset(tmp_path / "dd", split="validation")


def test_split_comes_from_state_json_or_the_dict_folder(tmp_path: Path) -> None:
    """A lone save_to_disk Dataset reports the split its state.json records; inside a DatasetDict the folder name
    wins (a split made with select() keeps its parent's _split in state.json)."""
    write_saved_dataset(tmp_path / "d", {"text": TEXTS, "label": LABELS}, split="test")
    assert load_text_dataset(tmp_path / "d").split == "test"
    write_saved_dataset(tmp_path / "dd" / "validation", {"text": TEXTS, "label": LABELS}, split="train")
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["validation"]}))
    assert load_text_dataset(tmp_path / "dd", split="validation").split == "validation"


def test_a_save_to_disk_folder_without_its_data_is_refused(tmp_path: Path) -> None:
    """state.json naming a missing data file gives a clear error."""
    write_saved_dataset(tmp_path / "d", {"text": TEXTS, "label": LABELS})
    (tmp_path / "d" / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(TextDatasetError, match="without its data files"):
        load_text_dataset(tmp_path / "d")


def test_csv_tsv_jsonl_parquet_read_the_same_rows(tmp_path: Path) -> None:
    """The same table written as CSV, TSV, JSONL and Parquet reads back identically, columns found by name."""
    rows = list(zip(TEXTS, LABELS, strict=True))
    (tmp_path / "d.csv").write_text("sentence,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    (tmp_path / "d.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    pq.write_table(pa.table({"content": TEXTS, "target": LABELS}), tmp_path / "d.parquet")
    for suffix in ("csv", "tsv", "jsonl", "parquet"):
        ds = load_text_dataset(tmp_path / f"d.{suffix}")
        assert (ds.texts, ds.labels, ds.name) == (TEXTS, LABELS, "d"), suffix


def test_tsv_quotes_belong_to_the_text(tmp_path: Path) -> None:
    """TSV is read without quote processing (GLUE convention), so a lone quote does not swallow lines."""
    (tmp_path / "train.tsv").write_text('sentence\tlabel\nhe said " hi\t1\nbye\t0\n')
    ds = load_text_dataset(tmp_path / "train.tsv")
    assert ds.texts == ['he said " hi', "bye"] and ds.name == tmp_path.name


def test_pair_columns_are_detected_or_named(tmp_path: Path) -> None:
    """premise/hypothesis (and other usual pairs) make a two-field dataset; explicit columns override detection."""
    rows = [{"premise": "A man sleeps.", "hypothesis": "A man rests.", "gold": "entailment", "genre": "fiction"}]
    (tmp_path / "nli.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    with pytest.raises(TextDatasetError, match="no label column found"):
        load_text_dataset(tmp_path / "nli.jsonl")
    ds = load_text_dataset(tmp_path / "nli.jsonl", label_column="gold")
    assert ds.n_text_fields == 2 and ds.text_pairs == ["A man rests."] * 3
    single = load_text_dataset(tmp_path / "nli.jsonl", text_column="hypothesis", label_column="genre")
    assert single.text_pairs is None and single.labels == ["fiction"] * 3


def test_a_split_folder_of_plain_files(tmp_path: Path) -> None:
    """A folder with <split>.csv files reads the asked split and lists the files when it is missing."""
    (tmp_path / "train.csv").write_text("text,label\nx,1\ny,0\n")
    (tmp_path / "test.csv").write_text("text,label\nz,1\n")
    assert load_text_dataset(tmp_path, split="test").texts == ["z"]
    with pytest.raises(TextDatasetError, match="files there: test, train"):
        load_text_dataset(tmp_path, split="validation")


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.csv", "no such file or folder"),
        ("", "empty.csv", "the file is empty"),
        ("text,label\n", "header_only.csv", r"empty \(no rows\)"),
        ("id,body_html,stars\n1,<p>hi</p>,5\n", "cols.csv", "no text column found .* columns: id, body_html, stars"),
        ("id,text\n1,hello\n", "nolabel.csv", "no label column found .* columns: id, text"),
        ("{not json}\n", "bad.jsonl", "invalid JSON"),
        ("whatever", "data.xlsx", "unknown file format '.xlsx'"),
    ],
)
def test_bad_inputs_raise_a_collector_error(tmp_path: Path, content: str | None, name: str, message: str) -> None:
    """Missing, empty, unknown or column-less inputs raise TextDatasetError (a FormatError, so a CollectorError)
    whose message names the file and what is wrong."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(TextDatasetError, match=message) as info:
        load_text_dataset(path)
    assert isinstance(info.value, FormatError) and isinstance(info.value, CollectorError)
    assert str(path) in str(info.value)


def test_a_named_column_that_does_not_exist(tmp_path: Path) -> None:
    """Naming an absent column says which columns exist."""
    (tmp_path / "d.csv").write_text("text,label\nx,1\n")
    with pytest.raises(TextDatasetError, match="no column 'review'; columns: text, label"):
        load_text_dataset(tmp_path / "d.csv", text_column="review")


def test_glue_mrpc_tsv_columns_are_found(tmp_path: Path) -> None:
    """GLUE's MRPC TSV (header Quality, #1 ID, #2 ID, #1 String, #2 String; quotes inside sentences left as they
    are) is read as a sentence-pair dataset labelled by Quality, and `metaml describe` describes it; a TSV whose text
    columns cannot be guessed names the exact flags to pass."""
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    rows = ['1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of distorting his '
            'evidence .\tReferring to him as only " the witness " , Amrozi accused his brother of distorting '
            "his evidence .",
            "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
            "billion .\tYucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
            "in 1998 ."] * 10
    (tmp_path / "msr_paraphrase_train.txt.tsv").write_text("\n".join([header, *rows]) + "\n")
    ds = load_text_dataset(tmp_path / "msr_paraphrase_train.txt.tsv")
    assert len(ds.texts) == 20 and ds.text_pairs is not None and set(ds.labels) == {0, 1}
    assert ds.texts[0].startswith("Amrozi") and ds.text_pairs[1].startswith("Yucaipa bought")
    result = CliRunner().invoke(describe, [str(tmp_path / "msr_paraphrase_train.txt.tsv"), "--json",
                                           "--landmark-sample", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["meta"]["n_text_fields"] == 2
    (tmp_path / "odd.tsv").write_text("Quality\tleft\tright\n1\ta\tb\n")
    with pytest.raises(TextDatasetError, match=r"--text-column .*--text-pair-column"):
        load_text_dataset(tmp_path / "odd.tsv")


def test_describe_command_reads_a_save_to_disk_folder(tmp_path: Path) -> None:
    """`describe FOLDER --json` works on a save_to_disk folder and reports its rows and classes."""
    write_saved_dataset(tmp_path / "movies", {"text": TEXTS * 5, "label": LABELS * 5})
    result = CliRunner().invoke(describe, [str(tmp_path / "movies"), "--json", "--landmark-sample", "30"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["name"] == "movies"
    assert payload["meta"]["n_samples"] == 30 and payload["meta"]["n_classes"] == 2


def test_text_io_does_not_import_heavy_libraries() -> None:
    """Importing the loader module does not import scikit-learn (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "import sys, collector.features._text_io; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
