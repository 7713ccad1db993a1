"""YAML in, validated attrs classes out, with errors that name the file, line and key.

One strict cattrs converter is shared by the sweep and inventory models: it never
coerces silently (``"4"`` is not an int, ``false`` is not a string), forbids
unknown keys, and every failure is mapped back to the YAML line it came from.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from collections.abc import Iterator
from typing import Any, NewType

import attrs
import cattrs
import yaml
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ..errors import ConfigError

# A scalar a user may write where dssh turns it into text: env values, parameter values.
Scalar = NewType("Scalar", object)
# Text where a bare number is also fine (env values): converted to str.
EnvText = NewType("EnvText", str)
# A duration: ``2h``, ``1h30m``, ``02:00:00`` or a number of seconds.
Duration = NewType("Duration", object)

_SCALARS = (str, int, float, bool)
# Names used in paths (sweeps, namespaces, hosts, capabilities), and environment names.
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class FieldValueError(ValueError):
    """Raised by attrs validators so the error is pinned to the field, not its class."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def yaml_key(a: attrs.Attribute) -> str:
    """The key a field has in the YAML file (``as_`` is written ``as``)."""
    return a.metadata.get("yaml_key", a.name)


class WrongType(TypeError):
    """A value of the wrong kind; ``structure`` turns it into a message with a fix."""

    def __init__(self, kind: str, what: str, value: Any, target: Any = None) -> None:
        super().__init__(f"expected {what}, got {_type_name(value)}")
        self.kind = kind  # int, float, bool, str, list, mapping, scalar, envtext, duration
        self.what = what
        self.value = value
        self.target = target  # the attrs class, for a mapping
        self.is_key = False  # a mapping's key (a name) is wrong, not a value


def _type_name(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    return {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false",
            "list": "a list", "dict": "a mapping"}.get(type(v).__name__, type(v).__name__)


def _scalar_hook(target: type, accepted: tuple[type, ...], what: str):
    def hook(v: Any, _t: Any) -> Any:
        if type(v) not in accepted:  # type(): bool is an int subclass
            raise WrongType(target.__name__, what, v)
        return target(v)

    return hook


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for t, ok, what in ((int, (int,), "a whole number"), (float, (int, float), "a number"),
                        (bool, (bool,), "true or false"), (str, (str,), "text")):
        conv.register_structure_hook(t, _scalar_hook(t, ok, what))

    def scalar(v: Any, _t: Any) -> Any:
        if type(v) not in _SCALARS:
            raise WrongType("scalar", "a single value (text or number)", v)
        return v

    conv.register_structure_hook(Scalar, scalar)

    def env_text(v: Any, _t: Any) -> str:
        if type(v) not in (str, int, float):
            raise WrongType("envtext", "text or a number", v)
        return str(v)

    conv.register_structure_hook(EnvText, env_text)

    def duration(v: Any, _t: Any) -> Any:
        if type(v) not in (str, int, float):
            raise WrongType("duration", "a duration like 45m, 2h or 1h30m", v)
        return v

    conv.register_structure_hook(Duration, duration)

    def guarded(make_inner, container, kind, what):
        def factory(t):
            inner = make_inner(t)

            def hook(v, t_):
                if not isinstance(v, container):
                    raise WrongType(kind, what, v)
                return inner(v, t_)

            return hook

        return factory

    conv.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is list,
        guarded(lambda t: cattrs.cols.list_structure_factory(t, conv), list, "list", "a list"))
    conv.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is dict,
        guarded(lambda t: cattrs.cols.mapping_structure_factory(t, conv), dict, "mapping",
                "a mapping (key: value lines)"))
    conv.register_structure_hook_factory(attrs.has, lambda t: _class_hook(t, conv))
    return conv


