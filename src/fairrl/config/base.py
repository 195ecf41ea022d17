"""What every fairrl config shares: the strict base model, YAML loading, ``--set`` overrides, messages
that name the problem and the fix (did-you-mean for unknown keys), renamed keys, and the one reader
of a run folder's saved config.

Renamed keys: a schema lists ``old.dotted.key -> new.dotted.key`` in its ``renamed_keys`` class
variable. A file or override that still uses an old spelling keeps working for one release: the value
moves to the new key and a :class:`ConfigDeprecationWarning` names both; giving both spellings is an
error.
"""

from __future__ import annotations

import difflib
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from fairrl.errors import ConfigError


class ConfigDeprecationWarning(FutureWarning):
    """A config key spelled the old way; it still works in this release."""


class Strict(BaseModel):
    """Unknown keys are errors; every field carries its docstring; assignments are validated; no float
    field takes NaN or infinity (``.nan`` / ``.inf`` in YAML would silently poison a run)."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False
    )
    renamed_keys: ClassVar[dict[str, str]] = {}
    """``old.dotted.key`` -> ``new.dotted.key`` accepted with a deprecation message (one release)."""
    config_kind: ClassVar[str] = "train"
    """``fairrl config --kind`` value that prints this schema's defaults."""

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        """``true`` / ``false`` for a number field is a mistake (pydantic would read them as 1 / 0): pass
        them on as a stand-in that the number check refuses at the field's own location."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None:
                kinds = _scalar_types(field.annotation)
                if kinds & {int, float} and bool not in kinds:
                    out[name] = _YamlBool(value)
        return out


class _YamlBool:
    """A boolean given for a number field; shown as YAML writes it (``got true``) in the error."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower()


def _scalar_types(annotation: Any) -> set[Any]:
    """The plain types a field annotation admits at its top level (through Optional / unions / Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(annotation) for t in _scalar_types(arg)}
    return {annotation}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple) or origin is not None:
        for arg in typing.get_args(annotation):
            out.extend(_models_in(arg))
    return out


def _tag(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind")
    args = typing.get_args(kind.annotation) if kind is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def valid_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the mapping that holds ``loc[-1]`` (loc as pydantic reports it)."""
    models = [schema]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        by_tag = [m for m in models if _tag(m) == part]
        if by_tag:  # a discriminated union reports the tag in its location
            models = by_tag
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            field = m.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        models = nxt
    return sorted({k for m in models for k in m.model_fields})


def all_keys(schema: type[BaseModel], prefix: str = "", depth: int = 4) -> list[str]:
    """Every dotted key of ``schema`` (nested models included, a few levels deep)."""
    out = []
    for name, field in schema.model_fields.items():
        out.append(prefix + name)
        if depth > 1:
            for sub in _models_in(field.annotation):
                out.extend(all_keys(sub, f"{prefix}{name}.", depth - 1))
    return sorted(set(out))


