"""The operator's config file: YAML checked by pydantic models, one section per bridge.

pydantic (MIT) is used because it reports every problem with the path of the option
(`bridges.irc.secret: Field required`), which is what `check-config` prints. Each
bridge validates its own options with its `Options` model, so the component never
needs to know them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from slixmpp.jid import JID, InvalidJID

from bridges.base import Bridge, BridgeOptions
from component.crypto import SecretBox, check_key
from component.fair_writer import WINDOW
from component.plugins import PluginError, load_bridge_class


class ConfigError(Exception):
    """The config cannot be used; `problems` lists `option.path: what is wrong` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_domain(value: str) -> str:
    try:
        jid = JID(value)
    except InvalidJID as exc:
        raise ValueError(f"{value!r} is not a valid domain: {exc}") from exc
    if jid.node or jid.resource or jid.domain != value.lower():
        raise ValueError(f"{value!r} must be a bare domain such as irc.example.org")
    return jid.domain


class ServerSettings(_Strict):
    """Where the XMPP server accepts components (XEP-0114)."""

    host: str = "127.0.0.1"
    port: int = Field(5347, ge=1, le=65535)


class ReconnectSettings(_Strict):
    """Backoff when the XMPP server is unreachable: capped, jittered exponential."""

    initial_delay: float = Field(1.0, gt=0)
    max_delay: float = Field(60.0, gt=0)
    auth_failure_delay: float = Field(300.0, gt=0)


class RegistrationLimit(_Strict):
    """Registration attempts (each a real legacy login) allowed per minute."""

    per_user: int = Field(5, ge=1)
    total: int = Field(60, ge=1)


