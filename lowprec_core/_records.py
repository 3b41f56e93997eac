"""Frozen, typed records: the configs, the plan and the reports, as data checked when built.

A `Record` subclass is a frozen class built by keyword. Building one checks each field against
its annotation, coercing only where JSON cannot say what Python means: a list for a tuple, an
object for a nested record, an integer for a float. `spec(...)` adds bounds; a `@check(...)`
function checks one field's value further. Records dump to JSON-ready dicts and read back from
them, and reading names the first bad field and what was expected.

Our own rather than pydantic: every `lowprec` command imports these, and pydantic's import
and model building took 0.12-0.14 s of each process's start-up on a Zen 3 core, a third of a
whole `lowprec quantize` of the demo model (docs/quantization.md).
"""

from __future__ import annotations

import json
import math
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from ._struct import Fields, frozen_delattr, frozen_setattr

_MISSING = object()  # a field without a default


class ValidationError(ValueError):
    """A value that does not fit its record: `loc` is the path to it, `msg` what was expected."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        self.loc, self.msg = loc, msg
        super().__init__(f"{'.'.join(map(str, loc)) or 'value'}: {msg}")


def spec(default: Any = _MISSING, *, ge: float | None = None, le: float | None = None, min_length: int | None = None) -> Any:
    """A field with bounds (ge/le for numbers, min_length for sequences) and a default, if any."""
    bounds = {key: value for key, value in (("ge", ge), ("le", le), ("min_length", min_length)) if value is not None}
    return _Field(default, None, bounds)


def check(*names: str) -> Callable[[Callable[[Any, str], Any]], staticmethod]:
    """Mark `function(value, field_name) -> value` as the check of those fields: it runs after the
    type check, and a ValueError it raises becomes a ValidationError at that field."""

    def mark(function: Callable[[Any, str], Any]) -> staticmethod:
        function.__checks__ = names  # type: ignore[attr-defined]
        return staticmethod(function)

    return mark


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(loc: tuple, expected: str, value: Any) -> ValidationError:
    return ValidationError(loc, f"expected {expected}, got {_shown(value)}")


Converter = Callable[[Any, tuple], Any]


def _converter(hint: Any) -> Converter:
    """value, loc -> the value as `hint` describes it, or ValidationError at loc. The function's
    `expects` says what it takes, for errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return _expecting("anything", lambda value, loc: value)
    if isinstance(hint, type) and issubclass(hint, Record):
        return _expecting(f"an object for {hint.__name__}", lambda value, loc: hint._nested(value, loc))
    simple = _SIMPLE.get(hint)
    if simple is not None:
        expects, accepts, make = simple

        def plain(value, loc):
            if accepts(value):
                return make(value)
            raise _fail(loc, expects, value)
        return _expecting(expects, plain)
    if origin is Literal:
        expects = f"one of: {', '.join(map(str, args))}"

        def choice(value, loc):
            if isinstance(value, str) and value in args:
                return value
            raise ValidationError(loc, f"expected {expects}; got {_shown(value)}")
        return _expecting(expects, choice)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        inner = [_converter(arg) for arg in options]
        optional = len(options) < len(args)
        expects = " or ".join([*(convert.expects for convert in inner), *(["null"] if optional else [])])

        def either(value, loc):
            if value is None and optional:
                return None
            for convert in inner:
                try:
                    return convert(value, loc)
                except ValidationError as err:
                    if err.loc != loc:  # wrong deeper inside (a record's field): that says more
                        raise
            raise _fail(loc, expects, value)
        return _expecting(expects, either)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        item, make = _converter(args[0]), origin

        def sequence(value, loc):
            if not isinstance(value, list | tuple):
                raise _fail(loc, "a list", value)
            return make(item(v, (*loc, i)) for i, v in enumerate(value))
        return _expecting("a list", sequence)
    if origin is dict:
        key, item = _converter(args[0]), _converter(args[1])

        def mapping(value, loc):
            if not isinstance(value, dict):
                raise _fail(loc, "an object", value)
            return {key(k, (*loc, str(k))): item(v, (*loc, str(k))) for k, v in value.items()}
        return _expecting("an object", mapping)
    raise TypeError(f"records cannot hold {hint!r}")  # a programming error: no field may say this


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_SIMPLE: dict[Any, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    # hint -> (what it takes, whether a value is that, the value as the hint's type)
    bool: ("true or false", lambda value: isinstance(value, bool | np.bool_), bool),  # a numpy comparison's too
    int: ("an integer", _is_integer, int),  # numpy integers too
    float: ("a number", _is_number, float),  # integers and numpy floats too
    str: ("a string", lambda value: isinstance(value, str), lambda value: value),
    dict: ("an object", lambda value: isinstance(value, dict), lambda value: value),
}


def _expecting(expects: str, convert: Converter) -> Converter:
    convert.expects = expects  # type: ignore[attr-defined]
    return convert


def _bounded(convert: Converter, bounds: dict[str, float]) -> Converter:
    if not bounds:
        return convert

    def within(value, loc):
        value = convert(value, loc)
        if value is None:
            return value
        if "ge" in bounds and value < bounds["ge"]:
            raise _fail(loc, f"a value greater than or equal to {bounds['ge']}", value)
        if "le" in bounds and value > bounds["le"]:
            raise _fail(loc, f"a value less than or equal to {bounds['le']}", value)
        if "min_length" in bounds and len(value) < bounds["min_length"]:
            raise _fail(loc, f"at least {bounds['min_length']} item(s)", value)
        return value
    return within