def _suggest(schema: type[BaseModel], loc: tuple[Any, ...], keys: list[str]) -> str:
    word = str(loc[-1])
    close = difflib.get_close_matches(word, keys, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? "
    moved = getattr(schema, "renamed_keys", {}).get(".".join(str(p) for p in loc))
    if moved:
        return f"it is now {moved!r}; "
    elsewhere = [
        k for k in all_keys(schema) if difflib.get_close_matches(word, [k.rsplit(".", 1)[-1]], cutoff=0.8)
    ]
    return f"did you mean {elsewhere[0]!r} (another section)? " if elsewhere else ""


def _format_validation_error(err: ValidationError, schema: type[BaseModel]) -> str:
    lines = []
    kind = getattr(schema, "config_kind", "train")
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            keys = valid_keys(schema, tuple(e["loc"]))
            lines.append(
                f"unknown config key {loc!r}; {_suggest(schema, tuple(e['loc']), keys)}valid keys there: "
                f"{', '.join(keys)} (every key with its default: `fairrl config --kind {kind}`)"
            )
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"config field {loc!r}: {msg}{shown}")
    return "; ".join(lines)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping in a YAML text gives one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` keys may be overridden
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base loader reports it
                    continue
                if first is not None:
                    where = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise DuplicateKeyError(f"key {key!r} is given twice in one mapping ({where}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that also refuses duplicate mapping keys (see :class:`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = safe_load_unique(raw) if raw != "" else ""
    except DuplicateKeyError as err:
        raise ConfigError(f"override {item!r}: {err}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _child(node: Any, part: str, item: str) -> Any:
    """The list element ``part`` names: an index, or the element whose ``name`` (else ``kind``) is ``part``."""
    if part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
        return node[int(part)]
    named = [x for x in node if isinstance(x, dict) and (x.get("name") or x.get("kind")) == part]
    if len(named) != 1:
        raise ConfigError(f"override {item!r}: no single list element {part!r} (an index, or a name / kind "
                          "of exactly one element)")  # fmt: skip
    return named[0]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sub-dicts), as verl/Hydra-style ``--set a.b=1``.

    A part of the key that meets a list picks an element by index or by its ``name`` / ``kind``:
    ``--set data.sources.bbq.categories=[Age]`` or ``--set data.sources.0.weight=3``.
    """
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):
                node = _child(node, part, item)
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} sits under a value, not a section of keys")
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
        if isinstance(node, list):
            node[node.index(_child(node, path[-1], item))] = value
        else:
            node[path[-1]] = value
    return data


_MISSING = object()


def _pop(data: dict[str, Any], path: list[str]) -> Any:
    node = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return _MISSING
    return node.pop(path[-1], _MISSING) if isinstance(node, dict) else _MISSING


def _has(data: dict[str, Any], path: list[str]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def apply_renames(data: dict[str, Any], renamed: dict[str, str]) -> list[str]:
    """Move old-spelled keys to their new place; returns one deprecation message per key moved."""
    notes = []
    for old, new in renamed.items():
        value = _pop(data, old.split("."))
        if value is _MISSING:
            continue
        if _has(data, new.split(".")):
            raise ConfigError(f"config sets both {old!r} (old spelling) and {new!r}; keep only {new!r}")
        node = data
        *parents, last = new.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        notes.append(f"config key {old!r} is deprecated and will be removed in the next release; use {new!r}")
    return notes


def packaged_config_names() -> list[str]:
    """Names of the configs shipped inside the package (``fairrl/configs/<name>.yaml``)."""
    from importlib import resources

    folder = resources.files("fairrl") / "configs"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def packaged_config(name: str) -> Path | None:
    """The packaged config called ``name`` (e.g. ``biasgrpo``), unless ``name`` is an existing path."""
    from importlib import resources

    if Path(name).exists() or name not in packaged_config_names():
        return None
    return Path(str(resources.files("fairrl") / "configs" / f"{name}.yaml"))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line, column) and what, without PyYAML's source excerpt."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({err.context})" if err.context else ""
        return f"{where}{err.problem}{context}"
    return " ".join(str(err).split())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file (or packaged config name) as a mapping; a clear ConfigError otherwise."""
    p = packaged_config(str(path)) or Path(path)
    if not p.exists():
        raise ConfigError(
            f"config file {str(p)!r} does not exist; give a YAML file or a packaged config name "
            f"({', '.join(packaged_config_names())})"
        )
    if p.is_dir():
        raise ConfigError(
            f"config file {str(p)!r} is a folder; give a YAML file (e.g. {str(p / 'config.yaml')!r})"
        )
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 YAML"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(p)!r} ({err.strerror or err})") from None
    if "\x00" in text:
        raise ConfigError(f"config file {str(p)!r} holds NUL bytes, so it is not a YAML text file")
    try:
        loaded = safe_load_unique(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"config file {str(p)!r}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} nests too deeply to be a config") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, got {type(loaded).__name__}")
    return loaded or {}


def validate(data: dict[str, Any], schema: type[BaseModel]) -> Any:
    """``data`` (renamed keys moved, with a warning each) validated against ``schema``."""
    for note in apply_renames(data, getattr(schema, "renamed_keys", {})):
        warnings.warn(note, ConfigDeprecationWarning, stacklevel=3)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, schema)) from None


def load_config(path: str | Path | None, overrides: list[str] | None, schema: type[BaseModel]) -> Any:
    """Read YAML (a file, or a packaged config name such as ``biasgrpo``; defaults when ``path`` is None),
    apply overrides and validate against ``schema``."""
    data = read_yaml(path) if path is not None else {}
    return validate(apply_overrides(data, overrides or []), schema)


def run_config(run_dir: str | Path, overrides: list[str] | None, schema: type[BaseModel]) -> Any:
    """The config a run folder was started with (``config.yaml``), with overrides (e.g. more max_steps)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no config.yaml there; is it a fairrl run folder?")
    return load_config(path, overrides, schema=schema)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (printed at start, saved with the run)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
