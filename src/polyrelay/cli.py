"""The ``polyrelay`` command: serve the gateway, and the chores an operator needs."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from polyrelay.config import Settings, load_settings
from polyrelay.store.crypto import NEW_SECRET_KEY_ENV, SECRET_KEY_ENV, SecretKeyError

log = logging.getLogger("polyrelay")


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # pydantic and YAML errors both read well as text
        raise click.ClickException(f"invalid configuration{f' in {config}' if config else ''}:\n{exc}") from None


@contextmanager
def _secret_key_errors() -> Iterator[None]:
    """A missing or wrong secret key is the operator's to fix: one clear line and exit code 1, no traceback."""
    try:
        yield
    except SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="polyrelay")
def main() -> None:
    """polyrelay: one base URL and one key for every AI service."""


@main.command()
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML file.")
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [default: 3000].")
@click.option("--workers", type=int, default=None, help="Processes to run; one per core uses the whole machine.")
def serve(config: Path | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the gateway."""
    import uvicorn

    from polyrelay.app import CONFIG_ENV, create_app, prepare_database
    from polyrelay.telemetry import logs, tracing

    settings = _settings(config, host=host, port=port, workers=workers)
    logs.configure(settings.log_level, settings.log_format)
    if settings.tracing.enabled:
        try:
            tracing.require()
        except tracing.TracingUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    with _secret_key_errors():
        generated = prepare_database(settings)
    for name, key in generated:
        click.echo(f"Generated key for token '{name}' (shown once, store it now): {key}", err=True)
    if not settings.channels and config is None:
        click.echo(
            f"polyrelay is running without a config file, on {settings.database_url}.\n"
            "Next: write a config with channels, tokens and prices (see examples/polyrelay.yaml and "
            "docs/configuration.md), then run `polyrelay serve --config FILE`.",
            err=True,
        )
    options = dict(
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        timeout_graceful_shutdown=30,
        proxy_headers=False,  # callers are seen as they connect; a fronting proxy is an operator choice
    )
    click.echo(f"polyrelay listening on http://{settings.host}:{settings.port}", err=True)
    if settings.workers > 1:
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        os.environ.update(POLYRELAY_HOST=settings.host, POLYRELAY_PORT=str(settings.port))
        with _metrics_directory():
            uvicorn.run("polyrelay.app:app_from_env", factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """Workers share their metrics through files (prometheus-client's multiprocess mode): a fresh
    directory, named before the workers start (they read it when they import the client)."""
    from polyrelay.telemetry.exposition import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):  # the operator chose one
        yield
        return
    with tempfile.TemporaryDirectory(prefix="polyrelay-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


@main.command()
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def migrate(config: Path | None) -> None:
    """Create or upgrade the database schema, and load the config file's records."""
    from polyrelay.app import prepare_database

    settings = _settings(config)
    with _secret_key_errors():
        generated = prepare_database(settings)
    for name, key in generated:
        click.echo(f"Generated key for token '{name}' (shown once, store it now): {key}")
    click.echo(f"database ready: {settings.database_url}")




def _engine(config: Path | None):  # type: ignore[no-untyped-def]
    from polyrelay.app import open_database

    with _secret_key_errors():
        return open_database(_settings(config).database_url)


_config_option = click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@main.group()
def user() -> None:
    """Manage users (accounts)."""


@user.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--group", default="default", show_default=True)
@click.option("--balance", type=float, default=0.0, help="Initial balance in USD (a top-up ledger entry).")
@click.option("--unlimited", is_flag=True, help="Serve the user whatever the balance.")
@click.option("--password", default=None, help="For console login; prompted if given as '-'.")
@_config_option
def user_create(name: str, role: str, group: str, balance: float, unlimited: bool, password: str | None,
                config: Path | None) -> None:
    """Create a user."""
    from sqlalchemy.exc import IntegrityError

    from polyrelay.api.admin.ops import create_user
    from polyrelay.billing.meter import usd_to_micros

    if password == "-":
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user_id = create_user(_engine(config), name, role=role, group=group, balance_micros=usd_to_micros(balance),
                              unlimited=unlimited, password=password)
    except IntegrityError:
        raise click.ClickException(f"a user named '{name}' already exists") from None
    click.echo(f"user '{name}' created (id {user_id})")


@main.group()
def key() -> None:
    """Manage caller keys (tokens)."""


@key.command("create")
@click.option("--user", "user_name", required=True, help="The user whose balance the key spends.")
@click.option("--name", default=None, help="Token name (unique per user); default: derived from the user.")
@click.option("--limit", type=float, default=None, help="The key's own spending limit in USD.")
@click.option("--models", multiple=True, help="Allowed models (wildcards allowed); repeat or comma-separate.")
@_config_option
def key_create(user_name: str, name: str | None, limit: float | None, models: tuple[str, ...],
               config: Path | None) -> None:
    """Create a key and print it (shown this once only)."""
    from sqlalchemy.exc import IntegrityError

    from polyrelay.api.admin.ops import create_key
    from polyrelay.billing.meter import usd_to_micros

    allowed = [m.strip() for item in models for m in item.split(",") if m.strip()] or None
    try:
        token_name, secret = create_key(_engine(config), user_name, name,
                                        limit_micros=usd_to_micros(limit) if limit is not None else None,
                                        models_allowed=allowed)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    except IntegrityError:
        raise click.ClickException(f"a token named '{name}' already exists") from None
    click.echo(f"key '{token_name}' for user '{user_name}' (shown once, store it now):", err=True)
    click.echo(secret)


@main.group()
def channel() -> None:
    """Check channels."""


@channel.command("test")
@click.argument("name")
@click.option("--model", default=None, help="Model to call; default: the channel's first model.")
@_config_option
def channel_test(name: str, model: str | None, config: Path | None) -> None:
    """One tiny real call through the channel; records its latency and result."""
    import asyncio

    from polyrelay.api.admin.ops import run_channel_test

    engine = _engine(config)
    result = asyncio.run(run_channel_test(engine, None, name, model))
    if result is None:
        raise click.ClickException(f"no channel named '{name}'")
    click.echo(f"{result['channel']} ({result['model']}): {result['result']} in {result['latency_ms']:.0f} ms")
    if not result["ok"]:
        sys.exit(1)


@main.group()
def secret() -> None:
    """The secret key that encrypts upstream keys in the database (POLYRELAY_SECRET_KEY)."""


@secret.command("generate")
def secret_generate() -> None:
    """Print a new random secret key (for POLYRELAY_SECRET_KEY or `secret rotate`)."""
    from polyrelay.store.crypto import generate_secret_key

    click.echo(generate_secret_key())


@secret.command("rotate")
@click.option("--new-key", envvar=NEW_SECRET_KEY_ENV, show_envvar=True,
              help="The key to re-encrypt with; the variable keeps it out of the process list.")
@_config_option
def secret_rotate(new_key: str | None, config: Path | None) -> None:
    """Re-encrypt every channel's upstream keys with a new secret key, in one transaction.

    Stop every gateway on the database first, then start them with the new key.
    """
    from polyrelay.store import crypto

    if not new_key:
        raise click.ClickException(f"give the new key with --new-key or {NEW_SECRET_KEY_ENV} "
                                   "(`polyrelay secret generate` makes one)")
    with _secret_key_errors():
        new = crypto.parse_secret_key(new_key, "the new key")
        engine = _engine(config)
        old = crypto.active()
        try:
            count = crypto.rotate(engine, old, new)
        finally:
            engine.dispose()
    if old.file is None:
        click.echo(f"re-encrypted the upstream keys of {count} channel(s): start polyrelay with {SECRET_KEY_ENV} "
                   "set to the new key")
        return
    try:
        crypto.write_key_file(old.file, new_key)
    except OSError as exc:
        raise click.ClickException(f"re-encrypted the upstream keys of {count} channel(s), but could not write the "
                                   f"new key to {old.file} ({exc}): set {SECRET_KEY_ENV} to the new key") from None
    click.echo(f"re-encrypted the upstream keys of {count} channel(s); {old.file} now holds the new key")
