"""Reading one blueprint file: bytes -> a mapping, with the line of every key.

Hostile or careless YAML ends here as a BlueprintError naming the file and line,
never as an exception from PyYAML or Python: bytes that are not UTF-8, nesting too
deep for Python's stack, an anchor that contains itself, aliases that would expand
to millions of values (an "alias bomb": counted while composing, never expanded),
values Python cannot build (a 5,000-digit integer, ``!!int abc``, ``2001-02-30``).
The line bookkeeping walks each YAML node once, so aliases cost nothing there either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import BlueprintError
from .report import KeyPath, dotted, typename

#: Larger files are refused before they are read (blueprints are a few KB).
MAX_BYTES = 1 << 20
#: Deeper nesting is refused (PyYAML composes and constructs recursively).
MAX_DEPTH = 64
#: Values a document may expand to, counting every alias as a copy of its anchor.
MAX_VALUES = 200_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    """One YAML file's mapping, with the line of every key path (mapping keys as the
    YAML wrote them, sequence positions as ints)."""

    path: Path
    data: dict[Any, Any]
    lines: dict[KeyPath, int]


class _Refused(Exception):
    def __init__(self, mark: Any, message: str, key: KeyPath = ()) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.message = message
        self.key = key


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what would exhaust the stack, memory or time."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[Any] = []  # the key path being composed (None: a key itself)
        self._open_anchors: list[str] = []
        self._sizes: dict[int, int] = {}
        self.node_keys: dict[int, KeyPath] = {}  # filled by _key_lines, for messages

    def _key(self, *more: Any) -> KeyPath:
        return tuple(p for p in (*self._path, *more) if p is not None)

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML passes a mapping value's key node, or a sequence item's position
        part = index.value if isinstance(index, yaml.ScalarNode) else index
        part = part if isinstance(part, str | int) else None
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Refused(
                    event.start_mark,
                    f"alias *{event.anchor} is inside the value it refers to "
                    "(a self-referencing anchor)",
                    self._key(part),
                )
            return super().compose_node(parent, index)
        self._path.append(part)
        if len(self._path) > MAX_DEPTH:
            raise _Refused(
                event.start_mark, f"nested more than {MAX_DEPTH} levels deep", self._key()[:4]
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.append(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path.pop()
            if anchor is not None:
                self._open_anchors.pop()
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes.get(id(item), 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(
                self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value
            )
        self._sizes[id(node)] = size
        if size > MAX_VALUES:
            raise _Refused(
                node.start_mark,
                f"expands to more than {MAX_VALUES:,} values through aliases (a YAML alias bomb?)",
                self._key(part),
            )
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except _Refused:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            key = self.node_keys.get(id(node), ())
            raise _Refused(node.start_mark, _unbuildable(node, exc), key) from None


def _unbuildable(node: Any, exc: Exception) -> str:
    tag = str(node.tag).rsplit(":", 1)[-1]
    if isinstance(node, yaml.ScalarNode):
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return f"cannot read {text!r} as {tag}: {exc}"
    return f"cannot build this {tag}: {exc}"


def read_document(path: Path) -> Document:
    """Read, parse and construct one blueprint file; refuse anything unsafe."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise BlueprintError(
            path, "", f"not valid UTF-8: byte 0x{byte} cannot be decoded", line=line
        ) from None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # checks every character is one YAML allows
        node = loader.get_single_node()
        lines = _key_lines(path, node, loader.node_keys) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        raise BlueprintError(path, dotted(exc.key), exc.message, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or str(exc)
        raise BlueprintError(
            path, "", f"malformed YAML: {problem}", line=mark.line + 1 if mark else None
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise BlueprintError(
            path, "", f"malformed YAML: character #x{exc.character:04x} is not allowed", line=line
        ) from None
    except yaml.YAMLError as exc:
        raise BlueprintError(path, "", f"malformed YAML: {exc}") from None
    except RecursionError:  # a safety net: MAX_DEPTH should have refused it first
        raise BlueprintError(path, "", "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BlueprintError(
            path, "", f"expected a mapping of blueprint keys, got {typename(data)}", line=1
        )
    return Document(path, data, lines)


def _read_bytes(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise BlueprintError(path, "", "cannot read blueprint: not a regular file")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BlueprintError(path, "", f"cannot read blueprint: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise BlueprintError(
            path, "", f"is larger than {MAX_BYTES >> 20} MB; a blueprint is a few KB of YAML"
        )
    return raw


def _key_lines(path: Path, root: Any, node_keys: dict[int, KeyPath]) -> dict[KeyPath, int]:
    """The line of every key path (and in ``node_keys`` the key path of every node).
    Each node is walked once: the keys under an alias are where its anchor is, and a
    key path through an alias takes the alias's line."""
    lines: dict[KeyPath, int] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, KeyPath]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node_keys[id(node)] = prefix
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first:  # PyYAML would silently keep the last one
                    raise BlueprintError(
                        path,
                        dotted((*prefix, key_node.value)),
                        f"duplicate key (first set on line {first[key_node.value]})",
                        line=line,
                    )
                first[key_node.value] = line
                key = (*prefix, key_node.value)
                lines[key] = line
                stack.append((value_node, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                key = (*prefix, index)
                lines[key] = item.start_mark.line + 1
                stack.append((item, key))
    return lines
