"""Loading the config file: YAML (or JSON), ``${VAR}`` interpolation, one readable line per problem.

Also the summary `check-config` prints and the JSON Schema of the file.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import os
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import orjson
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from notifier.config.base import ConfigModel, Loc
from notifier.config.models import Config
from notifier.config.sinks import SINK_TYPES
from notifier.durations import format_duration
from notifier.errors import ConfigError

_REFERENCE = re.compile(r"\$(?:\$|\{([^}]*)\}|\{)")  # "$$", "${...}", or an unterminated "${"
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def format_loc(loc: Loc) -> str:
    """``("subscriptions", 1, "sinks", 0)`` -> ``subscriptions[1].sinks[0]``."""
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (it resumes as it was afterwards).

    Building a large configuration (or the streams of one) allocates hundreds of thousands of
    objects that all live on: each young-generation pass walks them again, about a third of
    the time at 100,000 subscriptions. They are freed by reference counting if at all.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def interpolate(data: Any, environ: Mapping[str, str], problems: list[str], loc: Loc = ()) -> Any:
    """``data`` with ``${VAR}`` replaced in every string value; problems are appended. A
    mapping or list with no ``$`` anywhere inside is returned as it is, not copied."""
    if isinstance(data, dict | list) and not _may_refer(data):
        return data
    if isinstance(data, dict):
        return {k: interpolate(v, environ, problems, (*loc, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, environ, problems, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        where = format_loc(loc) or "(top level)"
        body = match.group(1)
        ref = _VARIABLE.fullmatch(body) if body is not None else None
        if ref is None:
            problems.append(f"{where}: malformed reference (use ${{NAME}}, ${{NAME:-x}} or $$)")
            return ""
        name, default = ref.group(1), ref.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(f"{where}: environment variable {name} is not set")
                return ""
            return default
        return value

    return _REFERENCE.sub(substitute, data)


def _may_refer(data: dict[Any, Any] | list[Any]) -> bool:
    """False when no string inside ``data`` holds a ``$`` (one pass in C over the JSON form;
    True when there is no JSON form, e.g. a YAML set: the caller then looks item by item)."""
    try:
        return b"$" in orjson.dumps(data)
    except TypeError:
        return True


class _PyLoader(yaml.SafeLoader):
    """Safe YAML, refusing duplicate keys (PyYAML would silently keep the last one)."""


_LOADERS: list[type[Any]] = [_PyLoader]  # the first is used; the tests read with each
if yaml.__with_libyaml__:  # PyYAML's wheels ship libyaml: its parser, the same documents

    class _CLoader(yaml.CSafeLoader):
        """``_PyLoader`` with libyaml's scanner and parser (in C): ~3x faster."""

    _LOADERS.insert(0, _CLoader)


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key '{key_node.value}' (first at line {seen[key_node.value]})",
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