def _class_hook(cls: type, conv: cattrs.Converter):
    """Structure an attrs class field by field, running each field's validator right after it.

    cattrs' generated functions run attrs validators only once every field has structured,
    so a file with a wrong type *and* a bad value would report only the first; here every
    field reports its own problem, and unknown and missing keys are reported with them.
    """
    attrs.resolve_types(cls)
    fields = {yaml_key(a): a for a in attrs.fields(cls)
              if a.init and not a.metadata.get("internal")}

    def hook(v: Any, _t: Any) -> Any:
        if not isinstance(v, dict):
            raise WrongType("mapping", "a mapping (key: value lines)", v, cls)
        errors: list[Exception] = []
        extra = {str(k) for k in v if k not in fields}
        if extra:
            errors.append(ForbiddenExtraKeysError(None, cls, extra))
        kwargs: dict[str, Any] = {}
        for key, a in fields.items():
            if key not in v:
                if a.default is attrs.NOTHING:
                    e: Exception = KeyError(key)
                    e.__notes__ = [AttributeValidationNote(f"Required field {key}", key, a.type)]
                    errors.append(e)
                continue
            try:
                value = conv.structure(v[key], a.type)
                if a.validator is not None:
                    try:
                        a.validator(None, a, value)
                    except FieldValueError as fe:
                        raise ValueError(str(fe)) from None
            except Exception as e:  # every failure is reported with its key
                e.__notes__ = [*getattr(e, "__notes__", []),
                               AttributeValidationNote(f"Structuring {key}", key, a.type)]
                errors.append(e)
                continue
            kwargs[a.alias] = value
        if errors:
            raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
        return cls(**kwargs)

    return hook


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
            if isinstance(sub, WrongType) and str(note).startswith("Structuring mapping key"):
                sub.is_key = True  # the key itself is wrong, not its value
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

    def _walk(self, path: tuple | list, exact: bool) -> yaml.Node | None:
        node = self.root
        for key in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if _same_key(k, key)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                    and 0 <= key < len(node.value):
                child = node.value[key]
            if child is None:
                if exact:
                    return None
                continue  # stay at the deepest node found
            node = child
        return node

    def node(self, path: tuple | list) -> yaml.Node | None:
        """Deepest node along ``path`` (the parent when a key is missing)."""
        return self._walk(path, exact=False)

    def exact(self, path: tuple | list) -> yaml.Node | None:
        """The node at ``path``, or None when some key along it is missing."""
        return self._walk(path, exact=True)

    def key_node(self, path: tuple | list, key: str) -> yaml.Node | None:
        node = self.node(path)
        if isinstance(node, yaml.MappingNode):
            return next((k for k, _ in node.value if _same_key(k, key)), node)
        return node

    def line(self, path: tuple | list = ()) -> int:
        """The line of the key at ``path`` (of its value for a list item; of the deepest
        parent that exists when it is missing)."""
        if path:
            parent = self.exact(path[:-1])
            if isinstance(parent, yaml.MappingNode):
                k = next((k for k, _ in parent.value if _same_key(k, path[-1])), None)
                if k is not None:  # a block value starts on the line after its key
                    return k.start_mark.line + 1
        node = self.node(path)
        return node.start_mark.line + 1 if node is not None else 1

    def where(self, path: tuple | list = ()) -> str:
        return f"{self.filename}:{self.line(path)}"

    def raw(self, path: tuple | list) -> str | None:
        """The value at ``path`` as written in the file, when it is a single scalar."""
        node = self.exact(path)
        return node.value if isinstance(node, yaml.ScalarNode) else None

    def raw_key(self, path: tuple | list) -> str | None:
        """The last key of ``path`` as written in the file."""
        if not path:
            return None
        node = self.key_node(path[:-1], path[-1])
        return node.value if isinstance(node, yaml.ScalarNode) else None

    def items(self, path: tuple | list) -> dict[int, yaml.Node]:
        """The nodes right below ``path``, by the list index that reaches each: for every
        ``i``, ``items(path).get(i)`` is ``exact(path + (i,))``, looked up once for the
        whole node instead of once per index (a 100000-value sweep stays cheap). A mapping
        (a range, a linspace) gives the children whose key reads as a whole number, which
        is none of its values: those were computed, not written."""
        node = self.exact(path)
        if isinstance(node, yaml.SequenceNode):
            return dict(enumerate(node.value))
        out: dict[int, yaml.Node] = {}
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                for i in _int_keys(k):
                    out.setdefault(i, v)  # the first key that matches, as _walk finds it
        return out


