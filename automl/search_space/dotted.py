"""Dotted paths into nested specs: ``train.optim.lr``, ``dataset.train_data_sources[0].image_dir``.

A path is a tuple of tokens: ``str`` for a mapping key, ``int`` for a list index.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Iterator

Token = str | int
_SEGMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)(?P<indices>(?:\[\d+\])*)$")
_MISSING = object()


def parse_path(path: str) -> tuple[Token, ...]:
    """``"a.b[0].c"`` -> ``("a", "b", 0, "c")``; raises ValueError on bad syntax."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a parameter path must be a non-empty string, got {path!r}")
    tokens: list[Token] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(
                f"{path!r} is not a dotted path (expected names joined by '.', "
                "optionally indexed like 'train_data_sources[0]')"
            )
        tokens.append(match["name"])
        tokens.extend(int(i) for i in re.findall(r"\[(\d+)\]", match["indices"]))
    return tuple(tokens)


def format_path(tokens: Iterable[Token]) -> str:
    out = ""
    for token in tokens:
        out += f"[{token}]" if isinstance(token, int) else (f".{token}" if out else token)
    return out


def get_path(tree: Any, tokens: tuple[Token, ...], default: Any = _MISSING) -> Any:
    node = tree
    for token in tokens:
        try:
            node = node[token]
        except (KeyError, IndexError, TypeError):
            if default is _MISSING:
                raise KeyError(format_path(tokens)) from None
            return default
    return node


def set_path(tree: dict, tokens: tuple[Token, ...], value: Any) -> None:
    """Set a value, creating mappings on the way; a list may grow by one item at its end."""
    node: Any = tree
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        nxt: Any = value if last else ({} if isinstance(tokens[i + 1], str) else [])
        where = format_path(tokens[:i]) or "the spec"
        if isinstance(token, int):
            if not isinstance(node, list):
                raise ValueError(f"{where} is not a list, cannot index it with [{token}]")
            if token > len(node):
                raise ValueError(
                    f"{format_path(tokens)}: index {token} skips items ({where} has {len(node)})"
                )
            if token == len(node):
                node.append(nxt)
            elif last:
                node[token] = value
            elif node[token] is None:
                node[token] = nxt
        else:
            if not isinstance(node, dict):
                raise ValueError(f"{where} is not a mapping, cannot set key {token!r}")
            if last:
                node[token] = value
            elif node.get(token) is None:
                node[token] = nxt
        node = node[token]


def iter_leaves(tree: Any, prefix: tuple[Token, ...] = ()) -> Iterator[tuple[tuple[Token, ...], Any]]:
    """Yield (tokens, value) for every non-container value and every empty container."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from iter_leaves(value, prefix + (key,))
    elif isinstance(tree, list) and tree:
        for i, value in enumerate(tree):
            yield from iter_leaves(value, prefix + (i,))
    else:
        yield prefix, tree


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