def _jsonable(value: Any, json_mode: bool) -> Any:
    if isinstance(value, Record):
        return value.model_dump(mode="json" if json_mode else "python")
    if isinstance(value, dict):
        return {k: _jsonable(v, json_mode) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_jsonable(v, json_mode) for v in value]
        return items if json_mode or isinstance(value, list) else tuple(items)
    if json_mode and isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity: null, as a reader expects of an unknown figure
    return value


class _Field:
    __slots__ = ("default", "factory", "bounds")

    def __init__(self, default: Any, factory: Callable[[], Any] | None, bounds: dict[str, float]) -> None:
        self.default, self.factory, self.bounds = default, factory, bounds

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.factory is None


class Record(Fields):
    """Base of every record: its annotated fields (underscored names excepted) are set once, by
    keyword, and checked; an empty list or dict default (`= []`) gives each record its own.

    `_extra = "forbid"` makes unknown keys an error when reading a dict (configs); records
    otherwise skip them (reports written by a newer version). `_omit_defaults` names fields left
    out of a dump while at that value (fields added after dumps of the record were published).

    A hand-written frozen class rather than a dataclass: building ~30 dataclasses costs about 35 ms of
    code generation at every start-up; these fields are read once, when a class is first built."""

    _extra = "ignore"
    _omit_defaults: dict[str, Any] = {}
    _fields: dict[str, _Field] = {}
    _converters: tuple[tuple[str, Converter], ...] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict(cls._fields)
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("_"):
                continue
            default = cls.__dict__.get(name, _MISSING)
            if isinstance(default, _Field):
                fields[name] = default
                delattr(cls, name)
            elif isinstance(default, list | dict) and not default:
                fields[name] = _Field(_MISSING, type(default), {})
            else:
                fields[name] = _Field(default, None, {})
        cls._fields = fields
        cls._converters = None  # built on first use: annotations resolve once the module is loaded

    @classmethod
    def _field_converters(cls) -> tuple[tuple[str, Converter], ...]:
        if cls._converters is None:
            hints = typing.get_type_hints(cls)
            checks = {name: value.__func__ for klass in reversed(cls.__mro__) for value in vars(klass).values()
                      if isinstance(value, staticmethod) for name in getattr(value.__func__, "__checks__", ())}
            converters = []
            for name, field in cls._fields.items():
                convert = _bounded(_converter(hints[name]), field.bounds)
                if name in checks:
                    convert = _checked(convert, checks[name], name)
                converters.append((name, convert))
            cls._converters = tuple(converters)
        return cls._converters

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self._fields)
        if unknown:
            raise ValidationError((sorted(unknown)[0],), f"unknown field; expected one of: {', '.join(self._fields)}")
        for name, convert in self._field_converters():
            if name in values:
                value = values[name]
            else:
                field = self._fields[name]
                if field.required:
                    raise ValidationError((name,), "required field is missing")
                value = field.factory() if field.factory is not None else field.default
            object.__setattr__(self, name, convert(value, (name,)))

    __setattr__ = frozen_setattr
    __delattr__ = frozen_delattr

    @classmethod
    def _nested(cls, value: Any, loc: tuple) -> Record:
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as err:
            raise ValidationError((*loc, *err.loc), err.msg) from None

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        """The record a JSON-like dict describes, or ValidationError naming the first bad field."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise _fail((), f"an object for {cls.__name__}", data)
        if cls._extra != "forbid":
            data = {name: value for name, value in data.items() if name in cls._fields}
        return cls(**data)

    @classmethod
    def model_validate_json(cls, text: str | bytes) -> Any:
        try:
            data = json.loads(text)
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            raise ValidationError((), f"expected JSON, got a parse error: {err}") from None
        return cls.model_validate(data)

    def model_dump(self, *, mode: Literal["python", "json"] = "python", include: set[str] | None = None,
                   exclude: set[str] | None = None) -> dict[str, Any]:
        """The fields as a dict (nested records as dicts); mode "json": lists for tuples and null
        for non-finite numbers, ready for json.dumps."""
        out = {}
        for name in self._fields:
            if (include is not None and name not in include) or (exclude and name in exclude):
                continue
            value = getattr(self, name)
            if name in self._omit_defaults and value == self._omit_defaults[name]:
                continue
            out[name] = _jsonable(value, mode == "json")
        return out

    def model_dump_json(self, *, indent: int | None = None) -> str:
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.model_dump(mode="json"), indent=indent, separators=separators, ensure_ascii=False, allow_nan=False)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        """A copy with `update`'s fields replaced, checked like any new record."""
        return type(self)(**{**{name: getattr(self, name) for name in self._fields}, **(update or {})})


def _checked(convert: Converter, function: Callable[[Any, str], Any], name: str) -> Converter:
    def checked(value, loc):
        value = convert(value, loc)
        try:
            return function(value, name)
        except ValidationError:
            raise
        except ValueError as err:
            raise ValidationError(loc, str(err)) from None
    return checked
