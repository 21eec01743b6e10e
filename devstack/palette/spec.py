"""Palette's published Swagger 2.0 spec, loaded once, and request/response checks made from it.

The stand-in must not accept what real Palette would refuse, and must not invent endpoints, so
every route it serves is looked up in the spec's ``paths`` and every request is checked against
that operation's parameters and body schema before a handler runs.

Why a small validator of our own rather than ``jsonschema``: Swagger 2.0 schemas are a draft-4
subset with rules JSON Schema cannot say directly, and the errors must name the JSON path of the
field at fault (``spec.clientId is required``), which the required-keyword errors of jsonschema do
not. What is checked:

- ``type`` (a list of types too), ``enum``, ``required``, ``properties``, ``additionalProperties``,
  ``items``, ``allOf`` (properties merged), ``minimum``/``maximum``/``exclusive*``,
  ``multipleOf``, ``minLength``/``maxLength``, ``pattern``, ``minItems``/``maxItems``,
  ``uniqueItems``; ``format`` ``date-time`` (RFC 3339), ``int8``/``int32``/``int64`` ranges,
  ``byte`` (base64);
- ``x-nullable: true`` is the only way a JSON ``null`` is accepted (Go would silently treat a
  ``null`` as absent; here it is an error unless the spec allows it);
- ``readOnly`` properties must not be sent in requests and are not required in them;
- ``discriminator``: the value of the named property picks the definition (this one or one that
  extends it through ``allOf``) the object is checked against;
- other ``x-*`` extensions are ignored.

Stricter than Palette on purpose: a property the schema does not declare is rejected (the real
server silently drops it, which would hide a misspelt field in a client), and so is an undeclared
query parameter. Validators are compiled per definition on first use and cached, so start-up only
pays for ``json.load``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

# A check appends what is wrong with ``value`` (found at ``path``) to ``out``.
Check = Callable[[Any, tuple[str | int, ...], list["Violation"]], None]

REQUEST = "request"
RESPONSE = "response"

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")
_JSON_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class SpecError(Exception):
    """The spec lacks something the stand-in relies on (a path, an operation, a definition)."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (``body``/``query``/``path``/``header``), which field, which rule."""

    location: str
    path: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"in": self.location, "path": self.path, "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Parameter:
    """A non-body parameter of an operation, as the spec declares it."""

    name: str
    location: str
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """One ``paths[template][method]`` entry with path-level parameters merged in."""

    method: str
    path: str
    operation_id: str
    parameters: tuple[Parameter, ...]
    body_schema: dict[str, Any] | None
    body_required: bool
    responses: dict[str, Any]

    def parameter(self, name: str, location: str) -> Parameter | None:
        for param in self.parameters:
            if param.name == name and param.location == location:
                return param
        return None


