"""CronJob schedules as the Kubernetes CronJob documentation describes them: what is accepted,
and a one-line reason for what is not."""

from __future__ import annotations

import pytest

from mlstack.stacks.cron import cron_problem


@pytest.mark.parametrize(
    "schedule",
    [
        "0 2 * * *",
        "*/15 0-23/2 1,15 jan-mar mon-fri",
        "0 0 13 * 5",
        "0 3 ? * SUN",
        "5 4 * DEC *",
        "0 0-12/3 * * *",
        "30 1/2 * * *",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ],
)
def test_documented_schedules_are_accepted(schedule: str) -> None:
    assert cron_problem(schedule) is None


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("0 2 * *", "has 4 fields, not 5"),
        ("0 0 2 * * *", "has 6 fields, not 5"),
        ("60 * * * *", "minute '60': '60' is not in 0-59"),
        ("0 24 * * *", "hour '24': '24' is not in 0-23"),
        ("0 0 0 * *", "day of month '0': '0' is not in 1-31"),
        ("0 0 * 13 *", "month '13': '13' is not in 1-12 or jan-dec"),
        ("0 0 * * 7", "day of week '7': '7' is not in 0-6 or sun-sat"),
        ("0 0 * * funday", "day of week 'funday'"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("*/0 * * * *", "step 0 is not between 1 and 60"),
        ("1-2-3 * * * *", "is not a range a-b"),
        ("0,,5 * * * *", "'' is not a value, range or step"),
        ("@every 1h", "unknown macro '@every 1h'"),
        ("@reboot", "unknown macro"),
        ("CRON_TZ=UTC 0 2 * * *", "put the time zone in time_zone"),
    ],
)
def test_a_bad_schedule_says_which_field_and_why(schedule: str, reason: str) -> None:
    problem = cron_problem(schedule)
    assert problem is not None and reason in problem, problem
