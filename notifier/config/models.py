"""The config file's sections: source, credentials, state, poll, subscriptions, metrics, logging,
and ``Config``, the whole file with its cross-section rules (the sinks are in ``sinks``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from notifier.config.base import ConfigModel, Problems, one_of
from notifier.config.cluster import ClusterConfig
from notifier.config.sinks import (
    AnySink,
    JsonlSinkConfig,
    KafkaSinkConfig,
    SinkConfig,
    StdoutSinkConfig,
)
from notifier.config.types import (
    BaseUrl,
    ContainerId,
    EntityId,
    EntityPart,
    HostPort,
    HubId,
    Name,
    NonEmpty,
    PositiveDuration,
    Regex,
    Secret,
    split_host_port,
)
from notifier.durations import ByteSize

MIB = 1024 * 1024
DEFAULT_BASE_URL = "https://developer.api.autodesk.com"
TOKEN_PATH = "/authentication/v2/token"

Region = Literal["US", "EMEA", "CAN", "GBR", "DEU", "IND", "JPN", "AUS"]


class SourceConfig(ConfigModel):
    """The Relationship Service (or the simulator) and how to call it."""

    base_url: BaseUrl = DEFAULT_BASE_URL
    token_url: BaseUrl | None = None
    region: Region | None = None
    timeout: PositiveDuration = 30.0
    max_attempts: int = Field(5, ge=1)
    concurrency: int = Field(8, ge=1)
    # A page bigger than this is treated as malformed (its stream is quarantined).
    max_response_bytes: Annotated[ByteSize, Field(ge=1024)] = 32 * MIB
    # http:// sends the client secret and tokens in clear: only for the simulator and tests.
    allow_insecure_http: bool = False

    def _enforce_https_unless_allowed(self) -> Problems:
        if self.allow_insecure_http:
            return []
        return [
            ((field,), "must be https:// (or set source.allow_insecure_http: true, "
                       "for a local simulator only: http:// sends secrets in clear)")
            for field in ("base_url", "token_url")
            if (getattr(self, field) or "").lower().startswith("http://")
        ]

    @property
    def resolved_token_url(self) -> str:
        """``token_url``, or ``{base_url}/authentication/v2/token``."""
        return self.token_url or f"{self.base_url}{TOKEN_PATH}"


class CredentialConfig(ConfigModel):
    """One APS user: a three-legged refresh token (rotated), or a static access token.

    ``refresh_token`` may be left out: ``notifier auth login`` then stores the first one in the
    state store (the credential is dead until it does).
    """

    _secret_fields = ("client_secret", "refresh_token", "access_token")

    name: Name
    client_id: NonEmpty | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    access_token: Secret | None = None
    requests_per_minute: int = Field(120, gt=0)
    reserve: float = Field(0.2, ge=0, lt=1)

    def _enforce_refresh_or_static_token(self) -> Problems:
        """Three-legged (client id and secret, plus a refresh token or one stored by
        ``notifier auth login``) or a static access token, never both."""
        if self.refresh_token is not None and self.access_token is not None:
            return [(("access_token",), "give either refresh_token or access_token, not both")]
        if self.access_token is not None:
            return []
        if self.refresh_token is None and self.client_id is None and self.client_secret is None:
            return [(("refresh_token",), "field required (or a static access_token instead)")]
        why = "with refresh_token" if self.refresh_token is not None else (
            "for a three-legged credential")
        return [
            ((f,), f"field required {why}")
            for f in ("client_id", "client_secret")
            if getattr(self, f) is None
        ]

    @property
    def static(self) -> bool:
        """True when the credential is a fixed access token that is never refreshed."""
        return self.access_token is not None


class StateConfig(ConfigModel):
    """Where the SQLite state store lives, and how long an orphaned stream's state is kept."""

    path: Path = Path("./var/notifier.db")
    # A subscription missing from the configuration keeps its state this long (a rename or
    # a briefly incomplete config must not replay its snapshot and lose deletions).
    orphan_retention: PositiveDuration = 7 * 86400.0
    # How long a write waits for another connection's lock before it fails (the service then
    # pauses and retries with backoff; nothing is lost).
    busy_timeout: PositiveDuration = 10.0


class PollConfig(ConfigModel):
    """How often containers are checked and how the request budget is spent."""

    # The shortest time between two checks of one container (the busiest get it).
    interval: PositiveDuration = 5.0
    # The longest, when the budget covers it; unset: about two passes over every container.
    max_staleness: PositiveDuration | None = None
    sync_concurrency: int = Field(4, ge=1)
    # A drain gives its slot to the next one in line after this many pages (it resumes from
    # its checkpoint): a few changes are never held behind a long resync.
    drain_pages_per_turn: int = Field(50, ge=1)
    status_chunk: int = Field(100, ge=1)
    quarantine_backoff_initial: PositiveDuration = 30.0
    quarantine_backoff_max: PositiveDuration = 1800.0
    scheduler: Literal["adaptive", "round_robin"] = "adaptive"

    def _enforce_staleness_not_below_interval(self) -> Problems:
        if self.max_staleness is not None and self.max_staleness < self.interval:
            return [(("max_staleness",), "must not be shorter than poll.interval")]
        return []

    def _enforce_backoff_order(self) -> Problems:
        if self.quarantine_backoff_max < self.quarantine_backoff_initial:
            return [(("quarantine_backoff_max",), "must not be below quarantine_backoff_initial")]
        return []