def json_path(path: tuple[str | int, ...]) -> str:
    """``("spec", "clientId")`` -> ``spec.clientId``; odd keys and indexes get brackets."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, type_name: str) -> bool:
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "null":
        return value is None
    return True  # an unknown type name constrains nothing


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_rfc3339(text: str) -> bool:
    """True for an RFC 3339 date-time such as ``2026-12-31T23:59:59.000Z``."""
    match = _RFC3339.match(text)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        dt.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    zone = match.group(8)
    if zone not in ("Z", "z") and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
        return False
    return second <= 60  # 60: a leap second, which RFC 3339 allows


class PaletteSpec:
    """The parsed spec plus validators compiled lazily per (definition, direction)."""

    def __init__(self, document: dict[str, Any]) -> None:
        if document.get("swagger") != "2.0":
            raise SpecError("Only a Swagger 2.0 document is supported.")
        self.document = document
        self.paths: dict[str, Any] = document.get("paths") or {}
        self.definitions: dict[str, Any] = document.get("definitions") or {}
        self._checks: dict[tuple[str, str, bool], Check] = {}
        # Inline schemas (parameters, bodies without $ref) keyed by identity: the document they
        # live in is never changed, so the identity is stable for the spec's life.
        self._inline: dict[tuple[int, str], Check] = {}
        self._operations: dict[tuple[str, str], Operation] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> PaletteSpec:
        with open(path, encoding="utf-8") as handle:
            return cls(json.load(handle))

    # ------------------------------------------------------------------ operations

    def has_operation(self, method: str, path: str) -> bool:
        item = self.paths.get(path)
        return isinstance(item, dict) and isinstance(item.get(method.lower()), dict)

    def operation(self, method: str, path: str) -> Operation:
        """The operation at ``paths[path][method]``; :class:`SpecError` when the spec has none."""
        key = (method.upper(), path)
        cached = self._operations.get(key)
        if cached is not None:
            return cached
        if not self.has_operation(method, path):
            raise SpecError(f"The spec has no operation {method.upper()} {path}.")
        item = self.paths[path]
        raw = item[method.lower()]
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for param in list(item.get("parameters") or []) + list(raw.get("parameters") or []):
            param = self._resolve_parameter(param)
            merged[(param["name"], param["in"])] = param  # the operation's own entry wins
        body_schema: dict[str, Any] | None = None
        body_required = False
        params: list[Parameter] = []
        for (name, location), param in merged.items():
            if location == "body":
                body_schema = param.get("schema") or {}
                body_required = bool(param.get("required"))
            else:
                params.append(Parameter(name, location, bool(param.get("required")), param))
        operation = Operation(method.upper(), path, str(raw.get("operationId", "")), tuple(params),
                              body_schema, body_required, dict(raw.get("responses") or {}))
        self._operations[key] = operation
        return operation

    def _resolve_parameter(self, param: dict[str, Any]) -> dict[str, Any]:
        ref = param.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/parameters/"):
            resolved = (self.document.get("parameters") or {}).get(ref.rsplit("/", 1)[-1])
            if not isinstance(resolved, dict):
                raise SpecError(f"Unresolvable parameter reference {ref}.")
            return resolved
        return param

    # ------------------------------------------------------------------ requests

    def check_parameters(self, operation: Operation, *, path_params: dict[str, str],
                         query: dict[str, list[str]],
                         headers: dict[str, str]) -> tuple[dict[str, Any], list[Violation]]:
        """Check path, query and header parameters; return typed query values (defaults applied).

        A query parameter the operation does not declare, or one given twice, is an error.
        """
        violations: list[Violation] = []
        values: dict[str, Any] = {}
        declared = {p.name for p in operation.parameters if p.location == "query"}
        for name in sorted(query):
            if name not in declared:
                listed = ", ".join(sorted(declared)) or "none"
                violations.append(Violation(
                    "query", name, "unknown",
                    f"Query parameter '{name}' is not declared by {operation.operation_id} "
                    f"(declared: {listed})."))
        for param in operation.parameters:
            raw: str | None
            if param.location == "query":
                given = query.get(param.name)
                if given is not None and len(given) > 1 and param.schema.get("type") != "array":
                    violations.append(Violation("query", param.name, "duplicate",
                                                f"Query parameter '{param.name}' is given "
                                                f"{len(given)} times; give it once."))
                    continue
                raw = given[-1] if given else None
            elif param.location == "path":
                raw = path_params.get(param.name)
            elif param.location == "header":
                raw = headers.get(param.name.lower())
            else:
                continue  # formData: no served operation takes it
            if raw is None:
                if param.required:
                    violations.append(Violation(param.location, param.name, "required",
                                                f"{param.location.capitalize()} parameter "
                                                f"'{param.name}' is required."))
                elif "default" in param.schema and param.location == "query":
                    values[param.name] = param.schema["default"]
                continue
            value, problem = _convert_parameter(raw, param.schema)
            if problem is not None:
                violations.append(Violation(param.location, param.name, "type",
                                            f"{param.location.capitalize()} parameter "
                                            f"'{param.name}' {problem}."))
                continue
            found: list[Violation] = []
            self._inline_check(param.schema, REQUEST, operation.operation_id)(value, (param.name,), found)
            for violation in found:
                violations.append(Violation(param.location, violation.path, violation.rule,
                                            f"{param.location.capitalize()} parameter "
                                            f"{violation.message}"))
            if param.location == "query":
                values[param.name] = value
        return values, violations

    def check_body(self, operation: Operation, body: Any) -> list[Violation]:
        """Check a parsed JSON request body against the operation's body schema."""
        if operation.body_schema is None:
            return []
        return self.validate(operation.body_schema, body, mode=REQUEST)

    def check_response(self, operation: Operation, status: int, body: Any) -> list[Violation]:
        """Check a parsed response body (``None`` for no body) against the declared response."""
        declared = operation.responses.get(str(status)) or operation.responses.get("default")
        if declared is None:
            return [Violation("response", "", "status",
                              f"Status {status} is not a declared response of {operation.operation_id}.")]
        schema = declared.get("schema")
        if schema is None:
            if body is None:
                return []
            return [Violation("response", "", "body",
                              f"Response {status} of {operation.operation_id} declares no body.")]
        return self.validate(schema, body, mode=RESPONSE)

    def validate(self, schema: dict[str, Any] | str, value: Any, *, mode: str = REQUEST) -> list[Violation]:
        """Violations of ``value`` against a schema (or a definition name) in ``mode``."""
        if isinstance(schema, str):
            check = self._definition(schema, mode)
        elif set(schema) <= {"$ref", "description"} and "$ref" in schema:
            check = self._definition(self._ref_name(schema["$ref"]), mode)
        else:
            check = self._inline_check(schema, mode, "the body")
        out: list[Violation] = []
        try:
            check(value, (), out)
        except RecursionError:
            out.append(Violation("body", "", "depth", "The body is nested too deeply."))
        return out

    # ------------------------------------------------------------------ compilation

    def _ref_name(self, ref: str) -> str:
        if not ref.startswith("#/definitions/"):
            raise SpecError(f"Only local definition references are supported, not {ref}.")
        name = ref[len("#/definitions/"):]
        if name not in self.definitions:
            raise SpecError(f"The spec has no definition {name}.")
        return name

    def _definition(self, name: str, mode: str, *, dispatch: bool = True) -> Check:
        """The compiled check of ``definitions[name]``; built on first use, then cached."""
        key = (name, mode, dispatch)
        check = self._checks.get(key)
        if check is None:
            with self._lock:
                check = self._checks.get(key)
                if check is None:
                    schema = self.definitions[name]
                    if dispatch and isinstance(schema.get("discriminator"), str):
                        check = self._discriminated(name, mode)
                    else:
                        check = self._compile(schema, mode, name)
                    self._checks[key] = check
        return check

    def _inline_check(self, schema: dict[str, Any], mode: str, owner: str) -> Check:
        key = (id(schema), mode)
        check = self._inline.get(key)
        if check is None:
            check = self._inline[key] = self._compile(schema, mode, owner)
        return check

    def _lazy_ref(self, ref: str, mode: str) -> Check:
        # Resolved at first call, so recursive definitions compile without looping.
        name = self._ref_name(ref)
        cell: list[Check] = []

        def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not cell:
                cell.append(self._definition(name, mode))
            cell[0](value, path, out)

        return check

    def _discriminated(self, name: str, mode: str) -> Check:
        prop = self.definitions[name]["discriminator"]
        allowed = sorted(n for n in self.definitions if n == name or self._extends(n, name, set()))

        def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not isinstance(value, dict):
                self._definition(name, mode, dispatch=False)(value, path, out)
                return
            chosen = value.get(prop)
            if not isinstance(chosen, str) or chosen not in allowed:
                out.append(Violation("body", json_path((*path, prop)), "discriminator",
                                     f"{json_path((*path, prop))} must name {name} or a definition "
                                     f"that extends it ({', '.join(allowed)})."))
                return
            self._definition(chosen, mode, dispatch=False)(value, path, out)

        return check

    def _extends(self, child: str, base: str, seen: set[str]) -> bool:
        if child in seen:
            return False
        seen.add(child)
        for member in self.definitions[child].get("allOf") or []:
            ref = member.get("$ref") if isinstance(member, dict) else None
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                parent = ref[len("#/definitions/"):]
                if parent == base or (parent in self.definitions and self._extends(parent, base, seen)):
                    return True
        return False

    def _object_shape(self, schema: dict[str, Any], seen: frozenset[str] = frozenset()
                      ) -> tuple[dict[str, Any], set[str], Any]:
        """Properties, required names and additionalProperties, merged through ``allOf``."""
        properties: dict[str, Any] = dict(schema.get("properties") or {})
        required = set(schema.get("required") or []) if isinstance(schema.get("required"), list) else set()
        additional = schema.get("additionalProperties")
        for member in schema.get("allOf") or []:
            if not isinstance(member, dict):
                continue
            ref = member.get("$ref")
            if isinstance(ref, str):
                name = self._ref_name(ref)
                if name in seen:
                    continue
                member = self.definitions[name]
                seen = seen | {name}
            props, req, extra = self._object_shape(member, seen)
            properties = {**props, **properties}
            required |= req
            if additional is None and extra is not None:
                additional = extra
        return properties, required, additional

    def _compile(self, schema: dict[str, Any], mode: str, owner: str) -> Check:
        """Turn one schema node into a check; ``owner`` names it in unknown-property messages."""
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self._lazy_ref(ref, mode)  # siblings of $ref are ignored, as Swagger says
        checks: list[Check] = []
        nullable = schema.get("x-nullable") is True
        raw_type = schema.get("type")
        types: tuple[str, ...]
        if isinstance(raw_type, str):
            types = (raw_type,)
        elif isinstance(raw_type, list):
            types = tuple(t for t in raw_type if isinstance(t, str))
        elif "properties" in schema or "allOf" in schema or "additionalProperties" in schema:
            types = ("object",)  # Swagger tools treat a typeless schema with properties as an object
        else:
            types = ()
        if "enum" in schema and isinstance(schema["enum"], list):
            checks.append(_enum_check(schema["enum"]))
        if any(t in ("string",) for t in types) or not types:
            checks.extend(_string_checks(schema))
        if any(t in ("integer", "number") for t in types) or not types:
            checks.extend(_number_checks(schema))
        if "array" in types or (not types and "items" in schema):
            checks.extend(self._array_checks(schema, mode, owner))
        if "object" in types:
            checks.append(self._object_check(schema, mode, owner))
        type_label = " or ".join(types)
        known = tuple(t for t in types if t in _JSON_TYPES)

        def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if value is None:
                if nullable or "null" in types or not types:
                    return
                out.append(Violation("body", json_path(path), "type",
                                     f"{_where(path)} must be of type {type_label}, not null "
                                     "(the spec does not allow null here; leave the field out)."))
                return
            if known and not any(_is_type(value, t) for t in known):
                out.append(Violation("body", json_path(path), "type",
                                     f"{_where(path)} must be of type {type_label}, "
                                     f"got {_type_name(value)}."))
                return
            for item in checks:
                item(value, path, out)

        return check

    def _array_checks(self, schema: dict[str, Any], mode: str, owner: str) -> list[Check]:
        checks: list[Check] = []
        min_items, max_items = schema.get("minItems"), schema.get("maxItems")
        unique = schema.get("uniqueItems") is True
        items = schema.get("items")
        item_check = self._compile(items, mode, owner) if isinstance(items, dict) else None

        def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not isinstance(value, list):
                return
            if isinstance(min_items, int) and len(value) < min_items:
                out.append(Violation("body", json_path(path), "minItems",
                                     f"{_where(path)} must have at least {min_items} items."))
            if isinstance(max_items, int) and len(value) > max_items:
                out.append(Violation("body", json_path(path), "maxItems",
                                     f"{_where(path)} must have at most {max_items} items."))
            if unique:
                seen: dict[str, int] = {}
                for index, element in enumerate(value):
                    key = _canonical(element)
                    if key in seen:
                        out.append(Violation("body", json_path((*path, index)), "uniqueItems",
                                             f"{_where((*path, index))} repeats item {seen[key]}; "
                                             "the items must be unique."))
                        break
                    seen[key] = index
            if item_check is not None:
                for index, element in enumerate(value):
                    item_check(element, (*path, index), out)

        checks.append(check)
        return checks

    def _object_check(self, schema: dict[str, Any], mode: str, owner: str) -> Check:
        properties, required, additional = self._object_shape(schema)
        property_checks = {name: self._compile(sub, mode, owner) if isinstance(sub, dict) else None
                           for name, sub in properties.items()}
        read_only = {name for name, sub in properties.items()
                     if isinstance(sub, dict) and sub.get("readOnly") is True}
        if mode == REQUEST:
            required = required - read_only
        required_sorted = sorted(required)
        additional_check: Check | None = None
        closed = True
        if additional is True or (isinstance(additional, dict) and not additional):
            closed = False
        elif isinstance(additional, dict):
            closed = False
            additional_check = self._compile(additional, mode, owner)
        declared_names = ", ".join(sorted(properties)) or "none"

        def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not isinstance(value, dict):
                return
            for name in required_sorted:
                if name not in value:
                    out.append(Violation("body", json_path((*path, name)), "required",
                                         f"{json_path((*path, name))} is required."))
            for name, element in value.items():
                sub = property_checks.get(name, _MISSING)
                if sub is _MISSING:
                    if additional_check is not None:
                        additional_check(element, (*path, name), out)
                    elif closed:
                        out.append(Violation(
                            "body", json_path((*path, name)), "additionalProperties",
                            f"{json_path((*path, name))} is not a property of {owner} "
                            f"(declared: {declared_names}); Palette would silently drop it."))
                    continue
                if mode == REQUEST and name in read_only:
                    out.append(Violation("body", json_path((*path, name)), "readOnly",
                                         f"{json_path((*path, name))} is read-only and must not be sent."))
                    continue
                if sub is not None:
                    sub(element, (*path, name), out)

        return check