def _same_key(knode: yaml.Node, key: Any) -> bool:
    if not isinstance(knode, yaml.ScalarNode):
        return False
    if knode.value == str(key):
        return True
    if isinstance(key, str):
        return False
    # a key YAML read as a number or a boolean: compare what it reads as
    ok, value = _plain_value(knode.value) if not knode.style else (True, knode.value)
    return ok and type(value) is type(key) and value == key


@functools.lru_cache(maxsize=4096)
def _plain_value(text: str) -> tuple[bool, Any]:
    """What YAML reads an unquoted scalar's text as, and False when it cannot read it.
    Parsed once per distinct text: a path lookup may compare the same keys many times."""
    try:
        return True, yaml.safe_load(text)
    except yaml.YAMLError:
        return False, None


def _int_keys(knode: yaml.Node) -> list[int]:
    """The whole numbers ``i`` for which ``_same_key(knode, i)`` holds (at most two)."""
    if not isinstance(knode, yaml.ScalarNode):
        return []
    out = []
    try:
        if str(int(knode.value)) == knode.value:  # written as str(i) itself
            out.append(int(knode.value))
    except ValueError:
        pass
    if not knode.style:
        ok, value = _plain_value(knode.value)
        if ok and type(value) is int and value not in out:
            out.append(value)
    return out


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")


def dotted(path: tuple | list) -> str:
    out = ""
    for k in path:
        if isinstance(k, int) and not isinstance(k, bool):
            out += f"[{k}]"
        elif isinstance(k, str) and _PLAIN_KEY.match(k):
            out += f".{k}"
        else:
            out += f"[{str(k)!r}]"
    return out.lstrip(".") or "(top level)"


def key_line(text: str, path: tuple | list) -> int | None:
    """The line (1-based) of the value at ``path`` in a YAML text, None if absent or unparsable.

    For messages about a file that was already validated (e.g. ``requires`` when no host has
    the capabilities): ``key_line(Path(f).read_text(), ("requires",))``.
    """
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return None
    node = Source("", root).exact(path)
    return node.start_mark.line + 1 if node is not None else None


