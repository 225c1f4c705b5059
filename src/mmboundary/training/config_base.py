"""One config base for every run configuration (``SFTConfig``, ``RLConfig``, ``DemoConfig``),
TRL-style: a dataclass whose every field has a documented default, loaded from YAML or a mapping
with validation on load.

- ``from_dict(raw, where=..., **overrides)``: a ``preset:`` key applies ``PRESETS[name]`` first,
  then the mapping, then the overrides that are not None; an unknown key is an error naming it
  and the known ones; a key in ``RENAMED`` (an old name) is an error naming its new name; a YAML
  list for a tuple field becomes a tuple; a string for a float field is read as a number
  (``learning_rate: 1e-5`` is a string to PyYAML) or is an error naming the field; the
  dataclass's ``__post_init__`` then validates values;
- ``from_yaml(path, **overrides)``, ``preset(name)``, ``to_dict()`` (tuples as lists, as YAML
  writes them), ``to_yaml(path)`` (atomic write);
- ``field_docs()``: each field's documentation (the string literal after it in the source), which
  the CLI's options (``cli/dataclass_options.py``: one option per field, its help this text) and
  the YAML files' comments read.
Field names follow TRL where TRL has one (``num_train_epochs``, ``per_device_train_batch_size``,
``lora_target_modules``, ``merge_lora``, ``bf16``, ``fp16``).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigBase")


def read_yaml(path: str | Path) -> Any:
    """The YAML document of ``path`` (an empty file is ``{}``)."""
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}


#: annotations of the number fields a YAML string may stand for (PyYAML reads ``1e-5`` as a string:
#: YAML 1.1 wants a dot, ``1.0e-5``)
_FLOAT_TYPES = ("float", "float | None")


def _as_float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None


class ConfigBase:
    """Mixin for the config dataclasses (see the module docstring)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls: type[C], raw: dict[str, Any], where: str = "config",
                  **overrides: Any) -> C:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got "
                             f"{type(raw).__name__}")
        raw = dict(raw)
        preset = raw.pop("preset", None)
        if preset is not None and preset not in cls.PRESETS:
            raise ValueError(f"{where}: unknown preset {preset!r}; expected {sorted(cls.PRESETS)}")
        values = dict(cls.PRESETS[preset]) if preset is not None else {}
        values.update(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        renamed = {k: cls.RENAMED[k] for k in values if k in cls.RENAMED}
        if renamed:
            hint = ", ".join(f"{old} -> {new}" for old, new in sorted(renamed.items()))
            raise ValueError(f"{where}: renamed {cls.__name__} field(s) ({hint}): TRL's names")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown {cls.__name__} field(s) {unknown}; known: "
                             f"{sorted(known)}")
        for name, value in values.items():  # YAML has lists only
            if isinstance(value, list) and isinstance(known[name].default, tuple):
                values[name] = tuple(value)
            elif isinstance(value, str) and str(known[name].type) in _FLOAT_TYPES:
                values[name] = _as_float(value, f"{where}: {cls.__name__}.{name}")
        return cls(**values)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, **overrides: Any) -> C:
        return cls.from_dict(read_yaml(path), where=str(path), **overrides)

    @classmethod
    def preset(cls: type[C], name: str) -> C:
        """The config of preset ``name`` (its overrides over the dataclass defaults)."""
        return cls.from_dict({"preset": name}, where=f"preset {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def to_yaml(self, path: str | Path) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)
        return path

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Each field's documentation (the string literal after it in the class source)."""
        import ast
        import inspect
        import textwrap

        source = textwrap.dedent(inspect.getsource(cls))  # a class nested in a function too
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        docs: dict[str, str] = {}
        for node, nxt in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(
                    getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore
        return docs
