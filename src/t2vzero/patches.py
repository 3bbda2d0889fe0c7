"""Patches on a loaded model shared by everyone using it at once: the first user installs, the last removes.

Generations on one model may overlap (threads, a Gradio queue, a Ray actor). Each patch kind is counted
per model, so a user that finishes early never takes a patch away from one still running.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
# model -> patch kind -> (users, undo)
_PATCHES: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, Callable[[], None]]]] = weakref.WeakKeyDictionary()


@contextmanager
def shared_patch(model: Any, kind: str, install: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """Within the block `model` carries patch `kind`: `install()` (which returns its undo) runs for the first
    user only, the undo when the last one leaves, also when the body raises. A failing install is not counted."""
    with _LOCK:
        per_model = _PATCHES.setdefault(model, {})
        users, undo = per_model.get(kind, (0, None))
        if users == 0:
            undo = install()
        per_model[kind] = (users + 1, undo)
    try:
        yield
    finally:
        with _LOCK:
            users, undo = _PATCHES[model][kind]
            if users == 1:
                undo()
                del _PATCHES[model][kind]
            else:
                _PATCHES[model][kind] = (users - 1, undo)
