"""YAML with line numbers: parse a document and find the line of any field a validation error names.

Shared by recipes (and, later, other YAML inputs): the node tree from `compose` keeps every key's
position, so each pydantic error becomes a `Problem` that says file:line.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from optpipe.errors import MISSING, InvalidInputError, Problem


class LineLoader(yaml.SafeLoader):
    """SafeLoader; a class of our own so optpipe never changes PyYAML's global loader."""


def compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of `text`, or an InvalidInputError that names the line of the syntax error."""
    try:
        return yaml.compose(text, Loader=LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidInputError(
            [Problem(filename, mark.line + 1 if mark else None, "<yaml>", MISSING, f"not valid YAML: {exc}")]
        ) from None


def load(text: str) -> object:
    return yaml.load(text, Loader=LineLoader)


def locate(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node = v
                    line = k.start_mark.line + 1
                    break
            else:
                continue  # a union tag or a missing key: stay at the parent
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
    return line


def field_line(path: str | Path, field: str) -> int | None:
    """Line of a field such as 'goals.max_memory_gb' or 'passes[1]' in a YAML file, if findable."""
    try:
        root = compose(Path(path).read_text(), str(path))
    except (OSError, InvalidInputError):
        return None
    loc: list = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field.split(" ")[0]):
        loc.append(int(part[1:-1]) if part.startswith("[") else part)
    return locate(root, tuple(loc))