class _Cyclic(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _check_duplicate_keys(node: yaml.Node | None, filename: str, path: tuple = (),
                          seen_nodes: set[int] | None = None,
                          open_nodes: set[int] | None = None) -> list[str]:
    """Keys written twice in one mapping. Each node is looked at once, however many aliases
    point at it (a 'billion laughs' file stays cheap); an alias inside its own anchor's
    node raises _Cyclic."""
    msgs: list[str] = []
    seen_nodes = set() if seen_nodes is None else seen_nodes
    open_nodes = set() if open_nodes is None else open_nodes
    if id(node) in open_nodes:
        raise _Cyclic(node)
    if id(node) in seen_nodes or not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return msgs
    seen_nodes.add(id(node))
    open_nodes.add(id(node))
    try:
        msgs = _duplicates_below(node, filename, path, seen_nodes, open_nodes)
    finally:
        open_nodes.discard(id(node))
    return msgs


def _duplicates_below(node: yaml.Node, filename: str, path: tuple, seen_nodes: set[int],
                      open_nodes: set[int]) -> list[str]:
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
            msgs.extend(_check_duplicate_keys(v, filename, path + (key,), seen_nodes,
                                              open_nodes))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            msgs.extend(_check_duplicate_keys(v, filename, path + (i,), seen_nodes,
                                              open_nodes))
    return msgs


# -- YAML syntax errors ------------------------------------------------------------------------
_KEY_LINE = re.compile(r"^([ \t]*)(?:-[ \t]+)*([^\s#'\"{}\[\],:-][^:#]*?|'[^']*'|\"[^\"]*\")"
                       r"[ \t]*:(?:[ \t]|$)")


def _indent(line: str) -> int:
    line = line.expandtabs(8)  # a tab is wrong, but it probably meant "indented more"
    return len(line) - len(line.lstrip(" -"))


def _guess_key(lines: list[str], idx: int) -> str | None:
    """The dotted key a line of a broken YAML file belongs to, guessed from indentation."""
    if not 0 <= idx < len(lines):
        return None
    m = _KEY_LINE.match(lines[idx])
    if not m and not lines[idx].lstrip().startswith("- "):
        return None
    keys = [m.group(2).strip("'\"")] if m else []
    indent = _indent(lines[idx])
    for j in range(idx - 1, -1, -1):
        if indent == 0:
            break
        line = lines[j]
        if not line.strip() or line.lstrip().startswith("#") or _indent(line) >= indent:
            continue
        pm = _KEY_LINE.match(line)
        if pm is None:
            continue
        rest = line[pm.end():].split(" #")[0].strip()
        indent = _indent(line)
        if rest in ("", "|", ">", "|-", ">-"):  # a key that opens a block
            keys.insert(0, pm.group(2).strip("'\""))
    return ".".join(keys) or None


def _syntax_error(e: yaml.MarkedYAMLError, text: str, filename: str) -> ConfigError:
    lines = text.splitlines()
    m, c = e.problem_mark, e.context_mark
    problem = (e.problem or str(e)).strip()
    context = (e.context or "").strip()
    line = m.line if m else 0
    col = m.column if m else 0
    at = lines[line] if 0 <= line < len(lines) else ""
    opener = None
    if c is not None and ("flow" in context or "quoted" in context) and c.line != line:
        opener = c  # an unclosed bracket or quote: point at where it was opened
    if "tab" in problem or (at[col:col + 1] == "\t") or ("\t" in at[:len(at) - len(at.lstrip())]
                                                        and "indent" in problem + context):
        fix = (f"YAML does not allow tab characters for indentation: replace the tabs on "
               f"line {line + 1} with spaces")
    elif opener is not None and "flow sequence" in context:
        fix = (f"the '[' opened on line {opener.line + 1} is never closed: add the missing ']' "
               "(or quote the value if the '[' is meant literally)")
    elif opener is not None and "flow mapping" in context:
        fix = (f"the '{{' opened on line {opener.line + 1} is never closed: add the missing "
               "'}'; a value that starts with '{' (a template like {build}/solver) must be "
               "quoted")
    elif opener is not None and "quoted" in context:
        fix = (f"the quote opened on line {opener.line + 1} is never closed: add the closing "
               "quote")
    elif "flow" in context:
        fix = ("a value that starts with '{' or '[' is read as a YAML mapping or list: quote it "
               "(e.g. command: \"{build}/solver {x}\"), or close the bracket")
    elif re.match(r"^[ \t]*(?:-[ \t]+)*[^:#]+:[ \t]+[\[{]", at) and not opener:
        fix = ("YAML reads a value that starts with '{' or '[' as a mapping or list: quote the "
               "whole value, e.g. command: \"{build}/solver {x}\"")
    elif "mapping values are not allowed" in problem:
        fix = ("this line is indented differently from the keys around it, or a value "
               "contains ': ': line the key up with its neighbours (spaces only), or quote "
               "the value")
    elif "expected key" in problem or "block end" in problem:
        fix = (f"line {line + 1} is indented differently from the block that starts on line "
               f"{(c.line + 1) if c else line}: line it up with the keys it belongs with")
    elif "'-' indicator" in problem:
        fix = (f"a list ('- ' items) starts on line {(c.line + 1) if c else line}: line "
               f"{line + 1} must be another '- ' item at the same indentation, or be indented "
               "less to end the list")
    elif "alias" in problem:
        fix = "'*' starts a YAML alias: quote the value"
    elif "cannot start any token" in problem:
        fix = ("a value starting with '@', '`' or '%' must be quoted: put the whole value in "
               "double quotes")
    elif "another document" in problem:
        fix = "the file holds more than one YAML document ('---'): keep one"
    else:
        fix = "check the indentation (spaces only), colons and quotes on that line"
    report = opener if opener is not None else m
    rline = report.line if report is not None else line
    key = _guess_key(lines, rline) or _guess_key(lines, line)
    at_key = f" at {key}" if key else ""
    head = f"{filename}:{rline + 1}" + (f":{report.column + 1}" if report is not None else "")
    msgs = [f"{head}: YAML syntax error{at_key}: {problem}"]
    shown = lines[rline] if 0 <= rline < len(lines) else ""
    if shown.strip():
        shown = repr(shown) if "\t" in shown else shown  # make the tabs visible
        msgs.append(f"  {rline + 1} | {shown}")
    msgs.append(f"  {fix}")
    return ConfigError(msgs, path=filename, line=rline + 1, key=key)


MAX_CONFIG_BYTES = 16 << 20


def read_config_file(p: Any, what: str, example: str, missing_hint: str,
                     key: str | None = None) -> str:
    """A sweep file's or inventory's text; every way reading it fails is a ConfigError."""
    import os
    import stat
    from pathlib import Path

    p = Path(p)
    try:
        # Non-blocking: a FIFO given as the file must not wait for a writer; only a
        # regular file is read, and only so much of it (not /dev/zero without end).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{p}: is not a regular file (a pipe, device or socket): "
                                  f"give a YAML {what} (e.g. {example})", path=str(p))
            if st.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{p}: is {st.st_size >> 20} MiB: a {what} is text of a "
                                  f"few KiB (at most {MAX_CONFIG_BYTES >> 20} MiB); generate "
                                  "large parameter lists with ranges or the Python API",
                                  path=str(p))
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
        finally:
            os.close(fd)
        return data.decode("utf-8")
    except FileNotFoundError:
        cwd = "" if p.is_absolute() else f" (relative to {Path.cwd()})"
        raise ConfigError(f"{p}: {what} not found{cwd}: {missing_hint}", path=str(p),
                          key=key) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory: give the {what} inside it "
                          f"(e.g. {example})", path=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: is not a text file: give a YAML {what} "
                          f"(e.g. {example})", path=str(p)) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what} ({e.strerror or e}): check its "
                          "permissions", path=str(p)) from None


