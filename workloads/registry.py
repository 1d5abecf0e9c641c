"""The model registry: versions, their evals and lineage, named aliases and the promotion log,
all plain objects in the team's store (no server, no database).

Layout under one model's URL (`<models>/<team prefix>/<model>/`):

- `versions/<v>/bundle.json` (+ `params.npz`): an exported serving bundle (`train.export`).
- `versions/<v>/lineage.json`: what the version was trained from (dataset and its checksum,
  image, git commit, training config, step, pipeline run, parent version).
- `versions/<v>/evals/<split>.json`: its loss and perplexity on a split (`train.evaluate`).
- `aliases/<name>.json`: `{"alias", "version", "revision", "updated", "by", "reason"}`, the
  version a name (`champion`, `canary`, any `[a-z0-9-]` name) points at. Aliases move only by
  compare-and-swap (`Store.put_if_absent` / `put_if_match`: S3 conditional writes, GCS
  generation preconditions, a locked compare and rename on `file://`), so two promoters that
  both saw `champion -> v1` cannot both move it: one wins, the other gets `AliasRaced` naming
  the winner.
- `promotions/<time>-<random>.json`: one immutable object per attempt to move an alias, won or
  lost (who, when, alias, from, to, why, the outcome and, when lost, the winner), written with
  `put_if_absent`, so the log is append-only. Rollback reads it: an alias goes back to the
  version it named before its last won move.

Nothing here rewrites a file it cannot read: a corrupt alias, lineage, eval, bundle manifest or
log object is a `RegistryError` naming its URL and the fix, and a move onto a corrupt alias is
refused. Team isolation is the stack's storage grants on the team's prefix.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from mlstack.workloads.storage import NotFound, Precondition, Store, open_store

VERSIONS = "versions"
ALIASES = "aliases"
PROMOTIONS = "promotions"
BUNDLE = "bundle.json"
LINEAGE = "lineage.json"
EVALS = "evals"
#: Alias names: a DNS-label-like word, so that they read the same in URLs, env and flags.
ALIAS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: Environment variable naming who moves an alias (default: user@host).
ACTOR_VAR = "MLSTACK_ACTOR"
#: Compare-and-swap attempts of a move that expects nothing in particular, before giving up.
_CAS_ATTEMPTS = 5
#: Parallel reads of small objects (bundle manifests, evals, log entries).
_READERS = 16
T = TypeVar("T")


class _Missing(Enum):
    MISSING = "missing"


#: `move_alias(expect=MISSING)`: move whatever the alias names now (still compare-and-swap).
MISSING = _Missing.MISSING
Expect = str | None | _Missing


class RegistryError(Exception):
    """A registry object is corrupt or missing, or a request names something that is not there."""


@dataclass(frozen=True)
class Alias:
    """Where an alias points, as read (with the store's token for the next compare-and-swap)."""

    name: str
    version: str
    #: How many times the alias has moved (1 for its first version).
    revision: int
    updated: str
    by: str
    reason: str
    #: The store's precondition token of the object this was read from (not in the JSON).
    token: str = field(default="", compare=False)


class AliasRaced(RegistryError):  # noqa: N818 - reads as "the alias raced", like NotFound.
    """A move lost: the alias did not name the expected version, or another move got there
    first. `winner` is the alias as it is now (None when it names nothing)."""

    def __init__(self, alias: str, wanted: str, winner: Alias | None) -> None:
        self.alias = alias
        self.wanted = wanted
        self.winner = winner
        now = (
            f"{alias} now names {winner.version} (moved by {winner.by} at {winner.updated})"
            if winner
            else f"{alias} now names nothing"
        )
        super().__init__(f"moving {alias} to {wanted} lost the race: {now}")


@dataclass(frozen=True)
class VersionInfo:
    """One exported version: its manifest facts, evals, the aliases on it (and lineage, when
    read with `Registry.version`)."""

    name: str
    created: str | None
    step: int | None
    #: split -> the evals/<split>.json document.
    evals: Mapping[str, Mapping[str, Any]]
    aliases: tuple[str, ...]
    lineage: Mapping[str, Any] | None = None

    def metrics(self) -> dict[str, float]:
        """`<split>.<metric>` -> value for every numeric loss and perplexity in the evals."""
        return {
            f"{split}.{name}": float(doc[name])
            for split, doc in sorted(self.evals.items())
            for name in ("loss", "perplexity")
            if isinstance(doc.get(name), int | float)
        }


@dataclass(frozen=True)
class Promotion:
    """One attempt to move an alias, from the log."""

    key: str
    alias: str
    from_version: str | None
    to_version: str
    by: str
    at: str
    reason: str
    #: "won" or "lost".
    outcome: str
    #: "promote" or "rollback".
    action: str
    #: For a lost attempt: the alias as the winner left it ({"version", "by", "updated"}).
    winner: Mapping[str, Any] | None


def default_actor() -> str:
    """Who is moving an alias: $MLSTACK_ACTOR, else user@host."""
    actor = os.environ.get(ACTOR_VAR)
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def check_alias_name(name: str) -> str:
    if not ALIAS_NAME.fullmatch(name):
        raise RegistryError(
            f"alias name {name!r} is invalid: use lowercase letters, digits and '-' (at most "
            "63, starting and ending with a letter or digit), e.g. champion or canary"
        )
    return name


def list_models(root_url: str) -> list[str]:
    """The models under a team's models prefix: every directory with versions/ or aliases/
    (nested paths included, as `group/model`), from one listing."""
    return sorted(version_counts(root_url))


def version_counts(root_url: str) -> dict[str, int]:
    """Each model under `root_url` (as `list_models`) and its number of versions, from the
    same one listing."""
    counts: dict[str, int] = {}
    for key in open_store(root_url).list():
        parts = key.split("/")
        for i in range(1, len(parts) - 1):
            bundle = parts[i] == VERSIONS and parts[i + 2 :] == [BUNDLE]
            alias = parts[i] == ALIASES and i == len(parts) - 2 and parts[-1].endswith(".json")
            if bundle or alias:
                model = "/".join(parts[:i])
                counts[model] = counts.get(model, 0) + bundle
                break
    return dict(sorted(counts.items()))


class Registry:
    """One model's versions, aliases and promotion log, in `store` (the model's URL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def version_names(self) -> list[str]:
        """Every version with a bundle manifest, from one listing, sorted by name."""
        return _version_names(self.store.list(f"{VERSIONS}/"))

    def versions(self, last: int | None = None) -> list[VersionInfo]:
        """Every version (or the `last` ones by name: run ids and step numbers sort by time)
        with its manifest facts, evals and aliases, oldest first: one listing, then the small
        documents of those versions read in parallel (no round trip per version in sequence)."""
        keys = self.store.list(f"{VERSIONS}/")
        names = _version_names(keys)
        names = names[-last:] if last else names
        evals: dict[str, list[str]] = {name: [] for name in names}
        for key in keys:
            parts = key.split("/")
            if len(parts) == 4 and parts[2] == EVALS and parts[3].endswith(".json"):
                evals.setdefault(parts[1], []).append(parts[3].removesuffix(".json"))
        on = self._aliases_by_version()
        infos = _parallel(
            lambda name: self._info(name, evals.get(name, []), on.get(name, ())), names
        )
        return sorted(infos, key=lambda info: (info.created or "", info.name))

    def version(self, name: str) -> VersionInfo:
        """One version, with its lineage (None when it has none)."""
        if not self.store.exists(_bundle_key(name)):
            raise RegistryError(self._no_version(name))
        splits = [
            key.rsplit("/", 1)[1].removesuffix(".json")
            for key in self.store.list(f"{VERSIONS}/{name}/{EVALS}/")
            if key.endswith(".json")
        ]
        info = self._info(name, splits, self._aliases_by_version().get(name, ()))
        lineage = self._read_optional(
            f"{VERSIONS}/{name}/{LINEAGE}",
            "lineage",
            "re-export the version with its lineage, or delete the file",
        )
        return VersionInfo(
            info.name, info.created, info.step, info.evals, info.aliases, lineage=lineage
        )

    def alias(self, name: str) -> Alias | None:
        """Where alias `name` points, or None when it was never set."""
        key = _alias_key(check_alias_name(name))
        try:
            data, token = self.store.get_with_token(key)
        except NotFound:
            return None
        return self._parse_alias(name, data, token)

    def aliases(self) -> dict[str, Alias]:
        """Every alias by name."""
        names = [
            key[len(ALIASES) + 1 : -len(".json")]
            for key in self.store.list(f"{ALIASES}/")
            if key.endswith(".json") and key.count("/") == 1
        ]
        found = _parallel(self.alias, [name for name in names if ALIAS_NAME.fullmatch(name)])
        return {alias.name: alias for alias in found if alias is not None}

    def move_alias(
        self,
        alias: str,
        version: str,
        *,
        expect: Expect = MISSING,
        by: str | None = None,
        reason: str = "",
        action: str = "promote",
    ) -> Alias:
        """Point `alias` at `version` by compare-and-swap, and log the attempt.

        `expect`: the version the alias must name now (None: it must not exist yet); when it
        names another, or another move lands first, raises AliasRaced naming the winner, and
        the log records the lost attempt. With MISSING, a move that loses a swap reads the
        alias again and retries (a few times), so the log's `from` is always what it replaced.
        """
        check_alias_name(alias)
        if not self.store.exists(_bundle_key(version)):
            raise RegistryError(self._no_version(version))
        actor = by or default_actor()
        for _ in range(_CAS_ATTEMPTS):
            current = self.alias(alias)
            attempt = _Attempt(
                alias, current.version if current else None, version, actor, reason, action
            )
            if expect is not MISSING and attempt.before != expect:
                self._record(attempt, lost=True, winner=current)
                raise AliasRaced(alias, version, current)
            moved = Alias(
                name=alias,
                version=version,
                revision=current.revision + 1 if current else 1,
                updated=_now(),
                by=actor,
                reason=reason,
            )
            try:
                token = self._swap(alias, moved, current)
            except Precondition:
                now = self.alias(alias)
                if now is not None and now == moved:  # our retried request had landed
                    token = now.token
                elif expect is MISSING or _unchanged(now, current):
                    continue
                else:
                    self._record(attempt, lost=True, winner=now)
                    raise AliasRaced(alias, version, now) from None
            self._record(attempt)
            return replace(moved, token=token)
        raise RegistryError(
            f"{self.store.url(_alias_key(alias))} kept moving under {_CAS_ATTEMPTS} attempts to "
            f"point it at {version}; fix: try again when the other promoters are done"
        )

    def rollback(self, alias: str, *, by: str | None = None, reason: str = "") -> Alias:
        """Move `alias` back to the version it named before its last won move (from the log),
        by compare-and-swap against the version it names now."""
        current = self.alias(alias)
        if current is None:
            raise RegistryError(
                f"{self.store.url(_alias_key(alias))} does not exist: nothing to roll back; fix: "
                f"promote a version to {alias} first"
            )
        won = [p for p in self.log() if p.alias == alias and p.outcome == "won"]
        if not won or won[-1].to_version != current.version:
            raise RegistryError(
                f"{alias} names {current.version}, but the log under "
                f"{self.store.url(PROMOTIONS)} has no won move of {alias} to it; fix: promote "
                f"the version you want with `mlstack models promote --alias {alias}`"
            )
        previous = won[-1].from_version
        if previous is None:
            raise RegistryError(
                f"{alias} had no version before {current.version} (its first move): nothing to "
                f"roll back to; fix: promote the version you want to {alias}"
            )
        return self.move_alias(
            alias, previous, expect=current.version, by=by, reason=reason, action="rollback"
        )

    def log(self) -> list[Promotion]:
        """Every attempt to move an alias, oldest first."""
        keys = [k for k in self.store.list(f"{PROMOTIONS}/") if k.endswith(".json")]
        return _parallel(self._read_promotion, keys)

    def _swap(self, alias: str, moved: Alias, current: Alias | None) -> str:
        document = {
            "alias": alias,
            "version": moved.version,
            "revision": moved.revision,
            "updated": moved.updated,
            "by": moved.by,
            "reason": moved.reason,
        }
        data = (json.dumps(document, indent=2) + "\n").encode()
        if current is None:
            return self.store.put_if_absent(_alias_key(alias), data)
        return self.store.put_if_match(_alias_key(alias), data, current.token)

    def _record(
        self, attempt: _Attempt, *, lost: bool = False, winner: Alias | None = None
    ) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        key = f"{PROMOTIONS}/{stamp}-{uuid.uuid4().hex[:8]}.json"
        entry = {
            "alias": attempt.alias,
            "from": attempt.before,
            "to": attempt.to,
            "by": attempt.by,
            "at": _now(),
            "reason": attempt.reason,
            "action": attempt.action,
            "outcome": "lost" if lost else "won",
            "winner": (
                {"version": winner.version, "by": winner.by, "updated": winner.updated}
                if winner
                else None
            ),
        }
        self.store.put_if_absent(key, (json.dumps(entry, indent=2) + "\n").encode())

    def _info(self, name: str, splits: Iterable[str], aliases: Iterable[str]) -> VersionInfo:
        manifest = self._read_json(
            _bundle_key(name),
            "bundle manifest",
            f"re-export the version, or delete {VERSIONS}/{name}/",
        )
        training = manifest.get("training")
        step = training.get("step") if isinstance(training, dict) else None
        created = manifest.get("created")
        evals = {
            split: self._read_json(
                f"{VERSIONS}/{name}/{EVALS}/{split}.json",
                "evaluation",
                "evaluate the version again (that rewrites it), or delete the file",
            )
            for split in sorted(splits)
        }
        return VersionInfo(
            name=name,
            created=created if isinstance(created, str) else None,
            step=step if isinstance(step, int) else None,
            evals=evals,
            aliases=tuple(sorted(aliases)),
        )

    def _aliases_by_version(self) -> dict[str, tuple[str, ...]]:
        on: dict[str, list[str]] = {}
        for alias in self.aliases().values():
            on.setdefault(alias.version, []).append(alias.name)
        return {version: tuple(sorted(names)) for version, names in on.items()}

    def _parse_alias(self, name: str, data: bytes, token: str) -> Alias:
        doc = self._decode(_alias_key(name), data, "alias", _alias_fix(self.store, name))
        fields = {"version": str, "revision": int, "updated": str, "by": str, "reason": str}
        wrong = [key for key, kind in fields.items() if not isinstance(doc.get(key), kind)]
        if doc.get("alias") != name or wrong:
            what = f"fields {', '.join(wrong)} missing or mistyped" if wrong else "another alias"
            raise RegistryError(
                f"{self.store.url(_alias_key(name))} is not a valid alias ({what}); it is left "
                f"as it is; fix: {_alias_fix(self.store, name)}"
            )
        return Alias(
            name=name,
            version=doc["version"],
            revision=doc["revision"],
            updated=doc["updated"],
            by=doc["by"],
            reason=doc["reason"],
            token=token,
        )

    def _read_promotion(self, key: str) -> Promotion:
        fix = "move it out of promotions/ (log entries are never rewritten)"
        doc = self._read_json(key, "promotion log entry", fix)
        try:
            return Promotion(
                key=key,
                alias=str(doc["alias"]),
                from_version=None if doc["from"] is None else str(doc["from"]),
                to_version=str(doc["to"]),
                by=str(doc["by"]),
                at=str(doc["at"]),
                reason=str(doc["reason"]),
                outcome=str(doc["outcome"]),
                action=str(doc["action"]),
                winner=doc.get("winner"),
            )
        except KeyError as err:
            raise RegistryError(
                f"{self.store.url(key)} is not a valid promotion log entry (no {err}); it is "
                f"left as it is; fix: {fix}"
            ) from None

    def _read_optional(self, key: str, what: str, fix: str) -> dict[str, Any] | None:
        try:
            return self._read_json(key, what, fix)
        except NotFound:
            return None

    def _read_json(self, key: str, what: str, fix: str) -> dict[str, Any]:
        return self._decode(key, self.store.get_bytes(key), what, fix)

    def _decode(self, key: str, data: bytes, what: str, fix: str) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"not JSON: {err}"
        else:
            if isinstance(doc, dict):
                return doc
            problem = f"a JSON {type(doc).__name__}, not an object"
        raise RegistryError(
            f"{self.store.url(key)} is not a valid {what} ({problem}); it is left as it is; "
            f"fix: {fix}"
        )

    def _no_version(self, name: str) -> str:
        names = self.version_names()
        known = ", ".join(names[-5:]) if names else "none"
        return (
            f"no version {name!r} in {self.store.url()} (no {VERSIONS}/{name}/{BUNDLE}); "
            f"fix: name an exported version (the newest: {known})"
        )


@dataclass(frozen=True)
class _Attempt:
    """One call's move, as the log records it."""

    alias: str
    before: str | None
    to: str
    by: str
    reason: str
    action: str


def _alias_fix(store: Store, name: str) -> str:
    return (
        f"restore it from the last won move of {name} in {store.url(PROMOTIONS)}, or delete it "
        f"and promote again with --expect none"
    )


def _unchanged(now: Alias | None, before: Alias | None) -> bool:
    """Whether a lost swap left the alias as it was (S3's 409 for a concurrent write that
    itself failed): then nobody won, and the move is tried again."""
    if now is None or before is None:
        return now is before
    return now.token == before.token


def _version_names(keys: Iterable[str]) -> list[str]:
    return sorted(
        parts[1]
        for parts in (key.split("/") for key in keys)
        if len(parts) == 3 and parts[2] == BUNDLE
    )


def _bundle_key(version: str) -> str:
    return f"{VERSIONS}/{version}/{BUNDLE}"


def _alias_key(name: str) -> str:
    return f"{ALIASES}/{name}.json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parallel(read: Callable[[str], T], items: list[str]) -> list[T]:
    """`read` over `items` on a few threads, in order (small objects: latency, not bandwidth).
    The items go in one chunk per thread, not one task each: a thousand task submissions
    would cost more than a thousand local reads."""
    if len(items) <= 1:
        return [read(item) for item in items]
    workers = min(_READERS, len(items))
    chunks = [items[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda chunk: [read(item) for item in chunk], chunks))
    # Chunk i holds items i, i + workers, ...: interleave the results back into order.
    return [done[i % workers][i // workers] for i in range(len(items))]
