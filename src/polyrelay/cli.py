"""The ``polyrelay`` command: serve the gateway, and the chores an operator needs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from polyrelay.config import Settings, load_settings

log = logging.getLogger("polyrelay")


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:  # pydantic and YAML errors both read well as text
        raise click.ClickException(f"invalid configuration{f' in {config}' if config else ''}:\n{exc}") from None


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

    settings = _settings(config, host=host, port=port, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    )
    click.echo(f"polyrelay listening on http://{settings.host}:{settings.port}", err=True)
    if settings.workers > 1:
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        os.environ.update(POLYRELAY_HOST=settings.host, POLYRELAY_PORT=str(settings.port))
        uvicorn.run("polyrelay.app:app_from_env", factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


@main.command()
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def migrate(config: Path | None) -> None:
    """Create or upgrade the database schema, and load the config file's records."""
    from polyrelay.app import prepare_database

    settings = _settings(config)
    for name, key in prepare_database(settings):
        click.echo(f"Generated key for token '{name}' (shown once, store it now): {key}")
    click.echo(f"database ready: {settings.database_url}")