def _deep_line(text: str, limit: int = 200) -> int:
    """The line where brackets or indentation first nest past ``limit`` levels (1 if none)."""
    depth = 0
    for n, line in enumerate(text.splitlines(), 1):
        if len(line) - len(line.lstrip(" -")) > limit:
            return n
        for c in line:
            depth += (c in "[{") - (c in "]}")
            if depth > limit:
                return n
    return 1


def parse_yaml(text: str, filename: str) -> tuple[Any, Source]:
    """Parse one YAML document; syntax errors become a ConfigError with line and column."""
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        root = loader.get_single_node()
        try:  # before anything walks the document: an alias must not contain itself
            dups = _check_duplicate_keys(root, filename)
        except _Cyclic as c:
            line = c.node.start_mark.line + 1
            raise ConfigError([f"{filename}:{line}: an alias (*name) refers to the node that "
                               "contains it, which would never end: remove it"],
                              path=filename, line=line) from None
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e, text, filename) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{filename}:1: YAML error: {e}: check the file is YAML text"],
                          path=filename, line=1) from None
    except RecursionError:
        line = _deep_line(text)
        raise ConfigError([f"{filename}:{line}: the file nests lists or mappings too deeply "
                           "to be a sweep file or inventory: check it is the file you meant"],
                          path=filename, line=line) from None
    finally:
        loader.dispose()
    if dups:
        raise ConfigError(dups, path=filename)
    return data, Source(filename, root)


