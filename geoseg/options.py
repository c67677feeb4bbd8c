"""Options objects for the functions with long keyword lists, normalised once where they enter.

``evaluate()`` and ``vectorize_labels()`` take a dozen settings each. They arrive as an options
object (:class:`geoseg.accuracy.options.EvaluationOptions`, :class:`geoseg.vector.options.VectorizeOptions`),
a mapping, or plain keywords (a notebook's ``geoseg.evaluate(labels, ref, regions=..., mapping=...)``);
:func:`coerce` turns any of these into the one frozen object, whose ``__post_init__`` checks and
normalises every value once (the style of dask's ``coerce_depth``). Functions further in take the object
as it is: nothing is checked or converted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def coerce(cls: type[T], options: T | Mapping[str, Any] | None, keywords: Mapping[str, Any], what: str) -> T:
    """``options`` (an instance of ``cls``, a mapping or ``None``) with ``keywords`` on top, as one ``cls``.

    An instance without keywords comes back as it is. Unknown names are a ``TypeError`` listing the
    known ones, as Python's own for an unexpected keyword argument.
    """
    if isinstance(options, cls) and not keywords:
        return options
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if options is None or isinstance(options, cls):
        base: dict[str, Any] = {}
    elif isinstance(options, Mapping):
        base = dict(options)
    else:
        raise TypeError(f"{what}() options must be a {cls.__name__} or a mapping, not {type(options).__name__}")
    unknown = sorted((set(base) | set(keywords)) - names)
    if unknown:
        raise TypeError(f"{what}() got unknown option(s) {', '.join(unknown)}; options are: {', '.join(sorted(names))}")
    if isinstance(options, cls):
        return dataclasses.replace(options, **keywords)  # type: ignore[type-var]
    return cls(**{**base, **keywords})
