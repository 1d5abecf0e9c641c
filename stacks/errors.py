"""Config problems: each one line with its path, the value given and the fix."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_KEY = re.compile(r"^[A-Za-z0-9_./-]+$")
#: `scheme://user:password@` (or `scheme://token@`): the credentials of a URL. A "/" does not
#: end them: a password pasted without percent-encoding may hold one, and masking a path that
#: holds an "@" costs less than printing a password.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^@\s'\"]+@")


def mask_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`: a message about
    a bad endpoint must not put a password into the terminal or a CI log."""
    return _USERINFO.sub(r"\1***@", text)


def format_path(loc: Sequence[str | int], root: str = "platform") -> str:
    """('teams', 1, 'quota', 'gpus', 'h100') -> 'platform.teams[1].quota.gpus.h100'."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _KEY.match(str(part)):
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out


def _show(value: Any) -> str:
    # Masked before it is shortened: a cut could leave a password without its "@".
    text = mask_credentials(repr(list(value) if isinstance(value, tuple) else value))
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, said in one line."""

    path: str
    message: str
    fix: str
    value: Any = _MISSING

    def __str__(self) -> str:
        got = "" if self.value is _MISSING else f" (got {_show(self.value)})"
        line = mask_credentials(f"{self.path}: {self.message}{got}; fix: {self.fix}")
        return line.replace("\r", "\\r").replace("\n", "\\n")


class ConfigError(Exception):
    """A stack config that cannot be deployed; carries every problem found, one per line."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(f"{prefix}{p}" for p in self.problems)
