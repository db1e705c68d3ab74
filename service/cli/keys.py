"""``metaml keys``: create, list and revoke the HTTP API's keys.

Exposes the click group :data:`keys`; the root CLI registers it. The key file is ``--keys-db``, else the settings'
``keys_db`` (``METAML_KEYS_DB``, default ``keys.db`` beside the knowledge base ``METAML_KB``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from service.errors import KeyStoreError
from service.keys import SCOPES, create_key, list_keys, revoke_key
from service.settings import get_settings


def _keys_path(option: Path | None) -> Path:
    return option if option is not None else get_settings().keys_path


_keys_db_option = click.option(
    "--keys-db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The API key file [default: $METAML_KEYS_DB, else keys.db beside $METAML_KB].",
)


@click.group("keys")
def keys() -> None:
    """Manage API keys of the HTTP service (`metaml serve`).

    \b
    Scopes: read (runs, stats, describe), write (upload runs, store dataset features),
            analyst (SQL), admin (everything).
    """


@keys.command("create")
@click.option("--name", required=True, help="Who holds the key; recorded as provenance.uploader of its uploads.")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="A scope the key grants (repeatable).")
@_keys_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the secret) instead of text.")
def create(name: str, scopes: tuple[str, ...], keys_db: Path | None, as_json: bool) -> None:
    """Create a key and print its secret (shown once: it is stored only as a hash)."""
    try:
        key, secret = create_key(_keys_path(keys_db), name, scopes)
    except KeyStoreError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({**key.to_dict(), "key": secret}, indent=2))
        return
    click.echo(f"created key {key.key_id} for {key.name} (scopes: {', '.join(key.scopes)})")
    click.echo("the key (shown once; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'):")
    click.echo(secret)


@keys.command("list")
@_keys_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--active", "active_only", is_flag=True, help="Leave revoked keys out.")
def list_(keys_db: Path | None, as_json: bool, active_only: bool) -> None:
    """List keys (ids, names, scopes, creation and revocation times; never secrets)."""
    try:
        found = list_keys(_keys_path(keys_db), include_revoked=not active_only)
    except KeyStoreError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in found], indent=2))
        return
    if not found:
        click.echo("no keys")
        return
    rows = [("KEY ID", "NAME", "SCOPES", "CREATED", "REVOKED")]
    rows += [(k.key_id, k.name, ",".join(k.scopes), k.created_at, k.revoked_at or "-") for k in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("key_id")
@_keys_db_option
def revoke(key_id: str, keys_db: Path | None) -> None:
    """Revoke the key KEY_ID (effective on the next request)."""
    try:
        key = revoke_key(_keys_path(keys_db), key_id)
    except KeyStoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"revoked key {key.key_id} ({key.name}) at {key.revoked_at}")
