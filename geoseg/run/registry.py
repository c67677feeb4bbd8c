"""The methods a job can name: one :class:`~geoseg.run.methodspec.MethodSpec` per ``method.kind``.

The workflow looks a job's method up here (:func:`method_of`) and never branches on its kind; the job
file's ``method:`` block is validated as a pydantic union discriminated on ``kind`` built from the
registered configs (:func:`method_union`), so every method's keys are checked strictly alike.

Adding a method: write its module (see :mod:`geoseg.run.methods`) and add its ``METHOD`` to
:data:`BUILTIN` below; or, from a notebook, a plugin or a test, call :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from geoseg.errors import JobSpecError
from geoseg.run.methods import deeplab, kmeans, threshold
from geoseg.run.methodspec import MethodSpec

#: The methods geoseg ships, in the order the job schema lists them.
BUILTIN: tuple[MethodSpec, ...] = (
    kmeans.METHOD,
    threshold.METHOD,
    deeplab.METHOD,
)

_METHODS: dict[str, MethodSpec] = {m.kind: m for m in BUILTIN}
_LISTENERS: list[Callable[[], None]] = []


def method_of(kind: str) -> MethodSpec:
    """The registered method of ``method.kind``."""
    try:
        return _METHODS[kind]
    except KeyError:
        raise JobSpecError(f"method kind {kind!r} is not known; known: {', '.join(_METHODS)}") from None


def kinds() -> tuple[str, ...]:
    return tuple(_METHODS)


def method_union() -> Any:
    """The type of a job's ``method:`` block: the registered configs, discriminated on ``kind``."""
    configs = tuple(m.config for m in _METHODS.values())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 - a tuple of types


def register(method: MethodSpec) -> None:
    """Add a method (a kind not registered yet) and rebuild the job schema so job files may name it."""
    field = method.config.model_fields.get("kind")
    if field is None or field.default != method.kind:
        raise ValueError(f"{method.config.__name__} needs a field kind: Literal[{method.kind!r}] = {method.kind!r}")
    if method.kind in _METHODS:
        raise ValueError(f"a method of kind {method.kind!r} is registered already")
    _METHODS[method.kind] = method
    _changed()


def unregister(kind: str) -> None:
    """Remove a method added with :func:`register` (the built-in ones stay)."""
    if any(m.kind == kind for m in BUILTIN):
        raise ValueError(f"{kind!r} is a built-in method")
    if _METHODS.pop(kind, None) is not None:
        _changed()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` after every (un)registration (the job schema rebuilds itself so)."""
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()
