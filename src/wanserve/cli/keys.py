"""`wanserve keys create|list|revoke`: the API keys of the job database (`WANSERVE_DATABASE_URL` or the SQLite file
of `WANSERVE_DATA_DIR`). A key's token is printed once, at creation; only its hash is stored."""

from __future__ import annotations

import json
import re

import typer

_RATE_RE = re.compile(r"^(\d+)(?:/min)?$")


def _key_store():
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    from wanserve.bootstrap import build_database
    from wanserve.config import Settings
    from wanserve.jobs.keys import KeyStore

    return KeyStore(build_database(Settings()))


def _row(key) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "admin": key.admin,
        "rate_per_min": key.rate_per_min,
        "max_running": key.max_running,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def parse_rate(value: str | None) -> int | None:
    """`N/min` (or `N`) as submissions per minute; None when unset."""
    if value is None:
        return None
    match = _RATE_RE.match(value.strip())
    if match is None or int(match.group(1)) < 1:
        raise typer.BadParameter(f"`--rate` must be N/min with N >= 1, got {value!r}")
    return int(match.group(1))


def register(app: typer.Typer) -> None:
    """Adds `wanserve keys` to the app."""
    keys = typer.Typer(help="Create, list and revoke API keys (stored hashed in the job database).")
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        name: str = typer.Option("", "--name", help="A label for the key (who or what uses it)."),
        admin: bool = typer.Option(False, "--admin", help="Sees every job; may call /admin/* and /metrics."),
        rate: str = typer.Option(
            None, "--rate", help="Job submissions allowed per minute, as N/min.", show_default="no limit"
        ),
        max_running: int = typer.Option(
            None, "--max-running", min=1, help="Jobs queued or running at once.", show_default="no limit"
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the key as JSON."),
    ) -> None:
        """Make a key and print its token (shown this once: store it now)."""
        try:
            created = _key_store().create(
                name=name, admin=admin, rate_per_min=parse_rate(rate), max_running=max_running
            )
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        if as_json:
            typer.echo(json.dumps({**_row(created.key), "token": created.token}))
            return
        typer.echo(f"key {created.key.id} created{' (admin)' if admin else ''}; its token, shown only now:")
        typer.echo(created.token)
        typer.echo("Clients send it as `Authorization: Bearer <token>` (the OpenAI client's `api_key`).")

    @keys.command("list")
    def list_(
        all_: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The keys (never their tokens)."""
        from wanserve.cli.tables import Column, print_table

        rows = [_row(k) for k in _key_store().list(include_revoked=all_)]
        if as_json:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo("no API keys: the server runs open (loopback or --allow-open only). `wanserve keys create`")
            return
        columns = [Column(h) for h in ("id", "name", "admin", "rate/min", "max running", "created", "revoked")]
        cells = [
            [
                r["id"],
                r["name"],
                "yes" if r["admin"] else "",
                str(r["rate_per_min"] or ""),
                str(r["max_running"] or ""),
                r["created_at"][:19],
                (r["revoked_at"] or "")[:19],
            ]
            for r in rows
        ]
        from rich.console import Console

        print_table(Console(), "API keys", columns, cells)

    @keys.command("revoke")
    def revoke(key_id: str = typer.Argument(..., help="The key's id (from `wanserve keys list`).")) -> None:
        """Revoke a key: servers refuse it within seconds (they cache keys for 2 s)."""
        try:
            _key_store().revoke(key_id)
        except KeyError:
            typer.echo(f"error: no API key with id {key_id!r} (see `wanserve keys list --all`)", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(f"key {key_id} revoked")
