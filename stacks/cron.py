"""CronJob schedules as Kubernetes reads them, checked before anything is deployed.

The syntax is the Kubernetes CronJob documentation's ("Schedule syntax",
kubernetes.io/docs/concepts/workloads/controllers/cron-jobs): five fields (minute 0-59, hour
0-23, day of month 1-31, month 1-12, day of week 0-6 from Sunday, or the names sun..sat and
jan..dec), each `*` (or `?`, its synonym), a value, a range `a-b`, a list `a,b-c` or a step
`*/n` / `a-b/n` / `a/n` ("Vixie cron" steps), or one of the macros @yearly (@annually),
@monthly, @weekly, @daily (@midnight) and @hourly. A time zone belongs in the CronJob's
`timeZone`, never in the schedule (`CRON_TZ=`/`TZ=` are refused there). The API server's
validation is looser in places (it parses with robfig/cron); this one refuses anything the
documentation does not describe, so a schedule that passes means what it says.
"""

from __future__ import annotations

import re

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (what, lowest, highest, names of lowest.. in order)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_STEP = re.compile(r"^(?P<range>[^/]+)(/(?P<step>[0-9]+))?$")


def cron_problem(schedule: str) -> str | None:
    """Why Kubernetes would not run `schedule` as written, with the fix; None when it would."""
    text = schedule.strip()
    if text.startswith("@"):
        if text.lower() in MACROS:
            return None
        return f"unknown macro {text!r}; use one of {', '.join(MACROS)} or 5 cron fields"
    if re.match(r"^(CRON_)?TZ=", text):
        return "put the time zone in time_zone, not in the schedule"
    fields = text.split()
    if len(fields) != len(_FIELDS):
        return (
            f"has {len(fields)} fields, not 5 (minute hour day-of-month month day-of-week), "
            "e.g. '0 2 * * *' for 02:00 every day"
        )
    for value, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in value.split(","):
            problem = _part_problem(part, low, high, names)
            if problem is not None:
                return f"{what} {value!r}: {problem}"
    return None


def _part_problem(part: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    match = _STEP.match(part)
    if match is None:
        return f"{part!r} is not a value, range or step"
    step = match.group("step")
    if step is not None and not 1 <= int(step) <= high - low + 1:
        return f"step {step} is not between 1 and {high - low + 1}"
    span = match.group("range")
    if span in ("*", "?"):
        return None
    ends = span.split("-")
    if len(ends) > 2:
        return f"{span!r} is not a range a-b"
    numbers = []
    for end in ends:
        number = _value(end, names)
        if number is None or not low <= number <= high:
            shown = f" or {names[0]}-{names[-1]}" if names else ""
            return f"{end!r} is not in {low}-{high}{shown}"
        numbers.append(number)
    if len(numbers) == 2 and numbers[0] > numbers[1]:
        return f"range {span!r} runs backwards"
    return None


def _value(text: str, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    lowered = text.lower()
    if lowered in names:
        # Months count from 1, days of the week from 0 (Sunday).
        return names.index(lowered) + (1 if names is _MONTHS else 0)
    return None