class QueryConfig(ConfigModel):
    """A search query (API parameter names) whose ``page.syncToken`` the subscription follows."""

    domain: EntityPart
    type: EntityPart | None = None
    id: EntityId | None = None
    with_domain: EntityPart | None = Field(None, alias="withDomain")
    with_type: EntityPart | None = Field(None, alias="withType")
    with_id: EntityId | None = Field(None, alias="withId")

    def _enforce_query_hierarchy(self) -> Problems:
        needs = [
            ("id", self.id, "type", self.type),
            ("withType", self.with_type, "withDomain", self.with_domain),
            ("withId", self.with_id, "withType", self.with_type),
        ]
        return [((key,), f"needs {parent}") for key, v, parent, pv in needs if v and not pv]

    def as_params(self) -> dict[str, str]:
        """The search query parameters, with the API's names."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _no_repeats(field: str, values: list[str] | None) -> Problems:
    if not values or len(set(values)) == len(values):
        return []
    seen: dict[str, int] = {}
    problems: Problems = []
    for i, value in enumerate(values or []):
        if value in seen:
            problems.append(((field, i), f"'{value}' repeated (first at {field}[{seen[value]}])"))
        seen.setdefault(value, i)
    return problems


DEFAULT_DISCOVER_EVERY = 900.0
HUB_ONLY_FIELDS = ("projects", "discover_every")


class ProjectFilterConfig(ConfigModel):
    """Which of a hub's projects to watch, by name: ``re.search`` regexes; exclude wins."""

    include: list[Regex] | None = None
    exclude: list[Regex] = Field(default_factory=list)


class SubscriptionConfig(ConfigModel):
    """What to watch (containers or a whole hub, optional filter), with which credentials,
    into which sinks."""

    name: Name
    credential: Name | None = None
    credentials: Annotated[list[Name], Field(min_length=1)] | None = None
    container_id: ContainerId | None = None
    container_ids: Annotated[list[ContainerId], Field(min_length=1)] | None = None
    hub_id: HubId | None = None
    projects: ProjectFilterConfig | None = None
    discover_every: PositiveDuration = DEFAULT_DISCOVER_EVERY
    domains: Annotated[list[EntityPart], Field(min_length=1, max_length=20)] | None = None
    query: QueryConfig | None = None
    emit_initial: bool = True
    sinks: Annotated[list[Name], Field(min_length=1)]

    def _rules_hold(self) -> bool:
        """One credential, one container, no hub, distinct sinks, not domains and query: the
        rules below all hold (tests/unit/test_config_memory.py checks it against them)."""
        return (self.hub_id is None and self.credentials is None and self.container_ids is None
                and self.credential is not None and self.container_id is not None
                and (self.domains is None or self.query is None)
                and len(set(self.sinks)) == len(self.sinks)
                and self.model_fields_set.isdisjoint(HUB_ONLY_FIELDS))

    def _enforce_one_credential_form(self) -> Problems:
        return one_of(self, "credential", "credentials")

    def _enforce_one_container_form(self) -> Problems:
        if self.hub_id is None:
            problems = one_of(self, "container_id", "container_ids")
            if problems and problems[0][0] == ("container_id",):
                return [(("container_id",), "field required (or container_ids: [...] or hub_id)")]
            return problems
        given = [f for f in ("container_id", "container_ids") if getattr(self, f) is not None]
        return [((f,), "give either hub_id or container ids, not both") for f in given]

    def _enforce_hub_fields_need_hub(self) -> Problems:
        if self.hub_id is not None:
            return []
        return [((f,), "only for a hub subscription (hub_id)")
                for f in HUB_ONLY_FIELDS if f in self.model_fields_set]

    def _enforce_hub_has_one_credential(self) -> Problems:
        if self.hub_id is not None and self.credentials is not None:
            return [(("credentials",), "a hub subscription takes one credential (the user "
                     "whose project list is read): use credential")]
        return []

    def _enforce_domains_or_query(self) -> Problems:
        if self.domains is not None and self.query is not None:
            return [(("query",), "give either domains or query, not both")]
        return []

    def _enforce_no_repeats(self) -> Problems:
        return (
            _no_repeats("credentials", self.credentials)
            + _no_repeats("container_ids", self.container_ids)
            + _no_repeats("sinks", self.sinks)
        )

    @property
    def containers(self) -> list[str]:
        """The configured container ids, whichever form was used; none for a hub subscription
        (its containers are discovered at run time)."""
        if self.hub_id is not None:
            return []
        return list(self.container_ids or [self.container_id or ""])

    @property
    def credential_names(self) -> list[str]:
        """The credential names, whichever form was used."""
        return list(self.credentials or [self.credential or ""])


