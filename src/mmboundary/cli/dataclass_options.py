"""Command-line options read from the library, so each default is stated once, where it lives.

- ``with_field_options(cls)``: a decorator that gives a Typer command one option per field of the
  config dataclass ``cls`` (a ``ConfigBase``: ``DemoConfig``, ``SFTConfig``, ``RLConfig``):
  ``--n-train`` for ``n_train``, its help the field's documentation (``cls.field_docs()``) and the
  values of the dataclass and its presets; its default None = "from the preset / config file".
  The command receives the options given on the command line as ``fields`` (field -> value),
  which ``load_config`` applies over the YAML over the preset. Simple types only: int, float, str,
  bool (``--x/--no-x``), ``Literal`` choices, ``X | None``, and tuples / lists of int, float or
  str (comma-separated); a field of another type (a dict) is left to the YAML.
- ``library_default(obj, name)``: the default of a dataclass field or of a function parameter,
  for options that mirror a library argument (``mmboundary estimate --batch-size``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")
SIMPLE = (int, float, str, bool)


@dataclass(frozen=True)
class FieldOption:
    """One generated option: the field, its command-line type, flags and help."""

    name: str
    kind: Any
    """``int``, ``float``, ``str``, ``bool`` or a ``Literal[...]`` of strings."""
    flags: tuple[str, ...]
    help: str
    sequence: type | None = None
    """``tuple`` or ``list``: the option is a comma-separated string turned into one."""
    item: type = str
    """The type of a sequence's items."""

    def parse(self, value: Any) -> Any:
        if self.sequence is None:
            return value
        try:
            return self.sequence(self.item(part.strip()) for part in str(value).split(",")
                                 if part.strip())
        except ValueError as err:
            raise typer.BadParameter(f"{self.flags[0]} {value!r}: expected comma-separated "
                                     f"{self.item.__name__} values") from err


def library_default(obj: Any, name: str) -> Any:
    """The default of field ``name`` of dataclass ``obj`` or of parameter ``name`` of function
    ``obj``; a ``KeyError`` if it has none (a CLI option must not invent one)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
        raise KeyError(f"{obj.__name__}.{name} has no default")
    param = inspect.signature(obj).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise KeyError(f"{getattr(obj, '__name__', obj)}({name}=...) has no default")
    return param.default


def _cli_type(annotation: Any) -> tuple[Any, type | None, type] | None:
    """(command-line type, sequence type, item type) of a field annotation, or None if the
    field is not of a simple type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(args[0]) if len(args) == 1 else None
    if annotation in SIMPLE:
        return annotation, None, annotation
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(annotation)):
        return annotation, None, str
    args = typing.get_args(annotation)
    if origin in (tuple, list) and args and args[0] in (int, float, str) and (
            args[1:] in ((), (...,))):
        return str, origin, args[0]
    return None


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "''"
    return str(value)


def _values_note(cls: Any, name: str) -> str:
    """``(default: 480; quick: 48; large: 2000)``: the dataclass default, then each preset that
    changes it."""
    default = library_default(cls, name)
    parts = [f"default: {_show(default)}"]
    for preset, values in getattr(cls, "PRESETS", {}).items():
        if name in values and values[name] != default:
            parts.append(f"{preset}: {_show(values[name])}")
    return f"({'; '.join(parts)})"


def _escape(text: str) -> str:
    """Rich markup off for ``[word`` (Typer renders help as rich markup)."""
    return re.sub(r"(\[[a-z#/@])", r"\\\1", text)


def field_options(cls: Any, flags: Mapping[str, Sequence[str]] | None = None,
                  exclude: Sequence[str] = ()) -> list[FieldOption]:
    """One ``FieldOption`` per field of ``cls`` of a simple type, in field order. ``flags``
    replaces a field's option names (``{"out_dir": ("--out", "--out-dir")}``)."""
    flags = flags or {}
    hints = typing.get_type_hints(cls)
    docs = cls.field_docs()
    out = []
    for f in dataclasses.fields(cls):
        cli = _cli_type(hints[f.name])
        if f.name in exclude or cli is None:
            continue
        kind, sequence, item = cli
        names = tuple(flags.get(f.name, ("--" + f.name.replace("_", "-"),)))
        if kind is bool:
            names = tuple(f"{n}/--no-{n[2:]}" for n in names)
        doc = docs.get(f.name, "")
        if sequence is not None:
            doc += " Comma-separated."
        help_text = f"{doc} {_values_note(cls, f.name)}".strip()
        out.append(FieldOption(f.name, kind, names, help_text, sequence, item))
    return out


def with_field_options(cls: Any, flags: Mapping[str, Sequence[str]] | None = None,
                       exclude: Sequence[str] = (), panel: str | None = None
                       ) -> Callable[[F], F]:
    """Decorate a Typer command taking ``fields: dict[str, Any]``: the command gains one option
    per simple field of ``cls`` (``field_options``) and receives those given on the command line
    (parsed; the ones not given are left out) as ``fields``."""
    options = field_options(cls, flags, exclude)

    def decorate(func: F) -> F:
        hints = typing.get_type_hints(func)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(func).parameters.values() if p.name != "fields"]
        clash = {p.name for p in own} & {o.name for o in options}
        if clash:
            raise TypeError(f"{func.__name__}: options {sorted(clash)} are {cls.__name__} fields; "
                            "exclude them or drop the hand-written ones")
        generated = [inspect.Parameter(
            o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.kind | None,
            default=typer.Option(None, *o.flags, help=_escape(o.help), show_default=False,
                                 rich_help_panel=panel)) for o in options]

        def command(**kwargs: Any) -> Any:
            given = {}
            for o in options:
                value = kwargs.pop(o.name, None)
                if value is not None:
                    given[o.name] = o.parse(value)
            return func(**kwargs, fields=given)

        command.__signature__ = inspect.Signature(own + generated)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + generated}
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(command, attr, getattr(func, attr))
        return command  # type: ignore[return-value]

    return decorate


def load_config(cls: type[C], config: Path | None, preset: str | None,
                fields: Mapping[str, Any]) -> C:
    """``cls`` from the preset, then the YAML file ``config`` (its own ``preset:`` key if any),
    then the command-line ``fields``; a bad key or value is a ``typer.BadParameter`` (exit 2)
    naming it."""
    from mmboundary.training.config_base import read_yaml

    raw: Any = read_yaml(config) if config is not None else {}
    if preset is not None and isinstance(raw, dict):
        if raw.get("preset", preset) != preset:
            raise typer.BadParameter(f"--preset {preset} but {config} names preset "
                                     f"{raw['preset']!r}; give one")
        raw = {**raw, "preset": preset}
    try:
        return cls.from_dict(raw, where=str(config or "options"), **fields)  # type: ignore
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
