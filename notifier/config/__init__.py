"""Configuration: the YAML file's pydantic models, ``${VAR}`` interpolation and ``load_config``.

Rules the file follows (see config/example.yaml for every option):

- Durations are float seconds written as "500ms", "30s", "5m", "1h", "2d" or a number of seconds;
  sizes are int bytes written as "64KiB", "1MiB" or a number.
- ``${VAR}`` in any string value is replaced from the environment before validation;
  ``${VAR:-default}`` uses ``default`` when VAR is unset or empty; ``$$`` is a literal ``$``.
- Every secret field ``<f>`` can be given as ``<f>_file: /path`` instead (the file is read at load
  time, its trailing newline stripped; for the webhook ``secrets`` list, one secret per line).
- Relative paths (state, jsonl, secret files) are relative to the working directory.
- Container ids are the bare project GUID: a ``b.``-prefixed Data Management id is rejected with a
  hint rather than silently stripped, so one container has exactly one spelling (event ids and
  state keys are derived from it). GUIDs are lower-cased for the same reason.

Every problem becomes one line ``<field path>: <message>`` in ``ConfigError.problems``; messages
never carry input values of secret fields (inputs are never echoed at all).

Modules: ``types`` (field types and secret files), ``base`` (the model base and its rules),
``models`` (the sections and ``Config``), ``sinks`` (the sink sections), ``loader`` (reading,
interpolating, error messages, JSON Schema). This package only re-exports them.
"""

from notifier.config.base import Loc, Problems
from notifier.config.loader import (
    config_from_data,
    config_json_schema,
    format_loc,
    interpolate,
    load_config,
    summarize,
)
from notifier.config.models import (
    DEFAULT_BASE_URL,
    TOKEN_PATH,
    Config,
    CredentialConfig,
    LoggingConfig,
    MetricsConfig,
    PollConfig,
    ProjectFilterConfig,
    QueryConfig,
    Region,
    SourceConfig,
    StateConfig,
    SubscriptionConfig,
)
from notifier.config.sinks import (
    KIB,
    SINK_TYPES,
    AnySink,
    CircuitBreakerConfig,
    JsonlSinkConfig,
    KafkaSinkConfig,
    SinkConfig,
    StdoutSinkConfig,
    WebhookSinkConfig,
)
from notifier.config.types import split_host_port

__all__ = [
    "DEFAULT_BASE_URL",
    "KIB",
    "SINK_TYPES",
    "TOKEN_PATH",
    "AnySink",
    "CircuitBreakerConfig",
    "Config",
    "CredentialConfig",
    "JsonlSinkConfig",
    "KafkaSinkConfig",
    "Loc",
    "LoggingConfig",
    "MetricsConfig",
    "PollConfig",
    "Problems",
    "ProjectFilterConfig",
    "QueryConfig",
    "Region",
    "SinkConfig",
    "SourceConfig",
    "StateConfig",
    "StdoutSinkConfig",
    "SubscriptionConfig",
    "WebhookSinkConfig",
    "config_from_data",
    "config_json_schema",
    "format_loc",
    "interpolate",
    "load_config",
    "split_host_port",
    "summarize",
]