# -- structure errors --------------------------------------------------------------------------
# What to add when a required key is missing, by its path (list indexes written []).
_MISSING_EXAMPLE = {
    "name": "name: my-sweep (letters, digits, '.', '_' and '-')",
    "run": "run: {command: \"python3 solve.py\"} (the command every job runs)",
    "run.command": "command: \"python3 solve.py {x}\" under run: (the command every job runs)",
    "build.command": "command: make under build: (what builds the solver), or remove build:",
    "jobs[].name": "name: special to the job (every explicit job needs a unique name)",
    "run.files[].path": "path: input.cfg (the file to copy)",
    "build.files[].path": "path: build.py (the file to copy)",
    "jobs[].files[].path": "path: special.cfg (the file to copy)",
    "run.container.image": "image: solver.sif",
}
# How to write a mapping-valued key that was given something else.
_MAPPING_EXAMPLE = {
    "params": "params maps each parameter to its values, e.g. params: {re: [100, 400], "
              "mesh: [coarse, fine]}",
    "env": "write NAME: value pairs, e.g. env: {OMP_PROC_BIND: close}",
    "hosts": "list the hosts as name: settings, e.g. hosts: {lab1: {address: 10.0.0.11}}",
    "slurm": "write sbatch options as key: value pairs, e.g. slurm: {partition: cpu}",
}


def _shape(path: tuple) -> str:
    return dotted(tuple("[]" if isinstance(k, int) else k for k in path)).replace(".[]", "[]")


def _leaf(path: tuple) -> str:
    return next((str(k) for k in reversed(path) if not isinstance(k, int)), "value")


def _yaml_quote(raw: str) -> str:
    return '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _type_fix(e: WrongType, path: tuple, source: Source, required: bool) -> str:
    """What to write instead of a value of the wrong kind."""
    v, k = e.value, _leaf(path)
    item = bool(path) and isinstance(path[-1], int) and not isinstance(path[-1], bool)
    lead = "" if item else f"{k}: "  # how the example starts: a list item has no key
    raw = source.raw(path)
    raw = raw if raw is not None else str(v)
    optional = "" if required else ", or remove the line for the default"
    if e.is_key:
        name = source.raw_key(path) or str(path[-1])
        return (f"quote it: {_yaml_quote(name)}: ... (YAML reads numbers, yes/no/on/off and "
                "true/false as something other than text)")
    if v is None:
        if e.kind == "mapping" and e.target is not None and attrs.has(e.target):
            keys = [yaml_key(a) for a in attrs.fields(e.target) if not a.metadata.get("internal")]
            return f"write its keys indented under '{k}:' ({', '.join(keys)}){optional}"
        if e.kind == "list":
            return f"give a list after '{k}:', e.g. {k}: [1, 2]{optional}"
        return f"give a value after '{k}:'{optional}"
    if e.kind in ("int", "float"):
        what = "whole number" if e.kind == "int" else "number"
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", v):
            return f"write the number without quotes: {lead}{v.strip()}"
        if isinstance(v, bool):
            return (f"write a {what}, e.g. {lead}1 (YAML reads yes/no/on/off/true/false as "
                    "true or false)")
        if isinstance(v, float):
            example = max(1, int(v)) if v == v and abs(v) < 1e18 else 2  # not nan or inf
            return f"write a whole number, e.g. {lead}{example}"
        return f"write a {what}, e.g. {lead}2"
    if e.kind == "bool":
        return f"write {lead}true or {lead}false"
    if e.kind in ("str", "envtext", "scalar"):
        if isinstance(v, bool) and e.kind in ("str", "envtext"):
            return (f"quote it: {lead}{_yaml_quote(raw)} (YAML reads yes/no/on/off/true/false "
                    "as true or false)")
        if isinstance(v, int | float) and e.kind == "str":
            return f"quote it: {lead}{_yaml_quote(raw)}"
        if isinstance(v, dict):
            if e.kind == "str":
                return ("YAML reads a value that starts with '{' as a mapping: quote the whole "
                        f"value, e.g. {k}: \"{{build}}/solver {{x}}\"")
            return "give one text or number value"
        if isinstance(v, list):
            if e.kind == "scalar" and path[:1] == ("jobs",):
                return "an explicit job has one value per parameter: give a single value"
            if e.kind == "scalar" and path[:1] == ("params",):
                return ("give single values in the list, e.g. params: {x: [1, 2]}; "
                        "lists of lists are not allowed")
            return "give a single value, not a list"
        return "give a text value"
    if e.kind == "list":
        if isinstance(v, dict):
            return (f"write a list, e.g. {k}: [a, b], or one '- item' line per entry "
                    "indented under it")
        if isinstance(v, str) and (v[:1] in "*&!|>'\"%@`[]{},#?-:" or ": " in v
                                   or ", " in v):
            raw = json.dumps(v)  # unquoted, '*.vtk' would be a YAML alias
        return f"write it as a list: {k}: [{raw}]"
    if e.kind == "mapping":
        head = "- " if item else f"{k}: "
        if e.target is not None and attrs.has(e.target):
            fields = [a for a in attrs.fields(e.target) if not a.metadata.get("internal")]
            keys = [yaml_key(a) for a in fields]
            must = [yaml_key(a) for a in fields if a.default is attrs.NOTHING]
            if isinstance(v, str | int | float) and not isinstance(v, bool):
                # the one key a bare value most likely meant
                meant = must[0] if len(must) == 1 else \
                    "connection" if "connection" in keys and v in ("local", "ssh") else \
                    "address" if "address" in keys else None
                if meant:
                    return f"write it as {head}{{{meant}: {_yaml_quote(raw)}}}"
            return f"write 'key: value' lines indented under '{k}:' (keys: {', '.join(keys)})"
        if k in _MAPPING_EXAMPLE:
            return _MAPPING_EXAMPLE[k]
        return f"write 'name: value' lines indented under '{k}:'"
    if e.kind == "duration":
        return f"write a duration, e.g. {lead}2h, 45m or 1h30m"
    return "fix the value"