class BridgeSection(BaseModel):
    """The component part of a bridge section; the other keys belong to the bridge."""

    model_config = ConfigDict(extra="allow", frozen=True)

    jid: str
    secret: SecretStr
    plugin: str | None = None

    @field_validator("jid")
    @classmethod
    def _jid_is_domain(cls, value: str) -> str:
        return _check_domain(value)

    @field_validator("secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @property
    def bridge_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MetricsSettings(_Strict):
    """Prometheus /metrics over HTTP; port 0 turns it off."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)


class ArchiveSettings(_Strict):
    """The room archive (history on join, MAM); `max_days` 0 keeps lines forever."""

    enabled: bool = True
    max_days: int = Field(30, ge=0)


class HistorySettings(_Strict):
    """Discussion history on joining a room, when the client's `<history>` sets no limit."""

    default_stanzas: int = Field(20, ge=0, le=250)


class FileSettings(_Strict):
    """Files: attachments uploaded to the XMPP server (XEP-0363), URLs fetched to attach."""

    enabled: bool = True
    upload_service: str | None = None
    """JID of the XEP-0363 service; by default found by disco on the server's domain."""
    discover_on: str | None = None
    """Where to look for it; by default the component's domain without its first label."""
    download_hosts: list[str] = []
    """Hosts whose URLs (files users send) are fetched and attached; others stay links."""
    max_download_bytes: int = Field(25 * 1024 * 1024, ge=0)
    download_timeout: float = Field(60.0, gt=0)
    timeout: float = Field(30.0, gt=0)
    """Seconds for a slot request, a connect or one read of an upload."""
    ca_file: str | None = None
    """Extra CA bundle to trust for HTTPS (a self-hosted service's own CA)."""


class DatabasePool(_Strict):
    """SQLAlchemy's connection pool (PostgreSQL): `size` kept open, `max_overflow` more
    under load, `timeout` s a query waits for one. The store uses at most `size` at a
    time and queues its callers itself (component.store), so a thousand sessions
    starting together wait their turn instead of timing out in the pool."""

    size: int = Field(10, ge=1)
    max_overflow: int = Field(10, ge=0)
    timeout: float = Field(30.0, gt=0)


class ClusterSettings(_Strict):
    """Several active processes on ejabberd: `slots` must equal the `component_number`
    of ejabberd's `domain_balancing` (type `bare_source`) for every component domain."""

    slots: int = Field(1, ge=1, le=64)


class Config(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database_url: str = ""
    database_pool: DatabasePool = Field(default_factory=DatabasePool)
    secret_key: SecretStr
    old_secret_keys: list[SecretStr] = []
    allowed_domains: list[str] = Field(min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    shutdown_timeout: float = Field(10.0, gt=0)
    """Seconds a stop waits for queued work and sessions before refusing and cancelling."""
    registration_limit: RegistrationLimit = Field(default_factory=RegistrationLimit)
    write_window: int = Field(WINDOW, ge=0)
    """Characters written to the XMPP server and not yet confirmed (component.fair_writer);
    0: no window, everything written at once."""
    files: FileSettings = Field(default_factory=FileSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    admins: list[str] = []
    """Bare JIDs allowed the operators' ad-hoc commands (the list of instances)."""
    bridges: dict[str, BridgeSection] = Field(min_length=1)

    @field_validator("secret_key", "old_secret_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | list[SecretStr]) -> SecretStr | list[SecretStr]:
        for key in value if isinstance(value, list) else [value]:
            check_key(key.get_secret_value())
        return value

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [_check_domain(domain) for domain in value]

    def secret_box(self) -> SecretBox:
        """The box that seals stored secrets with `secret_key` (and reads old keys)."""
        return SecretBox(
            self.secret_key.get_secret_value(),
            [key.get_secret_value() for key in self.old_secret_keys],
        )

    @field_validator("admins")
    @classmethod
    def _bare_jids(cls, value: list[str]) -> list[str]:
        bare = []
        for item in value:
            try:
                jid = JID(item)
            except InvalidJID as exc:
                raise ValueError(f"{item!r} is not a valid JID: {exc}") from exc
            if not jid.node or jid.resource:
                raise ValueError(f"{item!r} must be a bare JID such as admin@example.org")
            bare.append(jid.bare)
        return bare

    @model_validator(mode="after")
    def _slots_need_postgresql(self) -> Config:
        if self.cluster.slots > 1 and not self.database_url.startswith("postgresql"):
            raise ValueError(
                "cluster.slots above 1 needs a PostgreSQL database_url: the processes "
                "share their users' ownership there"
            )
        return self

    @model_validator(mode="after")
    def _distinct_jids(self) -> Config:
        jids = [section.jid for section in self.bridges.values()]
        if len(set(jids)) != len(jids):
            raise ValueError("each bridge needs its own jid")
        return self


class LoadedBridge(BaseModel):
    """A bridge section resolved to its class and checked options."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    section: BridgeSection
    cls: type[Bridge]
    options: BridgeOptions


def _format(error: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for item in error.errors():
        path = ".".join([*([prefix] if prefix else []), *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path or '(top level)'}: {message}")
    return problems


def parse_config(data: object, base_dir: Path) -> tuple[Config, list[LoadedBridge]]:
    """Validate config data and every bridge's own options; raise ConfigError listing all."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the file must hold a mapping of options"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
    if not config.database_url:
        config = config.model_copy(
            update={"database_url": f"sqlite+aiosqlite:///{(base_dir / 'gateway.db').resolve()}"}
        )
    loaded: list[LoadedBridge] = []
    problems: list[str] = []
    for name, section in config.bridges.items():
        try:
            cls = load_bridge_class(section.plugin or name)
            options = cls.Options.model_validate(section.bridge_options)
        except PluginError as exc:
            problems.append(f"bridges.{name}.plugin: {exc}")
            continue
        except ValidationError as exc:
            problems.extend(_format(exc, f"bridges.{name}"))
            continue
        loaded.append(LoadedBridge(name=name, section=section, cls=cls, options=options))
    if problems:
        raise ConfigError(problems)
    return config, loaded


def load_config(path: Path) -> tuple[Config, list[LoadedBridge]]:
    """Read and validate the YAML file at `path`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    return parse_config(data, path.parent)