class MetricsConfig(ConfigModel):
    """The HTTP server for /metrics, /healthz and /readyz."""

    listen: HostPort = "127.0.0.1:9464"
    enabled: bool = True

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


class LoggingConfig(ConfigModel):
    """Log level and format (``auto``: text on a terminal, JSON otherwise)."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"
    format: Literal["auto", "text", "json"] = "auto"


class Config(ConfigModel):
    """The notifier's configuration file."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    credentials: Annotated[list[CredentialConfig], Field(min_length=1)]
    state: StateConfig = Field(default_factory=StateConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    subscriptions: Annotated[list[SubscriptionConfig], Field(min_length=1)]
    sinks: Annotated[list[SinkConfig], Field(min_length=1)]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown_timeout: PositiveDuration = 20.0
    cluster: ClusterConfig | None = None  # absent: one process with its SQLite file

    def _enforce_unique_names(self) -> Problems:
        problems: Problems = []
        for section, items in (
            ("credentials", self.credentials),
            ("subscriptions", self.subscriptions),
            ("sinks", self.sinks),
        ):
            first: dict[str, int] = {}
            for i, item in enumerate(items):
                if item.name in first:
                    problems.append(
                        ((section, i, "name"),
                         f"duplicate name '{item.name}' (first at {section}[{first[item.name]}])")
                    )
                first.setdefault(item.name, i)
        return problems

    def _enforce_subscription_credentials_exist(self) -> Problems:
        known = dict.fromkeys(c.name for c in self.credentials)
        return [
            (loc, f"unknown credential '{name}' (known: {', '.join(known)})")
            for i, sub in enumerate(self.subscriptions)
            if sub.credential not in known  # the usual case at once: one known credential
            for loc, name in _credential_refs(i, sub)
            if name not in known
        ]

    def _enforce_subscription_sinks_exist(self) -> Problems:
        known = dict.fromkeys(s.name for s in self.sinks)
        return [
            (("subscriptions", i, "sinks", j), f"unknown sink '{name}' (known: {', '.join(known)})")
            for i, sub in enumerate(self.subscriptions)
            for j, name in enumerate(sub.sinks)
            if name not in known
        ]

    def _enforce_distinct_jsonl_paths(self) -> Problems:
        first: dict[Path, int] = {}
        problems: Problems = []
        for i, sink in enumerate(self.sinks):
            if isinstance(sink, JsonlSinkConfig):
                key = Path(os.path.abspath(sink.path))
                if key in first:
                    problems.append((("sinks", i, "path"), f"same file as sinks[{first[key]}]"))
                first.setdefault(key, i)
        return problems

    def _enforce_cluster_sinks(self) -> Problems:
        """In cluster mode, every sink must be reachable from every replica and take part in
        the partition's Kafka transaction: local files (jsonl, stdout) cannot. Webhook sinks
        deliver from the outbox, which the state topic carries (notifier.cluster.outbox)."""
        if self.cluster is None:
            return []
        problems: Problems = []
        servers = set(self.cluster.bootstrap_servers)
        for i, sink in enumerate(self.sinks):
            if isinstance(sink, JsonlSinkConfig | StdoutSinkConfig):
                problems.append((("sinks", i, "type"), (
                    f"a {sink.type} sink writes a local file of one replica: not available in "
                    "cluster mode (use a kafka sink)")))
            elif isinstance(sink, KafkaSinkConfig) and set(sink.bootstrap_servers) != servers:
                problems.append((("sinks", i, "bootstrap_servers"), (
                    "in cluster mode a kafka sink writes in the state topic's transactions: "
                    "it must use the same Kafka cluster (bootstrap_servers) as cluster")))
        return problems

    @property
    def hub_subscriptions(self) -> list[SubscriptionConfig]:
        """The subscriptions that watch a whole hub (their streams are discovered)."""
        return [sub for sub in self.subscriptions if sub.hub_id is not None]

    def streams(self) -> Iterator[tuple[SubscriptionConfig, str]]:
        """Every configured (subscription, container id) pair: the unit that owns one sync
        token. Hub subscriptions' streams are discovered at run time and not listed here."""
        for sub in self.subscriptions:
            for container_id in sub.containers:
                yield sub, container_id

    def credential_named(self, name: str) -> CredentialConfig:
        """The credential called ``name`` (KeyError if there is none)."""
        for cred in self.credentials:
            if cred.name == name:
                return cred
        raise KeyError(name)

    def sink_named(self, name: str) -> AnySink:
        """The sink called ``name`` (KeyError if there is none)."""
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(name)


def _credential_refs(i: int, sub: SubscriptionConfig) -> Problems:
    if sub.credentials is not None:
        return [(("subscriptions", i, "credentials", j), n) for j, n in enumerate(sub.credentials)]
    return [(("subscriptions", i, "credential"), sub.credential or "")]