def _describe(v: Any, raw: str | None) -> str:
    if v is None:
        return "nothing (the value is empty)"
    if isinstance(v, bool):
        return f"{raw or str(v).lower()} (read as {'true' if v else 'false'})"
    if isinstance(v, str):
        return f"the text {v!r}"
    if isinstance(v, int | float):
        return f"the number {raw or v}"
    return _type_name(v)


def _wrong_type(leaf: WrongType, path: tuple, source: Source, cls: type) -> str:
    if leaf.is_key:
        name = source.raw_key(path) or str(path[-1])
        read_as = "true/false" if isinstance(path[-1], bool) else _type_name(path[-1])
        return (f"{dotted(path[:-1])}: the name {name!r} is read as {read_as}, not text: "
                f"{_type_fix(leaf, path, source, True)}")
    field = _field_at(cls, path)
    required = field is not None and field.default is attrs.NOTHING
    got = _describe(leaf.value, source.raw(path))
    return (f"{dotted(path)}: expected {leaf.what}, got {got}: "
            f"{_type_fix(leaf, path, source, required)}")


# Which message comes first when several start on the same line: the cause before its effects.
_RANK = {"unknown": 0, "type": 1, "value": 2, "missing": 3}


def structure(data: Any, cls: type, source: Source, what: str) -> Any:
    """Turn plain data into ``cls``; every failure names file, line and key, and the fix."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        keys = _known_keys(cls, ())
        raise ConfigError([f"{source.filename}:{source.line()}: (top level): {what} must be a "
                           f"mapping of keys ({', '.join(keys[:4])}, ...), got {_type_name(data)}:"
                           " write 'key: value' lines starting at the left margin, without '- '"],
                          path=source.filename, line=source.line())
    try:
        return converter().structure(data, cls)
    except (ClassValidationError, IterableValidationError, TypeError, ValueError) as exc:
        found: list[tuple[int, int, str, str]] = []  # line, rank, key, message
        errors = list(_iter_errors(exc))
        misspelt = set()  # (path, key) of a missing key whose misspelling is reported
        for path, leaf in errors:
            if isinstance(leaf, ForbiddenExtraKeysError):
                known = _known_keys(cls, path)
                for extra in leaf.extra_fields:
                    close = _closest(extra, known)
                    if close:
                        misspelt.add(path + (close,))
        for path, leaf in errors:
            if isinstance(leaf, ForbiddenExtraKeysError):
                for extra in sorted(leaf.extra_fields, key=str):
                    node = source.key_node(path, extra if str(extra) not in ("True", "False")
                                           else str(extra) == "True")
                    ln = node.start_mark.line + 1 if node is not None else 1
                    known = _known_keys(cls, path)
                    place = dotted(path) if path else what
                    hint = f"keys allowed in {place}: {', '.join(known)}"
                    close = _closest(extra, known) if isinstance(extra, str) else None
                    fix = f"did you mean {close!r}? ({hint})" if close else \
                        f"remove it or fix its spelling ({hint})"
                    if str(extra) in ("True", "False"):  # on/off/yes/no: YAML 1.1 booleans
                        fix = (f"YAML reads on, off, yes and no as true or false, also as keys"
                               f" ({hint}){'; write when:' if 'when' in known else ''}")
                    key = dotted(path + (extra,))
                    found.append((ln, _RANK["unknown"], key, f"unknown key {key}: {fix}"))
            elif isinstance(leaf, KeyError):
                if path in misspelt:
                    continue  # 'did you mean' on the unknown key says it all
                ln = source.line(path[:-1])
                example = _MISSING_EXAMPLE.get(_shape(path), f"{_leaf(path)}: ...")
                found.append((ln, _RANK["missing"], dotted(path),
                              f"{dotted(path)} is missing: add {example}"))
            elif isinstance(leaf, WrongType):
                found.append((source.line(path), _RANK["type"], dotted(path),
                              _wrong_type(leaf, path, source, cls)))
            else:
                why = str(leaf) if isinstance(leaf, TypeError | ValueError) else repr(leaf)
                found.append((source.line(path), _RANK["value"], dotted(path),
                              f"{dotted(path)}: {why}"))
        found.sort(key=lambda f: (f[0], f[1]))
        if not found:
            raise ConfigError(f"{source.filename}:1: {exc}", path=source.filename) from None
        raise ConfigError([f"{source.filename}:{ln}: {msg}" for ln, _, _, msg in found],
                          path=source.filename, line=found[0][0], key=found[0][2]) from None


def _unwrap_optional(t: Any) -> Any:
    args = typing.get_args(t)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return t


def _walk(cls: type, path: tuple) -> tuple[Any, attrs.Attribute | None]:
    """The type at ``path`` below ``cls`` and the attrs field it last went through."""
    t: Any = cls
    field = None
    for key in path:
        t = _unwrap_optional(t)
        if attrs.has(t):
            attrs.resolve_types(t)
            field = next((a for a in attrs.fields(t) if yaml_key(a) == key), None)
            if field is None:
                return None, None
            t = field.type
            continue
        field = None
        origin, args = typing.get_origin(t), typing.get_args(t)
        if origin is list and args:
            t = args[0]
        elif origin is dict and len(args) == 2:
            t = args[1]
        else:
            return None, None
    return _unwrap_optional(t), field


def _field_at(cls: type, path: tuple) -> attrs.Attribute | None:
    """The attrs field whose value is at ``path`` (None inside lists and mappings)."""
    return _walk(cls, path)[1]


def _known_keys(cls: type, path: tuple) -> list[str]:
    """The keys allowed at ``path`` below ``cls``, for 'did you mean' hints."""
    t = _walk(cls, path)[0]
    if t is None or not attrs.has(t):
        return []
    return [yaml_key(a) for a in attrs.fields(t) if not a.metadata.get("internal")]


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return m[0] if m else None
