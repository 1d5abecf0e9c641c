"""Team object prefixes in the shared buckets: what makes one safe to grant on.

A team reads and writes `<prefix>/...` in the checkpoints and models buckets; every cloud's
grant (an S3 resource ARN, a GCS IAM condition on the object name) ends the prefix with '/'.
A prefix that is empty or a wildcard would grant the whole bucket, and two teams' prefixes that
nest would let one team write the other's objects.
"""

from __future__ import annotations

import re

_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot scope a team's objects, or None when it can."""
    if prefix.strip("/*. ") == "":
        return "an empty or wildcard prefix would grant the whole bucket"
    if not _PREFIX.match(prefix) or any(s in (".", "..") for s in prefix.split("/")):
        return (
            "not a plain path: use lowercase letters, digits, '.', '_' and '-' in segments "
            "separated by '/', with no leading or trailing '/', no '.' or '..' segment and no "
            "wildcards"
        )
    return None


def prefixes_nest(a: str, b: str) -> bool:
    """Whether one prefix's objects include the other's ('a' and 'a/b' nest; 'a' and 'ab' do
    not, because each grant ends in '/')."""
    return (a + "/").startswith(b + "/") or (b + "/").startswith(a + "/")
