"""The base of every config model: frozen, no extra keys, ``<field>_file`` secrets, named rules.

A model lists the fields that also accept ``<field>_file`` in ``_secret_fields``; each of its
methods named ``_enforce_*`` is a cross-field rule returning ``(location, message)`` problems,
all reported at once, each at its field.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from notifier.config.types import FromFile

Loc = tuple[str | int, ...]
Problems = list[tuple[Loc, str]]


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    """JSON Schema: a sink's ``type`` is required; each secret field has a ``<field>_file`` form."""
    props = schema.get("properties", {})
    if "const" in props.get("type", {}):  # the discriminator of a sink (defaulted for Python use)
        schema.setdefault("required", []).insert(0, "type")
    rules: list[dict[str, Any]] = []
    for field in getattr(cls, "_secret_fields", ()):
        alt = f"{field}_file"
        many = "array" in str(props.get(field, {})) or "additionalProperties" in str(
            props.get(field, {}))
        props[alt] = {
            "type": "string",
            "title": alt,
            "description": f"path of a file holding {field}"
            + (" (one per line)" if many else " (trailing newline stripped)")
            + f"; instead of {field}",
        }
        rules.append({"not": {"required": [field, alt]}})
        if field in schema.get("required", []):
            schema["required"].remove(field)
            rules.append({"anyOf": [{"required": [field]}, {"required": [alt]}]})
    if rules:
        schema.setdefault("allOf", []).extend(rules)


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class ConfigModel(BaseModel):
    """A config section: frozen, unknown keys refused, ``_file`` secrets, ``_enforce_*`` rules."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra=_schema_extra
    )
    # Fields that also accept ``<field>_file``.
    _secret_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _take_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls._secret_fields:
            return data
        data = dict(data)
        for field in cls._secret_fields:
            alt = f"{field}_file"
            if alt in data:
                data[field] = FromFile(data.pop(alt), conflict=field in data)
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        """Run every ``_enforce_*`` rule of the model; report all their problems, each at its field.

        Rules only run once every field is valid on its own (pydantic's "after" stage).
        """
        if self._rules_hold():
            return self
        problems = [problem for rule in _rules(type(self)) for problem in rule(self)]
        if not problems:
            return self
        # In document order: by section, then by list index.
        order = {name: i for i, name in enumerate(type(self).model_fields)}
        problems.sort(
            key=lambda p: (
                order.get(str(p[0][0]), len(order)),
                p[0][1] if len(p[0]) > 1 and isinstance(p[0][1], int) else -1,
            )
        )
        raise ValidationError.from_exception_data(
            type(self).__name__,
            [
                InitErrorDetails(type=PydanticCustomError("config_rule", msg), loc=loc, input=None)
                for loc, msg in problems
            ],
        )

    def _rules_hold(self) -> bool:
        """True only if every ``_enforce_*`` rule surely finds nothing (a quick test of the
        usual shape, for a model validated 100,000 times); False: run them."""
        return False

    @model_validator(mode="after")
    def _share_fields_set(self) -> Self:
        """One shared ``model_fields_set`` per distinct set of given fields.

        Pydantic keeps a set per instance (~0.7 KB even for five names); a config with 100,000
        subscriptions would hold 100,000 equal ones (~70 MB). The models are frozen, so the set
        is never changed in place (``model_copy`` copies it).
        """
        fields = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(fields), fields)
        if shared is not fields:
            object.__setattr__(self, "__pydantic_fields_set__", shared)
        return self


@functools.cache
def _rules(cls: type[ConfigModel]) -> tuple[Callable[[Any], Problems], ...]:
    """The ``_enforce_*`` methods of ``cls``, base classes' first (looked up once per class:
    a config of 100,000 subscriptions validates 100,000 models of one class)."""
    return tuple(
        rule for klass in reversed(cls.__mro__)
        for name, rule in vars(klass).items() if name.startswith("_enforce_")
    )


def one_of(model: BaseModel, single: str, plural: str) -> Problems:
    """The rule for a field given in a single or a list form: exactly one of them."""
    has_single = getattr(model, single) is not None
    if has_single != (getattr(model, plural) is not None):
        return []
    if has_single:
        return [((plural,), f"give either {single} or {plural}, not both")]
    return [((single,), f"field required (or {plural}: [...])")]