for _loader in _LOADERS:
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _RepeatedKey(ValueError):
    """A JSON object names a key twice (the YAML reading then says where)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _RepeatedKey
    return out


def parse_config_text(text: str, loader: type[Any] | None = None) -> Any:
    """The document in ``text``: JSON (a subset of YAML, e.g. a generated config of 100,000
    subscriptions) read by the ``json`` module, anything else (or JSON that repeats a key)
    by the YAML loader (``loader``: the first of ``_LOADERS`` unless told); a document
    libyaml's scanner or parser refuses is read again by ``_PyLoader``, so a problem is
    described in the same words on every machine. The collector is paused meanwhile: the
    parse allocates an object per value, and its passes over them were two thirds of
    reading such a file."""
    loader = loader or _LOADERS[0]
    with gc_paused():
        if text.lstrip()[:1] == "{":
            with contextlib.suppress(ValueError):  # not JSON after all, or a repeated key
                return json.loads(text, object_pairs_hook=_unique_keys)
        try:
            return yaml.load(text, Loader=loader)
        except yaml.constructor.ConstructorError:
            raise  # the constructors are the same Python code in every loader: same words
        except yaml.YAMLError:
            if loader is _PyLoader:
                raise
        return yaml.load(text, Loader=_PyLoader)  # libyaml's scanner or parser refused it


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        return parse_config_text(text)  # safe YAML (JSON included)
    except yaml.MarkedYAMLError as exc:
        # Built from the parts, never str(exc): that quotes the offending line, maybe a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from None


def _strip_optional(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return tp


def _keys_at(loc: Loc) -> list[str]:
    """The keys the model at ``loc`` accepts (for "did you mean" hints)."""
    tp: Any = Config
    for seg in loc:
        tp = _strip_optional(tp)
        if isinstance(seg, int):
            tp = get_args(tp)[0] if get_origin(tp) is list else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            tp = fields[seg].annotation if seg in fields else None
        elif get_origin(tp) in (Union, types.UnionType):  # a discriminated union: seg is the tag
            tp = next((m for m in get_args(tp) if m.model_fields["type"].default == seg), None)
        else:
            return []
    tp = _strip_optional(tp)
    if not (isinstance(tp, type) and issubclass(tp, ConfigModel)):
        return []
    names = [f.alias or n for n, f in tp.model_fields.items()]
    return names + [f"{f}_file" for f in tp._secret_fields]


def _problem(error: ErrorDetails) -> str:
    """One line ``<path>: <message>`` from a pydantic error, without its input."""
    loc = tuple(error["loc"])
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "missing":
        msg = "field required"
    elif kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        msg = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a mapping"
    elif kind == "union_tag_not_found":
        loc, msg = (*loc, "type"), f"field required (one of: {', '.join(SINK_TYPES)})"
    elif kind == "union_tag_invalid":
        loc, msg = (*loc, "type"), f"unknown sink type (known: {', '.join(SINK_TYPES)})"
    elif kind == "too_short":
        least = ctx.get("min_length")
        msg = f"must have at least {least} item{'s' * (least != 1)}"
    elif kind == "too_long":
        msg = f"must have at most {ctx.get('max_length')} items (has {ctx.get('actual_length')})"
    msg = msg.removeprefix("Value error, ").replace("Input should be ", "must be ")
    # A discriminated union adds the sink type to the location: sinks.0.kafka.topic.
    shown = tuple(
        seg for i, seg in enumerate(loc)
        if not (i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int)
                and seg in SINK_TYPES)
    )
    where = format_loc(shown)
    msg = msg[:1].lower() + msg[1:]
    return f"{where}: {msg}" if where else msg


def _invalid(source: str, problems: list[str]) -> ConfigError:
    unique = list(dict.fromkeys(problems))
    count = f"{len(unique)} problem" + ("s" if len(unique) > 1 else "")
    return ConfigError(f"{source}: invalid configuration ({count})", unique)


def config_from_data(
    data: Any, *, environ: Mapping[str, str] | None = None, source: str = "configuration"
) -> Config:
    """Validate already-parsed YAML (interpolating ``${VAR}``), or raise ConfigError."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping (credentials:, subscriptions:, ...)"
        )
    problems: list[str] = []
    data = interpolate(data, os.environ if environ is None else environ, problems)
    if problems:
        raise _invalid(source, problems)
    try:
        with gc_paused():  # every object built here lives on (see gc_paused)
            return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise _invalid(source, [_problem(e) for e in errors]) from None


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, interpolate and validate a YAML config file, or raise ConfigError."""
    return config_from_data(_read_file(Path(path)), environ=environ, source=str(path))


def summarize(config: Config) -> list[str]:
    """A few lines describing what the config will do, for check-config and the startup log."""
    creds, subs = len(config.credentials), len(config.subscriptions)
    streams = sum(1 for _ in config.streams())
    every = format_duration(config.poll.interval)
    lines = [
        f"{creds} credential{'s' * (creds != 1)}, {subs} subscription{'s' * (subs != 1)}"
        f" -> {streams} stream{'s' * (streams != 1)}, polled every {every}",
        "sinks: " + ", ".join(f"{s.name} ({s.type})" for s in config.sinks),
    ]
    for sub in config.hub_subscriptions:
        lines.append(f"subscription {sub.name}: every project of hub {sub.hub_id} (discovered "
                     f"every {format_duration(sub.discover_every)})")
    subs_ = config.subscriptions
    unused = [c.name for c in config.credentials
              if not any(c.name in sub.credential_names for sub in subs_)]
    unused += [s.name for s in config.sinks if not any(s.name in sub.sinks for sub in subs_)]
    if unused:
        lines.append("not used by any subscription: " + ", ".join(unused))
    return lines


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (values after ``${VAR}`` interpolation)."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "notifier configuration"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
