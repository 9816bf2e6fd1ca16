"""Functions ``torch.compile`` must not trace into, marked without importing ``torch._dynamo``.

``torch.compiler.disable`` imports ``torch._dynamo`` (and sympy) when it is applied: at
module import that was 1.1 s of every ``import dino.models`` on a 2-core CPU. Dynamo is
still imported by the first optimizer's constructor, so a trainer's start-up is no
shorter; what moves is when: after the model's imports, where a warm trainer has
started its attention check (``dino.warm.AttentionCheck``). Only a run with
``train.compile`` needs the graph breaks, so marked functions stay plain until
:func:`apply` (which ``dino.models.compiled`` calls before it compiles anything) puts
their disabled versions in their modules. Callers look them up in the module at call time
(``module.function(...)`` or a module-level name), so they get whichever is current.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

_MARKED: list[Callable] = []


def graph_break(fn: F) -> F:
    """Mark module-level ``fn`` as a graph break for ``torch.compile`` (see the module
    docstring); returns ``fn`` itself."""
    _MARKED.append(fn)
    return fn


def apply() -> list[str]:
    """Replace every marked function by ``torch.compiler.disable(fn)`` in its module (once);
    returns the qualified names of the functions replaced now."""
    import torch

    replaced = []
    for fn in _MARKED:
        module = sys.modules[fn.__module__]
        if getattr(module, fn.__name__, None) is fn:
            setattr(module, fn.__name__, torch.compiler.disable(fn))
            replaced.append(f"{fn.__module__}.{fn.__name__}")
    return replaced
