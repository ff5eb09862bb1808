"""The cron dialect Kubernetes CronJobs and Longhorn RecurringJobs accept (robfig/cron ParseStandard)."""
import pytest

from stack.cron import cron_problem

VALID = ["0 3 * * *", "0 */6 * * *", "*/15 * * * *", "0 0 1 1 *", "59 23 31 12 6", "0 0 * * 0", "5 4 * * sun",
         "0 0 1 JAN-MAR MON-FRI", "0 9-17/2 * * 1-5", "0,30 * * * *", "0 3 ? * *", "5/10 * * * *", "@daily",
         "@midnight", "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@every 6h", "@every 1h30m",
         "  0 3 * * *  "]
INVALID = [
    ("61 */6 * * *", "61 is above the minute field's maximum 59"),
    ("0 27 * * *", "27 is above the hour field's maximum 23"),
    ("*/0 * * * *", "step 0 in the minute field"),
    ("0 0 0 * *", "0 is below the day of month field's minimum 1"),
    ("0 0 * 13 *", "13 is above the month field's maximum 12"),
    ("0 0 * * 7", "7 is above the day of week field's maximum 6"),
    ("0 5-2 * * *", "runs backwards"),
    ("0 3 * *", "expected 5 fields"),
    ("0 3 * * * *", "expected 5 fields"),
    ("0 3 L * *", "'L' in the day of month field is not a number"),
    ("0 3 * * MON#2", "is not a number"),
    ("0 3 * * foo", "or one of sun"),
    ("*/x * * * *", "step 'x'"),
    ("@fortnightly", "unknown descriptor"),
    ("@every soon", "Go duration"),
    ("TZ=UTC 0 3 * * *", "time zone"),
    ("", "expected a cron schedule"),
    (3, "expected a cron schedule"),
]


@pytest.mark.parametrize("schedule", VALID)
def test_valid_schedules(schedule):
    assert cron_problem(schedule) is None


@pytest.mark.parametrize("schedule, fragment", INVALID)
def test_invalid_schedules_say_why(schedule, fragment):
    problem = cron_problem(schedule)
    assert problem is not None and fragment in problem, problem
