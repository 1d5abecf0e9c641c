"""The first half of validation: raw config to a Platform whose fields are each valid, with
pydantic's errors as one-line problems. `validate.py` adds the cross-field checks.

Only pydantic and the schema: the command line runs this before it loads Pulumi and the
provider SDKs (seconds), so that a typo in a stack file is reported at once.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

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
    path = format_path(_without_tags(loc))
    kind = err["type"]
    msg: str = err["msg"]
    value = err.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # A tagged union (a pipeline step's `kind`): the tag is missing or names no member.
        field = str(err["ctx"]["discriminator"]).strip("'")
        tags = str(err["ctx"].get("expected_tags") or _tags_at(loc, field)).replace("'", "")
        if kind == "union_tag_not_found":
            return Problem(f"{path}.{field}", "required field is missing", f"add {field}: {tags}")
        return Problem(f"{path}.{field}", "invalid value", f"use one of: {tags}", err["ctx"]["tag"])
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


def _union_member(union: Any, tag: Any) -> type[BaseModel] | None:
    """The member of a tagged union of models whose tag (a Literal field) is `tag`; pydantic puts
    the tag into an error's location, after the union's index."""
    if get_origin(union) not in (Union, types.UnionType):
        return None
    for member in get_args(union):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field in member.model_fields.values():
                if get_origin(field.annotation) is Literal and get_args(field.annotation) == (tag,):
                    return member
    return None


def _walk(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """The location without union tags, and the type at its end (None: not a known field)."""
    current: Any = Platform
    kept: list[Any] = []
    for part in loc:
        current = _unwrap(current)
        member = _union_member(current, part)
        if member is not None:
            current = member
            continue
        kept.append(part)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif origin in (tuple, list) or origin is dict:
            current = get_args(current)[-1] if origin is dict else get_args(current)[0]
        else:
            current = None
    return tuple(kept), current


def _without_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return _walk(loc)[0]


def _tags_at(loc: tuple[Any, ...], discriminator: str) -> str:
    """The tags of the tagged union at `loc`, in declared order."""
    union = _unwrap(_walk(loc)[1])
    members = get_args(union) if get_origin(union) in (Union, types.UnionType) else ()
    fields = [m.model_fields.get(discriminator) for m in members]
    return ", ".join(str(get_args(f.annotation)[0]) for f in fields if f is not None)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current = _unwrap(_walk(loc)[1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_at(loc: tuple[Any, ...]) -> Any:
    model = _model_at(loc[:-1])
    return model.model_fields.get(str(loc[-1])) if model is not None else None


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []
