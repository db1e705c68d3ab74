"""API keys (hashed storage, the `metaml keys` commands), authentication and scopes over real HTTP, the read-key
setting, and the request limits (413, 422) and busy knowledge base (503) of a running server."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from factories import record

from collector.store._lock import kb_lock
from service.cli.keys import keys as keys_cli
from service.cli.serve import serve as serve_cli
from service.errors import KeyStoreError
from service.keys import cached_key, create_key, list_keys, revoke_key, verify_key
from service.testing import ServerProcess

LIMIT_BYTES = 64 * 1024
MAX_RECORDS = 5


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------------------------------- keys, no server


def test_keys_are_stored_hashed(tmp_path: Path) -> None:
    """The key file holds the sha256 of each key, never the secret; it is private to its owner; verification
    accepts the key, and refuses a wrong secret, a malformed key and a revoked key."""
    db = tmp_path / "keys.db"
    key, secret = create_key(db, "alice", ["write", "read"])
    assert secret.startswith(f"mk_{key.key_id}_") and len(secret) > 50
    raw = db.read_bytes()
    assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw
    with sqlite3.connect(db) as con:
        (stored,) = con.execute("SELECT key_hash FROM api_keys").fetchone()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert verify_key(db, secret) == key
    assert verify_key(db, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert verify_key(db, "not-a-key") is None
    assert verify_key(tmp_path / "missing.db", secret) is None
    revoke_key(db, key.key_id)
    assert verify_key(db, secret) is None
    assert list_keys(db)[0].revoked_at is not None


def test_key_rules(tmp_path: Path) -> None:
    """Scopes must be known, names valid and unique among active keys; admin implies every scope."""
    db = tmp_path / "keys.db"
    with pytest.raises(KeyStoreError, match="unknown scope"):
        create_key(db, "bob", ["root"])
    with pytest.raises(KeyStoreError, match="bad key name"):
        create_key(db, "bob smith", ["read"])
    admin, _ = create_key(db, "bob", ["admin"])
    assert all(admin.allows(s) for s in ("read", "write", "analyst"))
    with pytest.raises(KeyStoreError, match="exists"):
        create_key(db, "bob", ["read"])
    revoke_key(db, admin.key_id)
    create_key(db, "bob", ["read"])
    with pytest.raises(KeyStoreError, match="no key"):
        revoke_key(db, "ffffffffffff")


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    """`keys create` prints the secret once, `keys list --json` shows ids, names and scopes but no secret,
    `keys revoke` revokes; errors (unknown id, taken name) exit 1."""
    db = str(tmp_path / "keys.db")
    runner = CliRunner()
    out = runner.invoke(keys_cli, ["create", "--name", "carol", "--scope", "write", "--scope", "read",
                                   "--keys-db", db])
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    assert secret.startswith("mk_")
    listed = runner.invoke(keys_cli, ["list", "--json", "--keys-db", db])
    (entry,) = json.loads(listed.output)
    assert entry["name"] == "carol" and entry["scopes"] == ["read", "write"] and entry["active"]
    assert secret not in listed.output
    assert "carol" in runner.invoke(keys_cli, ["list", "--keys-db", db]).output
    assert runner.invoke(keys_cli, ["create", "--name", "carol", "--scope", "read", "--keys-db", db]).exit_code == 1
    assert runner.invoke(keys_cli, ["revoke", entry["key_id"], "--keys-db", db]).exit_code == 0
    assert json.loads(runner.invoke(keys_cli, ["list", "--json", "--keys-db", db]).output)[0]["active"] is False
    assert runner.invoke(keys_cli, ["revoke", "000000000000", "--keys-db", db]).exit_code == 1


def test_keys_cli_uses_the_settings_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --keys-db, the key file is keys.db beside METAML_KB (the settings' default)."""
    from service.settings import get_settings

    monkeypatch.setenv("METAML_KB", str(tmp_path / "data" / "kb.duckdb"))
    monkeypatch.delenv("METAML_KEYS_DB", raising=False)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(keys_cli, ["create", "--name", "dave", "--scope", "analyst", "--json"])
        assert out.exit_code == 0, out.output
        assert (tmp_path / "data" / "keys.db").exists() and json.loads(out.output)["key"].startswith("mk_")
    finally:
        get_settings.cache_clear()


