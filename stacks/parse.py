"""The first half of validation: raw config to a Platform whose fields are each valid, with
pydantic's errors as one-line problems. `validate.py` adds the cross-field checks.

Only pydantic and the schema: the command line runs this before it loads Pulumi and the
provider SDKs (seconds), so that a typo in a stack file is reported at once.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mlstack.stacks.errors import ConfigError, Problem, format_path
from mlstack.stacks.schema import Platform


def parse_platform(raw: Any, source: str | None = None) -> Platform:
    """The `mlstack:platform` value as a Platform; ConfigError listing every field problem."""
    if raw is None:
        raise ConfigError(
            [Problem("platform", "the stack sets no mlstack:platform", "add a config section")],
            source,
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [Problem("platform", "must be a mapping of fields", "see the README", raw)], source
        )
    try:
        return Platform.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_problem_from_pydantic(e) for e in exc.errors()], source) from None


# --- pydantic errors as one-line problems -------------------------------------------------


def _problem_from_pydantic(err: Mapping[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    path = format_path(loc)
    kind = err["type"]
    msg: str = err["msg"]
    value = err.get("input")
    if kind == "missing":
        field = _field_at(loc)
        description = field.description if field is not None else None
        hint = f": {description}" if description else ""
        return Problem(path, "required field is missing", f"add {loc[-1]}{hint}")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"rename it to {close[0]!r}" if close else "remove it"
        return Problem(path, "unknown field", f"{fix}; allowed here: {', '.join(allowed)}", value)
    if msg.startswith("Value error, "):
        return Problem(path, "invalid value", msg.removeprefix("Value error, "), value)
    if msg.startswith("Input should be"):
        return Problem(path, "invalid value", "use" + msg.removeprefix("Input should be"), value)
    return Problem(path, msg, "see the README's config reference", value)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers down to a model class or container type."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is not None and hasattr(annotation, "__metadata__"):
        return _unwrap(get_args(annotation)[0])
    return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = Platform
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin in (tuple, list) or origin is dict:
            current = get_args(current)[-1] if origin is dict else get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_at(loc: tuple[Any, ...]) -> Any:
    model = _model_at(loc[:-1])
    return model.model_fields.get(str(loc[-1])) if model is not None else None


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []
