"""The instance methods a job's ``instances:`` block can name: one :class:`InstanceMethodSpec` per ``kind``.

Like :mod:`geoseg.run.registry` for the semantic methods: the instance stage
(:mod:`geoseg.run.instancestage`) looks the method up here and never branches on its kind, and the
``instances.method`` block is validated as a union of the registered configs discriminated on ``kind``.

What a method declares and returns: :mod:`geoseg.run.instancespec`.

Adding one: a module in :mod:`geoseg.run.instancemethods` with its config (``kind: Literal[...]``, a
``StrictModel``) and ``INSTANCE_METHOD``, listed in :data:`BUILTIN`; or :func:`register` from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from geoseg.errors import JobSpecError
from geoseg.run.instancemethods import maskrcnn, sam, watershed
from geoseg.run.instancespec import InstanceMethodSpec

#: The instance methods geoseg ships, in the order the job schema lists them.
BUILTIN: tuple[InstanceMethodSpec, ...] = (watershed.INSTANCE_METHOD, maskrcnn.INSTANCE_METHOD, sam.INSTANCE_METHOD)

_METHODS: dict[str, InstanceMethodSpec] = {m.kind: m for m in BUILTIN}
_LISTENERS: list[Callable[[], None]] = []


def instance_method_of(kind: str) -> InstanceMethodSpec:
    try:
        return _METHODS[kind]
    except KeyError:
        raise JobSpecError(f"instance method kind {kind!r} is not known; known: {', '.join(_METHODS)}") from None


def kinds() -> tuple[str, ...]:
    return tuple(_METHODS)


def method_union() -> Any:
    """The type of ``instances.method``: the registered configs, discriminated on ``kind``."""
    configs = tuple(m.config for m in _METHODS.values())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 - a tuple of types


def register(method: InstanceMethodSpec) -> None:
    """Add an instance method (a kind not registered yet); job files may name it from then on."""
    kind = method.config.model_fields.get("kind")
    if kind is None or kind.default != method.kind:
        raise ValueError(f"{method.config.__name__} needs a field kind: Literal[{method.kind!r}] = {method.kind!r}")
    if method.kind in _METHODS:
        raise ValueError(f"an instance method of kind {method.kind!r} is registered already")
    _METHODS[method.kind] = method
    _changed()


def unregister(kind: str) -> None:
    """Remove an instance method added with :func:`register` (the built-in ones stay)."""
    if any(m.kind == kind for m in BUILTIN):
        raise ValueError(f"{kind!r} is a built-in instance method")
    if _METHODS.pop(kind, None) is not None:
        _changed()


def on_change(listener: Callable[[], None]) -> None:
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()