def test_serve_cli_help() -> None:
    """`serve --help` documents host, port, kb, workers and reload."""
    out = CliRunner().invoke(serve_cli, ["--help"])
    assert out.exit_code == 0
    for option in ("--host", "--port", "--kb", "--workers", "--reload"):
        assert option in out.output


# ------------------------------------------------------------------------------------------- a strict server


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server that requires keys for reads, with small limits and a short lock timeout; and its keys."""
    work = tmp_path_factory.mktemp("service-strict")
    db = work / "keys.db"
    keys = {name: create_key(db, name, scopes)[1] for name, scopes in
            {"writer": ["write"], "reader": ["read"], "root": ["admin"], "gone": ["write", "read"]}.items()}
    settings = {"read_requires_key": True, "max_request_bytes": LIMIT_BYTES, "max_batch_records": MAX_RECORDS,
                "kb_lock_timeout_s": 0.5, "retry_after_s": 3}
    with ServerProcess(work / "kb.duckdb", settings=settings) as s:
        yield s, keys


@pytest.fixture
def client(strict: tuple[ServerProcess, dict[str, str]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=strict[0].url, timeout=30.0) as c:
        yield c


def test_upload_authentication_and_scopes(client: httpx.Client, strict: tuple[ServerProcess, dict[str, str]]
                                          ) -> None:
    """Uploading: no key 401 (with WWW-Authenticate), unknown or malformed key 401, read-only key 403; a write key
    works as Bearer or X-API-Key, and so does an admin key."""
    _, keys = strict
    body = [record(1)]
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized" and "www-authenticate" in r.headers
    assert client.post("/v1/runs", json=body, headers=_auth("mk_123456789abc_" + "A" * 43)).status_code == 401
    assert client.post("/v1/runs", json=body, headers=_auth("garbage")).status_code == 401
    r = client.post("/v1/runs", json=body, headers=_auth(keys["reader"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.post("/v1/runs", json=body, headers=_auth(keys["writer"])).json()["accepted"] == 1
    assert client.post("/v1/runs", json=[record(2)], headers={"X-API-Key": keys["writer"]}).json()["accepted"] == 1
    assert client.post("/v1/runs", json=[record(3)], headers=_auth(keys["root"])).json()["uploader"] == "root"


def test_verified_keys_are_remembered_only_while_the_key_file_is_unchanged(tmp_path: Path) -> None:
    """A verified key is answered without a query while the key file stays as it was; any write to the file (a new
    key, a revocation) makes the next request verify again, so a revoked key is refused at once."""
    path = tmp_path / "keys.db"
    kept, token = create_key(path, "kept", ["read"])
    _, other = create_key(path, "other", ["write"])
    assert cached_key(path, token) is None  # never verified
    assert verify_key(path, token) == kept and cached_key(path, token) == kept
    assert cached_key(path, other) is None and cached_key(path, token + "x") is None
    create_key(path, "third", ["read"])  # any write to the file
    assert cached_key(path, token) is None and verify_key(path, token) == kept
    revoke_key(path, kept.key_id)
    assert cached_key(path, token) is None and verify_key(path, token) is None
    assert cached_key(path, token) is None


def test_revoked_key_is_refused_at_once(client: httpx.Client, strict: tuple[ServerProcess, dict[str, str]]) -> None:
    """A key works until it is revoked in the key file; the next request with it is 401 (no restart needed)."""
    server, keys = strict
    assert client.get("/v1/stats", headers=_auth(keys["gone"])).status_code == 200
    revoke_key(server.keys_db, keys["gone"].split("_")[1])
    assert client.get("/v1/stats", headers=_auth(keys["gone"])).status_code == 401
    assert client.post("/v1/runs", json=[record(4)], headers=_auth(keys["gone"])).status_code == 401


def test_reads_need_a_key_when_configured(client: httpx.Client, strict: tuple[ServerProcess, dict[str, str]]
                                          ) -> None:
    """With read_requires_key on, runs, stats and describe need the read scope: 401 without a key, 403 with a
    write-only key, 200 with a read or admin key. Health, readiness and metrics stay open."""
    _, keys = strict
    describe = {"texts": ["a b", "c d"], "labels": [0, 1], "landmark_sample": 0}
    for method, path, kwargs in [("GET", "/v1/runs", {}), ("GET", "/v1/stats", {}),
                                 ("GET", "/v1/runs/" + "0" * 32, {}),
                                 ("POST", "/v1/datasets/describe", {"json": describe})]:
        assert client.request(method, path, **kwargs).status_code == 401, path
        assert client.request(method, path, headers=_auth(keys["writer"]), **kwargs).status_code == 403, path
        ok = client.request(method, path, headers=_auth(keys["reader"]), **kwargs).status_code
        assert ok == (404 if path.startswith("/v1/runs/") else 200), path
        assert client.request(method, path, headers=_auth(keys["root"]), **kwargs).status_code == ok
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200


def test_request_too_large_is_413(client: httpx.Client, strict: tuple[ServerProcess, dict[str, str]]) -> None:
    """A body over max_request_bytes is 413 with a clear message, whether its Content-Length says so or it is
    streamed in chunks; nothing is stored and the server keeps serving."""
    _, keys = strict
    big = json.dumps([record(10, hparams__extra={"blob": "x" * (LIMIT_BYTES + 10)})]).encode()
    r = client.post("/v1/runs", content=big, headers={**_auth(keys["writer"]), "Content-Type": "application/json"})
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "payload_too_large" and f"{LIMIT_BYTES:,}" in err["message"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    with httpx.Client(base_url=client.base_url, timeout=30.0) as fresh:
        r = fresh.post("/v1/runs", content=chunks(),
                       headers={**_auth(keys["writer"]), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/runs", params={"limit": 1000}, headers=_auth(keys["reader"])).json()["count"] < 10


def test_too_many_records_is_422(client: httpx.Client, strict: tuple[ServerProcess, dict[str, str]]) -> None:
    """More than max_batch_records records in one upload (JSON, NDJSON or a file) is 422 batch_too_large and
    stores nothing; exactly the limit is accepted."""
    _, keys = strict
    h = _auth(keys["writer"])
    over = [record(i) for i in range(1000, 1000 + MAX_RECORDS + 1)]
    r = client.post("/v1/runs", json=over, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "batch_too_large"
    assert r.json()["error"]["details"] == {"max_batch_records": MAX_RECORDS}
    ndjson = "\n".join(json.dumps(x) for x in over)
    assert client.post("/v1/runs", content=ndjson, headers={**h, "Content-Type": "application/x-ndjson"}
                       ).status_code == 422
    assert client.post("/v1/runs", files={"file": ("runs.jsonl", ndjson.encode())}, headers=h).status_code == 422
    page = client.get("/v1/runs", params={"limit": 1000}, headers=_auth(keys["reader"])).json()
    assert not any(run["hparams"]["seed"] >= 1000 for run in page["runs"])
    assert client.post("/v1/runs", json=over[:MAX_RECORDS], headers=h).json()["accepted"] == MAX_RECORDS


def test_busy_knowledge_base_is_503_with_retry_after(client: httpx.Client,
                                                     strict: tuple[ServerProcess, dict[str, str]]) -> None:
    """While another process holds the knowledge base's write lock past the server's lock timeout, reads and
    uploads answer 503 knowledge_base_busy with Retry-After and /readyz is 503; afterwards all is served again and
    the refused upload stored nothing."""
    server, keys = strict
    with kb_lock(server.kb, exclusive=True, timeout=10):
        r = client.get("/v1/stats", headers=_auth(keys["reader"]))
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "knowledge_base_busy"
        assert str(server.kb) not in r.text
        up = client.post("/v1/runs", json=[record(5000)], headers=_auth(keys["writer"]))
        assert up.status_code == 503
        assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").status_code == 200
    again = client.post("/v1/runs", json=[record(5000)], headers=_auth(keys["writer"]))
    assert again.status_code == 200 and again.json()["accepted"] == 1
