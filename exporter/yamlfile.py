"""YAML files: parsed with duplicate keys refused, their problems located at ``file:line``.

The exporter's config, the web config and the simulator's scenarios all read through here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from exporter.errors import ConfigError

T = TypeVar("T")


def unknown_key(key: object, allowed: set[str]) -> str:
    """``unknown key`` with the closest allowed spelling, if one is close."""
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
    return f"unknown key, did you mean {close[0]!r}?" if close else "unknown key"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' then overriding a key is allowed
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> object:
    """Parsed YAML, or ConfigError located at ``source:line:column``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{where}: {problem}"]) from None


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None


def read_yaml(path: str | Path) -> object:
    """A YAML file, parsed; ConfigError naming the file when it cannot be read or parsed."""
    return parse_yaml(_read_text(path), str(path))


def key_lines(node: yaml.Node | None) -> dict[str, int]:
    """Each key path of a composed YAML document (``accounts[0].name``) → its line."""
    lines: dict[str, int] = {}
    # An alias is the node of its anchor again: each node is walked once, at its first
    # path, so an alias of itself (&a [*a]) ends and nested aliases cost no more than the
    # text (a problem under an alias is located at the key that holds the alias).
    seen: set[int] = set()
    stack: list[tuple[yaml.Node | None, str]] = [(node, "")]
    while stack:
        current, where = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        children: list[tuple[yaml.Node, str, int]] = []
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                path = f"{where}.{key.value}" if where else str(key.value)
                children.append((value, path, key.start_mark.line + 1))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                children.append((item, f"{where}[{index}]", item.start_mark.line + 1))
        for _, path, line in children:
            lines.setdefault(path, line)
        stack.extend((child, path) for child, path, _ in reversed(children))
    return lines


def locate(problems: list[str], source: str, lines: Mapping[str, int]) -> list[str]:
    """``path: message`` → ``source:line: path: message``, at the nearest key written."""
    located = []
    for problem in problems:
        where = problem.split(": ", 1)[0]
        parts = re.split(r"(?=[.\[])", where)
        prefixes = ("".join(parts[:n]) for n in range(len(parts), 0, -1))
        line = next((lines[p] for p in prefixes if p in lines), None)
        located.append(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")
    return located


def locate_in_file(path: str | Path, problems: list[str]) -> list[str]:
    """Problems found beside a parse (``key.path: message``) located as its own are."""
    try:
        lines = key_lines(yaml.compose(_read_text(path), Loader=_UniqueKeyLoader))
    except (ConfigError, yaml.YAMLError):  # changed since it was read: name the file
        lines = {}
    return locate(problems, str(path), lines)


def load_located(path: str | Path, parse: Callable[[object], T]) -> T:
    """``parse`` applied to a YAML file; its problems located at ``file:line``."""
    text = _read_text(path)
    raw = parse_yaml(text, str(path))
    try:
        return parse(raw)
    except ConfigError as error:
        lines = key_lines(yaml.compose(text, Loader=_UniqueKeyLoader))
        raise ConfigError(locate(error.problems, str(path), lines)) from None
