"""Settings read from `SDLAB_*` environment variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import AmqpDsn, KafkaDsn, MySQLDsn, PostgresDsn, RedisDsn, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(ValueError):
    """An `SDLAB_*` environment variable holds a value sdlab cannot use."""


class Settings(BaseSettings):
    """Where the backing services are, and where sdlab keeps its own state.

    A service URL left unset means: use the usual local port if a server answers
    there, else start a private instance (see `sdlab.infra`).
    """

    model_config = SettingsConfigDict(env_prefix="SDLAB_", extra="ignore", frozen=True)

    mysql_url: MySQLDsn | None = None
    postgres_url: PostgresDsn | None = None
    redis_url: RedisDsn | None = None
    rabbitmq_url: AmqpDsn | None = None
    kafka_url: KafkaDsn | None = None

    state_dir: Path = Path(".sdlab")
    """Private server instances, their data and logs."""

    reports_dir: Path = Path("reports")
    """Where `sdlab lab run` writes its report."""

    def service_url(self, service: str) -> str | None:
        value = getattr(self, f"{service}_url")
        return None if value is None else str(value)


@cache
def settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SDLAB_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems) from None
