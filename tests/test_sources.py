"""The source manifest: it pins every shipped file; verify and fetch check checksums (no network: URLs are served
from the local copy by a fake opener)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import IO

import pytest

from collector.formats import FORMATS
from collector.sources import (
    ChecksumError,
    ManualFetchRequired,
    Source,
    SourceError,
    archive_members,
    content_digest,
    fetch,
    get_source,
    glob_match,
    load_manifest,
    verify,
)

NINE = {"transfergraph", "taskweb", "opda_deberta", "hf_model_cards", "ibm_model_recycling", "setfit", "lmbff",
        "mteb_classification", "peft_method_comparison"}


def test_manifest_lists_every_source() -> None:
    """The nine metadatasets and every text dataset folder are listed, with repository, 40-hex commit, license and
    a registered format for the metadatasets; every file has a 64-hex sha256."""
    sources = {s.name: s for s in load_manifest()}
    assert set(sources) >= NINE
    assert any(name.startswith("text/") for name in sources)
    for s in sources.values():
        assert s.repository.startswith("https://github.com/") and len(s.commit) == 40 and s.license
        for f in s.files:
            assert len(f.sha256) == 64 and f.bytes > 0
            for fmt in (f.format, s.format):
                assert fmt is None or fmt in FORMATS
    for name in NINE:
        assert sources[name].format in FORMATS
    opda = sources["opda_deberta"]
    jsonl = next(f for f in opda.files if f.path == "deberta-base_tuning.results.jsonl")
    assert opda.url_of(jsonl) == ("https://raw.githubusercontent.com/nicholaslourie/opda/"
                                  "9529a34b7715e0b32920f630c1f7f7ff6f891060/data/deberta/"
                                  "deberta-base_tuning.results.jsonl")


def test_verify_passes_on_shared_data(public_data: Path) -> None:
    """Every file of the manifest is in the shared data with its size and sha256."""
    assert verify(public_data) == []


def test_fetch_from_local_copy(public_data: Path, tmp_path: Path) -> None:
    """fetch(local_root=) copies a source into the same layout and verifies it; a second fetch keeps the files."""
    source = get_source("transfergraph")
    done = fetch(source, tmp_path, local_root=public_data)
    assert len(done) == len(source.files)
    assert (tmp_path / "metadatasets/transfergraph/sequence_classification/records.csv").is_file()
    assert verify(tmp_path, sources=["transfergraph"]) == []
    mtime = done[0].stat().st_mtime_ns
    fetch(source, tmp_path, local_root=public_data)
    assert done[0].stat().st_mtime_ns == mtime


def _corrupt_copy(public_data: Path, root: Path, name: str) -> Path:
    source = get_source(name)
    shutil.copytree(public_data / source.local_dir, root / source.local_dir)
    return root / source.local_dir


def test_corrupted_copy_fails(public_data: Path, tmp_path: Path) -> None:
    """A copy with one byte changed, one truncated file and one missing file: verify names each problem; fetching
    from it raises ChecksumError naming the file and leaves neither the bad file nor a partial one behind."""
    bad_root = tmp_path / "bad"
    folder = _corrupt_copy(public_data, bad_root, "opda_deberta")
    target = folder / "deberta-v3-base_tuning.results.jsonl"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x01
    target.write_bytes(bytes(data))
    readme = folder / "README.md"
    readme.write_bytes(readme.read_bytes()[:100])
    (folder / "LICENSE").unlink()
    problems = {p.path: p for p in verify(bad_root, sources=["opda_deberta"])}
    assert {k: p.kind for k, p in problems.items()} == {
        "deberta-v3-base_tuning.results.jsonl": "sha256", "README.md": "size", "LICENSE": "missing"}
    assert "corrupted" in str(problems["deberta-v3-base_tuning.results.jsonl"])
    (folder / "LICENSE").write_bytes((public_data / "metadatasets/opda_deberta/LICENSE").read_bytes())
    shutil.copy(public_data / "metadatasets/opda_deberta/README.md", readme)
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match=r"deberta-v3-base_tuning\.results\.jsonl: sha256 .* pins"):
        fetch(get_source("opda_deberta"), dest, local_root=bad_root)
    out = dest / "metadatasets/opda_deberta"
    assert not (out / "deberta-v3-base_tuning.results.jsonl").exists()
    assert not list(out.glob(".*part"))


class _FakeHub:
    """Serves raw.githubusercontent.com URLs from the local copy and one repository archive built in tmp."""

    def __init__(self, public_data: Path, source: Source, archive: Path | None = None) -> None:
        self.by_url = {source.url_of(f): public_data / source.local_dir / f.path
                       for f in source.files if f.fetch == "raw"}
        self.archive = archive
        self.opened: list[str] = []

    def __call__(self, url: str) -> IO[bytes]:
        self.opened.append(url)
        if url in self.by_url:
            return open(self.by_url[url], "rb")
        if self.archive is not None and url.startswith("https://codeload.github.com/"):
            return open(self.archive, "rb")
        raise OSError(f"404 {url}")


def test_fetch_raw_files_by_url(public_data: Path, tmp_path: Path) -> None:
    """Without a local copy the raw files are downloaded from their pinned raw.githubusercontent.com URLs and
    checked; the packager's ORIGIN.txt is not downloaded and not required."""
    source = get_source("opda_deberta")
    hub = _FakeHub(public_data, source)
    fetch(source, tmp_path, opener=hub)
    assert len(hub.opened) == 4 and all(u.startswith("https://raw.githubusercontent.com/") for u in hub.opened)
    assert verify(tmp_path, sources=["opda_deberta"]) == []
    assert not (tmp_path / "metadatasets/opda_deberta/ORIGIN.txt").exists()