_MISSING: Any = object()


def _where(path: tuple[str | int, ...]) -> str:
    return json_path(path) or "the body"


def _enum_check(options: list[Any]) -> Check:
    listed = ", ".join(json.dumps(o) for o in options)

    def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
        if not any(_same_json(value, option) for option in options):
            out.append(Violation("body", json_path(path), "enum",
                                 f"{_where(path)} must be one of {listed}; got {_short(value)}."))

    return check


def _string_checks(schema: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_len, int) or isinstance(max_len, int):
        def lengths(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not isinstance(value, str):
                return
            if isinstance(min_len, int) and len(value) < min_len:
                out.append(Violation("body", json_path(path), "minLength",
                                     f"{_where(path)} must be at least {min_len} characters long."))
            if isinstance(max_len, int) and len(value) > max_len:
                out.append(Violation("body", json_path(path), "maxLength",
                                     f"{_where(path)} must be at most {max_len} characters long."))
        checks.append(lengths)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            regex: re.Pattern[str] | None = re.compile(pattern)
        except re.error:
            regex = None  # an ECMA-only pattern: cannot be checked here
        if regex is not None:
            compiled = regex

            def matches(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
                if isinstance(value, str) and not compiled.search(value):
                    out.append(Violation("body", json_path(path), "pattern",
                                         f"{_where(path)} must match the pattern {pattern}."))
            checks.append(matches)
    fmt = schema.get("format")
    if fmt == "date-time":
        def date_time(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if isinstance(value, str) and not is_rfc3339(value):
                out.append(Violation("body", json_path(path), "format",
                                     f"{_where(path)} must be an RFC 3339 date-time such as "
                                     "2026-12-31T23:59:59.000Z."))
        checks.append(date_time)
    elif fmt == "byte":
        def byte(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
            if not isinstance(value, str):
                return
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                out.append(Violation("body", json_path(path), "format",
                                     f"{_where(path)} must be base64 (format byte)."))
        checks.append(byte)
    return checks


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    fmt = schema.get("format")
    bounds = _INT_RANGES.get(fmt) if isinstance(fmt, str) else None
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    exclusive_min, exclusive_max = schema.get("exclusiveMinimum") is True, schema.get("exclusiveMaximum") is True
    multiple = schema.get("multipleOf")

    def check(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if isinstance(value, float) and not math.isfinite(value):
            out.append(Violation("body", json_path(path), "type", f"{_where(path)} must be a finite number."))
            return
        if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            out.append(Violation("body", json_path(path), "format",
                                 f"{_where(path)} is out of range for {fmt} "
                                 f"({bounds[0]}..{bounds[1]})."))
        if isinstance(minimum, (int, float)) and (value < minimum or (exclusive_min and value == minimum)):
            relation = "greater than" if exclusive_min else "at least"
            out.append(Violation("body", json_path(path), "minimum",
                                 f"{_where(path)} must be {relation} {minimum}; got {value}."))
        if isinstance(maximum, (int, float)) and (value > maximum or (exclusive_max and value == maximum)):
            relation = "less than" if exclusive_max else "at most"
            out.append(Violation("body", json_path(path), "maximum",
                                 f"{_where(path)} must be {relation} {maximum}; got {value}."))
        if isinstance(multiple, (int, float)) and multiple > 0:
            quotient = value / multiple
            if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
                out.append(Violation("body", json_path(path), "multipleOf",
                                     f"{_where(path)} must be a multiple of {multiple}."))

    if bounds is not None or minimum is not None or maximum is not None or multiple is not None:
        checks.append(check)
    else:
        checks.append(_finite_only)
    return checks


def _finite_only(value: Any, path: tuple[str | int, ...], out: list[Violation]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        out.append(Violation("body", json_path(path), "type", f"{_where(path)} must be a finite number."))


_INTEGER_TEXT = re.compile(r"^[+-]?\d{1,30}$")
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _convert_parameter(raw: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """A query/path/header string as the type the spec declares; or a reason it is not one."""
    kind = schema.get("type", "string")
    if kind == "integer":
        if not _INTEGER_TEXT.match(raw):
            return None, f"must be an integer; got {_short(raw)}"
        return int(raw), None
    if kind == "number":
        try:
            number = float(raw)
        except ValueError:
            return None, f"must be a number; got {_short(raw)}"
        if not math.isfinite(number):
            return None, "must be a finite number"
        return number, None
    if kind == "boolean":
        if raw.lower() not in _BOOLEAN_TEXT:
            return None, f"must be true or false; got {_short(raw)}"
        return _BOOLEAN_TEXT[raw.lower()], None
    if kind == "array":
        separator = {"csv": ",", "ssv": " ", "tsv": "\t", "pipes": "|"}.get(
            schema.get("collectionFormat", "csv"), ",")
        items = schema.get("items") or {}
        converted = []
        for part in raw.split(separator) if raw else []:
            value, problem = _convert_parameter(part, items)
            if problem is not None:
                return None, problem
            converted.append(value)
        return converted, None
    return raw, None
