"""Plain data classes for lowprec's internals: fields from annotations, no generated code.

`class X(Struct)` gets an __init__ over its annotated fields (by position or keyword, in
declaration order, with their defaults), a repr and field-wise equality; it is frozen (and
hashable by its fields) unless its class line says `frozen=False`, and `kw_only=True` refuses
positional arguments. `factory(f)` is a default built per instance, as is an empty list or dict
default. `copy.replace`-style updates: `x.replace(field=value)`.

Not dataclasses: a dataclass generates and compiles its methods when its module is imported,
0.4-1.6 ms per class on a Zen 3 core, 14 ms for the 17 a `lowprec quantize` imports (4 % of
the whole command on the demo model, docs/quantization.md). Not `Record` either: these values
come from lowprec's own code, so nothing checks them on the way in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class factory:  # noqa: N801 - reads as a default: `tensors: dict = factory(dict)`
    """A field's default, made afresh for each instance by `make()`."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")


def frozen_delattr(self: Any, name: str) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")


def _hashable(value: Any) -> Any:
    """A dict field (QuantConfig.input_shapes) hashes as its sorted items."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


class Fields:
    """Value semantics over a class's `_fields` (names, in order): equality, hash and repr.
    Shared by Struct and by `_records.Record`, which collects and checks its fields itself."""

    _fields: Any = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(_hashable(value) for value in self._values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{name}={getattr(self, name)!r}' for name in self._fields)})"


class Struct(Fields):
    """Base of lowprec's plain data classes (see the module's docstring)."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _kw_only = False

    def __init_subclass__(cls, *, frozen: bool = True, kw_only: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields, defaults = list(cls._fields), dict(cls._defaults)
        for name in cls.__dict__.get("__annotations__", {}):
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                value = cls.__dict__[name]
                if isinstance(value, list | dict) and not value:
                    value = factory(type(value))
                defaults[name] = value
                if isinstance(value, factory):
                    delattr(cls, name)
        cls._fields, cls._defaults, cls._kw_only = tuple(fields), defaults, kw_only
        if frozen:
            cls.__setattr__, cls.__delattr__ = frozen_setattr, frozen_delattr  # type: ignore[assignment]
        else:
            cls.__hash__ = None  # type: ignore[assignment]  # its fields change: not a key

    def __init__(self, *args: Any, **values: Any) -> None:
        name_of = type(self).__name__
        if args:
            if self._kw_only:
                raise TypeError(f"{name_of}() takes keyword arguments only, got {len(args)} positional")
            if len(args) > len(self._fields):
                raise TypeError(f"{name_of}() takes at most {len(self._fields)} arguments, got {len(args)}")
            for name, value in zip(self._fields, args):
                if name in values:
                    raise TypeError(f"{name_of}() got two values for {name!r}")
                values[name] = value
        put = object.__setattr__
        for name in self._fields:
            if name in values:
                put(self, name, values.pop(name))
            elif name in self._defaults:
                default = self._defaults[name]
                put(self, name, default.make() if isinstance(default, factory) else default)
            else:
                raise TypeError(f"{name_of}() is missing the field {name!r}")
        if values:
            raise TypeError(f"{name_of}() has no field {next(iter(values))!r}; its fields: {', '.join(self._fields)}")

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` to its fields."""
        return type(self)(**{**{name: getattr(self, name) for name in self._fields}, **changes})