def test_fetch_rebuilds_assembled_archive(public_data: Path, tmp_path: Path) -> None:
    """An archive the packager assembled is rebuilt from the repository archive at the commit: only the included
    files are packed (decoys are left out), the member digest matches, and verify accepts the rebuilt archive."""
    source = get_source("lmbff")
    shipped = public_data / source.local_dir / "auto_search_raw.tar.gz"
    repo_archive = tmp_path / "LM-BFF.tar.gz"
    with tarfile.open(repo_archive, "w:gz") as tar:
        for name, data in [*archive_members(shipped), ("README.md", b"decoy"), ("auto_template/SST-2/notes.md", b"x"),
                           ("tools/16-1.txt", b"decoy")]:
            info = tarfile.TarInfo(f"LM-BFF-{source.commit}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "dest"
    fetch(source, dest, opener=_FakeHub(public_data, source, repo_archive))
    rebuilt = dest / source.local_dir / "auto_search_raw.tar.gz"
    assert content_digest(archive_members(rebuilt)) == content_digest(archive_members(shipped))
    assert verify(dest, sources=["lmbff"]) == []


def test_fetch_reports_manual_files(public_data: Path, tmp_path: Path) -> None:
    """Files the packager assembled from several commits cannot be downloaded: fetch says which and how they were
    made; with a local copy they are copied like the others."""
    source = get_source("setfit")
    with pytest.raises(ManualFetchRequired, match=r"results_raw\.tar\.gz: assembled"):
        fetch(source, tmp_path / "net", opener=_FakeHub(public_data, source))
    assert len(fetch(source, tmp_path / "local", local_root=public_data)) == len(source.files)


def test_bad_manifest(tmp_path: Path) -> None:
    """A manifest with an unknown fetch kind or a missing field is refused with a SourceError naming it."""
    path = tmp_path / "m.toml"
    path.write_text('[[source]]\nname = "x"\nlocal_dir = "x"\nrepository = "https://github.com/a/b"\n'
                    'commit = "c"\nlicense = "MIT"\n[[source.files]]\npath = "f"\nsha256 = "0"\nbytes = 1\n'
                    'fetch = "ftp"\n')
    with pytest.raises(SourceError, match="unknown fetch kind 'ftp'"):
        load_manifest(path)
    path.write_text('[[source]]\nname = "x"\n')
    with pytest.raises(SourceError, match="lacks field 'local_dir'"):
        load_manifest(path)


def test_glob_match() -> None:
    """Include patterns match segment by segment: '*' does not cross '/'."""
    assert glob_match("auto_template/RTE/16-87.sort.txt", "auto_template/*/16-*.txt")
    assert not glob_match("auto_template/RTE/x/16-87.txt", "auto_template/*/16-*.txt")
    assert not glob_match("x/auto_template/RTE/16-87.txt", "auto_template/*/16-*.txt")
