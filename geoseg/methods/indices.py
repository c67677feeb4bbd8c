"""Per-pixel indices over a scene's bands: a named index, a band, or a small band expression.

One resolution for every method that computes an index: the threshold method cuts one, a network
gets them as extra input channels (``index_channels`` of ``geoseg train``). Bands are found by role
(:mod:`geoseg.io.bandroles`), never by position; expressions are parsed with ``ast`` and never
``eval``'d. A resolved index records the band position of every role or band it reads
(:attr:`BandIndex.refs`), so a checkpoint can store it and inference can rebuild it
(:func:`resolve_index` with a mapping) without the training image.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.io.bandroles import BandInfo, find_role
from geoseg.io.bandroles import find_band as band_position
from geoseg.methods.features import INDICES, as_bands

#: A compiled expression: ("band", i, name) | ("const", x) | ("neg", e) | (op, left, right).
Expr = tuple[Any, ...]
#: Bands given as a scene's :class:`BandInfo`, as names, or as recorded positions (name or role → position).
Bands = Sequence[BandInfo] | Sequence[str] | Mapping[str, int]

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
#: Longest expression accepted (characters): formulas of a few bands are far shorter.
MAX_EXPRESSION = 200


def _locator(bands: Bands):
    """``name → band position``: through band roles, or from recorded positions (a checkpoint's)."""
    if isinstance(bands, Mapping):
        recorded = dict(bands)

        def known(name: str) -> int:
            if name not in recorded:
                raise InputError(f"band {name!r} has no recorded position (recorded: {sorted(recorded)})")
            return int(recorded[name])

        return known, known
    info = as_bands(bands)
    return (lambda name: band_position(info, name)), (lambda role: find_role(info, role))


def compile_expression(text: str, bands: Bands) -> Expr:
    """Parse ``text`` (numbers, bands, ``+ - * /``, parentheses, unary minus) into a tree.

    A band is a role (``nir``, ``red``), a band name (``B08``) or ``layer.band`` (``t1.nir``, ``red.b1``:
    a band or role within one layer; :func:`geoseg.io.bandroles.find_band`). Anything else (calls,
    powers, comparisons) is an ``InputError``; nothing is evaluated.

    >>> compile_expression("(nir - red) / (nir + red)", ["red", "green", "blue", "nir"])
    ('/', ('-', ('band', 3, 'nir'), ('band', 0, 'red')), ('+', ('band', 3, 'nir'), ('band', 0, 'red')))
    """
    if len(text) > MAX_EXPRESSION:
        raise InputError(f"band expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise InputError(f"band expression {text!r} is not valid: {exc.msg}") from None

    locate, _ = _locator(bands)

    def walk(node: ast.AST) -> Expr:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return (_BINOPS[type(node.op)], walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = walk(node.operand)
            return ("neg", inner) if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ("const", float(node.value))
        if isinstance(node, ast.Name):
            return ("band", locate(node.id), node.id)
        dotted = _dotted(node) if isinstance(node, ast.Attribute) else None
        if dotted:
            return ("band", locate(dotted), dotted)
        raise InputError(
            f"band expression {text!r}: {type(node).__name__} is not allowed; use numbers, band names, "
            "+ - * / and parentheses"
        )

    return walk(tree.body)


def _dotted(node: ast.AST) -> str | None:
    """``layer.band`` of an attribute chain of names (``a.b.c`` → ``"a.b.c"``), else ``None``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def evaluate_expression(expr: Expr, data: np.ndarray) -> np.ndarray:
    """The expression over bands ``data`` ``(bands, h, w)``, in float32."""
    kind = expr[0]
    if kind == "band":
        return data[expr[1]].astype(np.float32)
    if kind == "const":
        return np.float32(expr[1])  # type: ignore[return-value]
    if kind == "neg":
        return -evaluate_expression(expr[1], data)
    return _APPLY[kind](evaluate_expression(expr[1], data), evaluate_expression(expr[2], data))


def _band_refs(expr: Expr) -> list[tuple[str, int]]:
    kind = expr[0]
    if kind == "band":
        return [(expr[2], expr[1])]
    if kind == "const":
        return []
    return [ref for sub in expr[1:] for ref in _band_refs(sub)]


@dataclass(frozen=True)
class BandIndex:
    """An index bound to a scene's bands; ``compute`` has the feature interface the sampler uses."""

    text: str
    expr: Expr | None  # None for a named index (ndvi, ndwi, exg)
    role_idx: tuple[tuple[str, int], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.text,)

    @property
    def n_features(self) -> int:
        return 1

    @property
    def refs(self) -> tuple[tuple[str, int], ...]:
        """``(role or band as written, band position)`` of every band the index reads, each once, in order.

        >>> resolve_index("exg", ["red", "green", "blue", "nir"]).refs
        (('red', 0), ('green', 1), ('blue', 2))
        """
        if self.expr is None:
            return self.role_idx
        return tuple(dict.fromkeys(_band_refs(self.expr)))

    def compute(self, data: np.ndarray) -> np.ndarray:
        """The index ``(1, h, w)`` float32; non-finite values (0/0) are NaN."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.expr is None:
                roles = {r: data[i].astype(np.float32, copy=False) for r, i in self.role_idx}
                out = INDICES[self.text][1](roles)
            else:
                out = evaluate_expression(self.expr, data)
        out = np.broadcast_to(np.asarray(out, dtype=np.float32), data.shape[1:]).astype(np.float32)
        out[~np.isfinite(out)] = np.nan
        return out[None]


def resolve_index(text: str, bands: Bands) -> BandIndex:
    """``ndvi``/``ndwi``/``exg``, a band (``nir``, ``B08``, ``t1.nir``), or a band expression.

    ``bands``: a scene's bands (roles resolved as :mod:`geoseg.io.bandroles` says; a missing role is a
    :class:`~geoseg.errors.BandRoleError`), band names, or the positions an index recorded (:attr:`BandIndex.refs`).
    """
    key = text.strip()
    _, role_of = _locator(bands)
    if key.lower() in INDICES:
        roles = INDICES[key.lower()][0]
        return BandIndex(key.lower(), None, tuple((r, role_of(r)) for r in roles))
    return BandIndex(key, compile_expression(key, bands))


def index_channels(image: np.ndarray, valid: np.ndarray, indices: Sequence[BandIndex],
                   mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray) -> np.ndarray:
    """The indices over raw bands ``image`` ``(bands, h, w)`` as standardised network channels ``(k, h, w)`` float32.

    Each is ``(index - mean) / std``; where an index is not finite (0/0 on a black pixel, a NaN band) or the
    pixel is not ``valid`` the channel is 0, its mean, as bands are on invalid pixels: nothing non-finite
    reaches a network.
    """
    out = np.empty((len(indices), *image.shape[1:]), dtype=np.float32)
    for k, index in enumerate(indices):
        out[k] = (index.compute(image)[0] - np.float32(mean[k])) / np.float32(std[k])
    out[:, ~valid] = 0.0
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
