"""The service's one typed configuration, read from the environment (``METAML_*``) once per process.

Entry points (``metaml serve``, ``metaml keys``, the app factory) call :func:`get_settings`; library code below them
takes explicit arguments. Tests build a :class:`Settings` themselves and pass it to ``create_app``, or set the
environment of the server process they start.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from collector.errors import CollectorError
from collector.schema import DEFAULT_LIMITS, RecordLimits
from collector.store import DEFAULT_SQL_MEMORY_MB, parse_kb_location


class Settings(BaseSettings):
    """Everything the HTTP service and its CLI commands can be configured with.

    Each field is read from the environment variable ``METAML_<FIELD>`` (``METAML_KB``, ``METAML_KEYS_DB``,
    ``METAML_READ_REQUIRES_KEY``...).
    """

    model_config = SettingsConfigDict(env_prefix="METAML_", extra="ignore", frozen=True)

    kb: str = Field("metaml-data/kb.duckdb", description="The knowledge base: a DuckDB file, or a lakehouse "
                    "'ducklake:postgres:dbname=DB host=HOST ... data=DIR' (see docs/lakehouse.md).")
    keys_db: Path | None = Field(None, description="SQLite file of API keys; default: keys.db in the knowledge base's "
                                 "home (the DuckDB file's directory, else metaml-data/).")
    read_requires_key: bool = Field(False, description="Reads (runs, stats, describe) need a key with `read` scope.")
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest body of an upload (runs, dataset files), which is read as it "
        "arrives (413 above)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest body of every other operation (predict, recommend, decide, "
        "SQL...), which is parsed whole (413 above; never above max_request_bytes)."
    )
    max_batch_records: int = Field(
        10_000, ge=1, description="Most records one upload may hold (422 as soon as reading passes it)."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a request body may pause between two of its parts (408 and the connection "
        "closed after)."
    )
    max_record_bytes: int = Field(
        DEFAULT_LIMITS.max_record_bytes, ge=1, description="JSON text of one uploaded record; a longer record is "
        "rejected without being parsed."
    )
    max_record_depth: int = Field(
        DEFAULT_LIMITS.max_depth, ge=4, le=200, description="Nesting levels of objects and arrays in one record "
        "(the record itself is level 1); a deeper record is rejected without being parsed."
    )
    max_name_chars: int = Field(
        DEFAULT_LIMITS.max_name_chars, ge=1, description="Characters of a name in a record (dataset, model, method, "
        "metric, source...)."
    )
    max_text_chars: int = Field(
        DEFAULT_LIMITS.max_text_chars, ge=1, description="Characters of free text in a record (error message, URI, "
        "locator)."
    )
    max_config_bytes: int = Field(
        DEFAULT_LIMITS.max_json_field_bytes, ge=1, description="JSON text of a record's `method.config` and "
        "`hparams.extra`, each."
    )
    sql_max_rows: int = Field(10_000, ge=1, description="Rows a SQL answer holds at most (then truncated).")
    sql_timeout_s: float = Field(30.0, gt=0, description="Seconds a SQL query may run before it is interrupted.")
    sql_memory_mb: int = Field(
        DEFAULT_SQL_MEMORY_MB, ge=16, description="Memory (MB) one SQL query may use; a query needing more is refused."
    )
    max_answer_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Size of a SQL answer's data and of a page of runs at most (a SQL "
        "answer is cut and marked truncated; a page of runs ends early, with a cursor to the rest)."
    )
    exclude_sources: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Sources whose runs the prediction endpoints leave out of their supporting runs and "
        "knowledge-base statistics (comma-separated; `upload*` is every uploaded source)."
    )
    kb_lock_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a request waits for the knowledge base's lock before answering 503."
    )
    retry_after_s: int = Field(2, ge=0, description="Retry-After header of 503 answers.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking and registry URI of the meta-model versions; default: metaml's "
        "sqlite:///metaml-data/mlflow.db (the one `metaml train` registers to)."
    )
    model_path: Path | None = Field(
        None, description="Serve this local model artifact directory (e.g. metaml-data/models/latest) instead of the "
        "registry's production version."
    )
    max_predict_candidates: int = Field(5_000, ge=1, description="Most candidates one predict request may hold.")
    max_recommend_candidates: int = Field(
        20_000, ge=1, description="Most candidates a recommend request may enumerate from its search space."
    )
    max_sample_rows: int = Field(
        20_000, ge=1, description="Most rows of a dataset sample sent to compute meta-features from."
    )
    max_suggest_candidates: int = Field(
        10_000, ge=1, description="Most candidates a suggest request may hold or enumerate from its search space."
    )
    experience_refresh_s: float = Field(
        10.0, gt=0, description="How often (seconds) the prediction endpoints look for knowledge-base changes to "
        "reload dataset meta-features and the runs that support predictions."
    )
    compile_trees: bool = Field(
        True, description="Serve the meta-model's LightGBM trees as compiled code when the tree compiler (the "
        "`compiled` extra, lleaves) is installed: compiled in a child process after the model loads (LightGBM "
        "answers meanwhile), cached by content in `compiled_cache`, checked against LightGBM before use."
    )
    compiled_cache: Path | None = Field(
        None, description="Directory of the compiled trees' libraries; default: compiled/ in the knowledge base's "
        "home directory."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("exclude_sources", mode="before")
    @classmethod
    def _split_sources(cls, v: object) -> object:
        return tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else v

    @field_validator("kb", mode="before")
    @classmethod
    def _kb_location(cls, value: object) -> str:
        try:
            return parse_kb_location(str(value)).text
        except CollectorError as e:
            raise ValueError(str(e)) from e

    @model_validator(mode="after")
    def _default_keys_db(self) -> Settings:
        if self.keys_db is None:
            object.__setattr__(self, "keys_db", self.kb_home / "keys.db")
        return self

    @property
    def record_limits(self) -> RecordLimits:
        """The limits every uploaded record is held to."""
        return RecordLimits(max_record_bytes=self.max_record_bytes, max_depth=self.max_record_depth,
                            max_name_chars=self.max_name_chars, max_text_chars=self.max_text_chars,
                            max_json_field_bytes=self.max_config_bytes)

    @property
    def kb_home(self) -> Path:
        """The local directory of the knowledge base's companions (see ``KnowledgeBase.home``)."""
        return parse_kb_location(self.kb).home

    @property
    def compiled_dir(self) -> Path:
        """Where compiled trees are cached."""
        return self.compiled_cache or self.kb_home / "compiled"

    @property
    def keys_path(self) -> Path:
        """The API keys file (never None once validated)."""
        assert self.keys_db is not None
        return self.keys_db


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once (``get_settings.cache_clear()`` re-reads)."""
    return Settings()
