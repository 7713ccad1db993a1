"""YAML in, validated attrs classes out, with errors that name the file, line and key.

One strict cattrs converter is shared by the sweep and inventory models: it never
coerces silently (``"4"`` is not an int, ``false`` is not a string), forbids
unknown keys, and every failure is mapped back to the YAML line it came from.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, NewType

import attrs
import cattrs
import cattrs.gen
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ..errors import ConfigError

# A scalar a user may write where dssh turns it into text: env values, parameter values.
Scalar = NewType("Scalar", object)
# Text where a bare number is also fine (env values): converted to str.
EnvText = NewType("EnvText", str)
# A duration: ``2h``, ``1h30m``, ``02:00:00`` or a number of seconds.
Duration = NewType("Duration", object)

_SCALARS = (str, int, float, bool)


class FieldValueError(ValueError):
    """Raised by attrs validators so the error is pinned to the field, not its class."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _type_name(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    return {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false",
            "list": "a list", "dict": "a mapping"}.get(type(v).__name__, type(v).__name__)


def _scalar_hook(target: type, accepted: tuple[type, ...], what: str):
    def hook(v: Any, _t: Any) -> Any:
        if type(v) not in accepted:  # type(): bool is an int subclass
            hint = ""
            if target is str and isinstance(v, bool):
                hint = " (YAML reads yes/no/on/off/true/false as booleans: quote it)"
            elif target is str and v is not None:
                hint = " (quote it)"
            raise TypeError(f"expected {what}, got {_type_name(v)}{hint}")
        return target(v)

    return hook


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for t, ok, what in ((int, (int,), "a whole number"), (float, (int, float), "a number"),
                        (bool, (bool,), "true or false"), (str, (str,), "text")):
        conv.register_structure_hook(t, _scalar_hook(t, ok, what))

    def scalar(v: Any, _t: Any) -> Any:
        if type(v) not in _SCALARS:
            raise TypeError(f"expected a single value (text or number), got {_type_name(v)}")
        return v

    conv.register_structure_hook(Scalar, scalar)

    def env_text(v: Any, _t: Any) -> str:
        if type(v) not in (str, int, float):
            raise TypeError(f"expected text or a number, got {_type_name(v)} (quote it)")
        return str(v)

    conv.register_structure_hook(EnvText, env_text)

    def duration(v: Any, _t: Any) -> Any:
        if type(v) not in (str, int, float):
            raise TypeError(f"expected a duration like 45m, 2h or 1h30m, got {_type_name(v)}")
        return v

    conv.register_structure_hook(Duration, duration)

    def guarded(make_inner, container, what):
        def factory(t):
            inner = make_inner(t)

            def hook(v, t_):
                if not isinstance(v, container):
                    raise TypeError(f"expected {what}, got {_type_name(v)}")
                return inner(v, t_)

            return hook

        return factory

    conv.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is list,
        guarded(lambda t: cattrs.cols.list_structure_factory(t, conv), list, "a list"))
    conv.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is dict,
        guarded(lambda t: cattrs.cols.mapping_structure_factory(t, conv), dict, "a mapping"))

    def class_factory(t):
        overrides = {}
        for a in attrs.fields(t):
            if a.metadata.get("yaml_key"):
                overrides[a.name] = cattrs.gen.override(rename=a.metadata["yaml_key"])
        return cattrs.gen.make_dict_structure_fn(
            t, conv, _cattrs_forbid_extra_keys=True, **overrides)

    conv.register_structure_hook_factory(attrs.has, guarded(class_factory, dict, "a mapping"))
    return conv


_CONVERTER: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    return _CONVERTER


def _iter_errors(exc: BaseException, path: tuple = ()) -> Iterator[tuple[tuple, BaseException]]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            key = note.name if isinstance(exc, ClassValidationError) else note.index
            if isinstance(exc, ClassValidationError):
                key = getattr(note, "name", key)
            yield from _iter_errors(sub, path + (key,))
        for sub in without:
            yield from _iter_errors(sub, path)
    elif isinstance(exc, FieldValueError):
        yield path + (exc.field,), exc
    else:
        yield path, exc


