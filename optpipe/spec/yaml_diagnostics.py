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


# A recipe is a few dozen nodes. Aliases (`*name`) share one node, so a few lines of them can stand
# for billions of nodes ("billion laughs") that validation would then walk: bound the expansion.
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, why: str):
        self.node, self.why = node, why


def compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of `text`, or an InvalidInputError that names the line of the syntax error
    (or of an alias that expands the document beyond any recipe's size)."""
    try:
        root = yaml.compose(text, Loader=LineLoader)
        _check_expansion(root)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, filename) from None
    except RecursionError:
        raise InvalidInputError([Problem(filename, 1, "<yaml>", MISSING, "nested too deeply for a recipe")]) from None
    except _TooBig as big:
        raise InvalidInputError(
            [
                Problem(
                    filename,
                    big.node.start_mark.line + 1,
                    "<yaml>",
                    MISSING,
                    f"{big.why}; a recipe needs no more than a few aliases (*name): write the values out",
                )
            ]
        ) from None
    return root


def _check_expansion(root: yaml.Node | None) -> None:
    """Count the nodes the document stands for once every alias is expanded (each shared node is
    visited once, with its expanded size remembered), and refuse cycles and oversized documents."""
    sizes: dict[int, int] = {}
    seen_twice = 0
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        nonlocal seen_twice
        key = id(node)
        if key in sizes:
            seen_twice += 1
            if seen_twice > MAX_ALIASES:
                raise _TooBig(node, f"more than {MAX_ALIASES} aliases")
            return sizes[key]
        if key in open_nodes:
            raise _TooBig(node, "a recursive alias (a node that contains itself)")
        open_nodes.add(key)
        total = 1
        children: list = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise _TooBig(child, f"aliases expand the document beyond {MAX_EXPANDED_NODES:,} values")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root)


def load(text: str, filename: str = "<yaml>") -> object:
    """Python values of a document that `compose` accepted (tags such as !!python/object are refused)."""
    try:
        return yaml.load(text, Loader=LineLoader)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, filename) from None
    except RecursionError:
        raise InvalidInputError([Problem(filename, 1, "<yaml>", MISSING, "nested too deeply for a recipe")]) from None


def _yaml_problem(exc: yaml.YAMLError, filename: str) -> InvalidInputError:
    mark = getattr(exc, "problem_mark", None)
    return InvalidInputError([Problem(filename, mark.line + 1 if mark else 1, "<yaml>", MISSING, f"not valid YAML: {exc}")])


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
