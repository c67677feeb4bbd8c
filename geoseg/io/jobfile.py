"""Job files as read from disk: YAML with a safe loader and limits, validated strictly by a pydantic model.

One reader for every job file geoseg takes (a run's job, a training job): size, nesting and alias
expansion are limited before anything is built from the document, and a validation error names
every offending key, one per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from geoseg.errors import JobKeyError, JobSpecError


def validate_mapping(model: type[BaseModel], data: Any, source: str, what: str) -> Any:
    """Validate ``data`` as ``model``; a JobSpecError names every offending key, one per line."""
    if not isinstance(data, dict):
        raise JobSpecError(f"{source}: a {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        unknown = False
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                msg, unknown = "unknown key (check its spelling)", True
            else:
                msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        error = JobKeyError if unknown else JobSpecError
        raise error(f"{source} is not a valid {what}:\n" + "\n".join(lines)) from None


#: Largest job file read (bytes): real ones are a few kB.
MAX_YAML_BYTES = 1 << 20
#: Largest document after expanding aliases (nodes), and deepest nesting: a 1 kB "billion laughs"
#: alias bomb expands to ~10⁹ nodes when anything (json.dumps of run.json, pydantic) walks it.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 50


def _expanded_size(root: yaml.Node, where: Path) -> int:
    """Nodes in the document with every alias expanded, computed on the (small) node graph."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, path: set[int]) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in path:
            raise JobSpecError(f"{where}: a YAML anchor refers to itself; job files cannot be recursive")
        if depth > MAX_YAML_DEPTH:
            raise JobSpecError(f"{where}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            path.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [x for kv in node.value for x in kv]
            for child in children:
                total += size(child, depth + 1, path)
                if total > MAX_YAML_NODES:
                    raise JobSpecError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values "
                                       "(aliases of aliases?); job files are small, write it out plainly")
            path.discard(key)
        memo[key] = total
        return total

    return size(root, 0, set())


def read_yaml(path: Path, what: str) -> Any:
    """The content of a YAML file, read with the safe loader; unreadable or invalid files are JobSpecErrors.

    Size, nesting and alias expansion are limited before anything is built from the document.
    """
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise JobSpecError(f"{what} {path} is {path.stat().st_size:,} bytes, more than the "
                               f"{MAX_YAML_BYTES:,} a job file may have; is it the right file?")
        text = path.read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise JobSpecError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    return load_yaml_text(text, path)


class UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that gives one key twice (YAML says keys are unique;
    PyYAML lets the last one win silently, so ``method:`` given twice ran the second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *defaults``: later keys override, by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not key_node:
                raise DuplicateKeyError(f"key {key!r} is given twice (lines {first.start_mark.line + 1} and "
                                        f"{key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(Exception):
    """A mapping of a YAML document gives one key twice (the message says which and where)."""


def load_yaml_text(text: str, where: Path | str = "job") -> Any:
    """Safe-load one YAML document with the limits of :func:`read_yaml` (duplicate keys refused)."""
    where = Path(str(where))
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{where} is not valid YAML: {exc}") from exc
    except DuplicateKeyError as exc:
        raise JobSpecError(f"{where}: {exc}") from None
    except RecursionError:
        raise JobSpecError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()