class Source:
    """A parsed YAML document that remembers where every value came from."""

    def __init__(self, filename: str, root: yaml.Node | None) -> None:
        self.filename = filename
        self.root = root

    def node(self, path: tuple | list) -> yaml.Node | None:
        """Deepest node along ``path`` (the parent when a key is missing)."""
        node = self.root
        for key in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(key)), node)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                    and 0 <= key < len(node.value):
                node = node.value[key]
        return node

    def key_node(self, path: tuple | list, key: str) -> yaml.Node | None:
        node = self.node(path)
        if isinstance(node, yaml.MappingNode):
            return next((k for k, _ in node.value if k.value == key), node)
        return node

    def line(self, path: tuple | list = ()) -> int:
        node = self.node(path)
        return node.start_mark.line + 1 if node is not None else 1

    def where(self, path: tuple | list = ()) -> str:
        return f"{self.filename}:{self.line(path)}"


def dotted(path: tuple | list) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else f".{k}"
    return out.lstrip(".") or "(top level)"


def _check_duplicate_keys(node: yaml.Node | None, filename: str, path: tuple = ()) -> list[str]:
    msgs: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                msgs.append(f"{filename}:{k.start_mark.line + 1}: key {dotted(path + (key,))} "
                            f"appears twice (first on line {seen[key]}): keep one of them")
            else:
                seen[key] = k.start_mark.line + 1
            msgs.extend(_check_duplicate_keys(v, filename, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            msgs.extend(_check_duplicate_keys(v, filename, path + (i,)))
    return msgs


def parse_yaml(text: str, filename: str) -> tuple[Any, Source]:
    """Parse one YAML document; syntax errors become a ConfigError with line and column."""
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark
        where = f"{filename}:{m.line + 1}:{m.column + 1}" if m else filename
        problem = e.problem or str(e)
        ctx = f" ({e.context})" if e.context else ""
        raise ConfigError([f"{where}: YAML syntax error: {problem}{ctx}; "
                           "check indentation, colons and quotes on that line"],
                          path=filename, line=m.line + 1 if m else None) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{filename}: YAML error: {e}"], path=filename) from None
    finally:
        loader.dispose()
    dups = _check_duplicate_keys(root, filename)
    if dups:
        raise ConfigError(dups, path=filename)
    return data, Source(filename, root)


def structure(data: Any, cls: type, source: Source, what: str) -> Any:
    """Turn plain data into ``cls``; every failure names file, line and key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source.filename}:{source.line()}: expected {what} to be a mapping "
                           f"(key: value lines), got {_type_name(data)}"], path=source.filename)
    try:
        return converter().structure(data, cls)
    except (ClassValidationError, IterableValidationError, TypeError, ValueError) as exc:
        msgs: list[tuple[int, str]] = []
        for path, leaf in _iter_errors(exc):
            if isinstance(leaf, ForbiddenExtraKeysError):
                for extra in sorted(leaf.extra_fields):
                    line = source.key_node(path, extra)
                    ln = line.start_mark.line + 1 if line is not None else 1
                    known = _known_keys(cls, path)
                    hint = f"; known keys: {', '.join(known)}" if known else ""
                    close = _closest(extra, known)
                    if close:
                        hint = f"; did you mean {close!r}?" + hint
                    msgs.append((ln, f"{source.filename}:{ln}: unknown key {extra!r} "
                                     f"in {dotted(path)}{hint}"))
            elif isinstance(leaf, KeyError):
                ln = source.line(path)
                msgs.append((ln, f"{source.filename}:{ln}: missing required key "
                                 f"{dotted(path)}: add it"))
            else:
                ln = source.line(path)
                why = str(leaf) if isinstance(leaf, TypeError | ValueError) else repr(leaf)
                msgs.append((ln, f"{source.filename}:{ln}: {dotted(path)}: {why}"))
        msgs.sort(key=lambda m: m[0])
        line = msgs[0][0] if msgs else None
        raise ConfigError([m for _, m in msgs] or [f"{source.filename}: {exc}"],
                          path=source.filename, line=line) from None


def _unwrap_optional(t: Any) -> Any:
    args = typing.get_args(t)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return t


def _known_keys(cls: type, path: tuple) -> list[str]:
    """The keys allowed at ``path`` below ``cls``, for 'did you mean' hints."""
    t: Any = cls
    for key in path:
        t = _unwrap_optional(t)
        if attrs.has(t):
            f = next((a for a in attrs.fields(t)
                      if a.metadata.get("yaml_key", a.name) == key), None)
            if f is None:
                return []
            t = f.type
            continue
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin is list and args:
            t = args[0]
        elif origin is dict and len(args) == 2:
            t = args[1]
        else:
            return []
    t = _unwrap_optional(t)
    return [a.metadata.get("yaml_key", a.name) for a in attrs.fields(t)] if attrs.has(t) else []


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return m[0] if m else None
