"""Cron schedules as the two consumers of ours parse them: Kubernetes CronJobs (kubernetes/kubernetes
pkg/apis/batch/validation validates `spec.schedule` with robfig/cron/v3 `ParseStandard` and refuses
TZ=/CRON_TZ= in it) and Longhorn RecurringJobs (longhorn/longhorn-manager datastore/longhorn.go
`cron.ParseStandard`, robfig/cron v1.2.0). Both read five fields or a descriptor, with the rules of
robfig/cron's parser.go `getRange`: `*` or `?`, `N`, `N-M`, each with an optional `/STEP` (STEP > 0; `N/STEP`
runs to the field's maximum), comma lists, month and weekday names, bounds per field.

No maintained Python library parses exactly this dialect (croniter accepts 7 as Sunday, seconds, `L`
and `#`, which these refuse), so it is written here and tested with a table (tests/stack/test_cron.py).
"""
from __future__ import annotations

import re

# (name, min, max, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}),
)
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _number(text: str, names: dict, what: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{text!r} in the {what} field is not a number" + (
            f" or one of {', '.join(names)}" if names else ""))
    return int(text)


def _check_range(expr: str, what: str, low: int, high: int, names: dict) -> None:
    range_part, _, step = expr.partition("/")
    if "/" in expr:
        if not step.isdigit():
            raise ValueError(f"step {step!r} in the {what} field is not a whole number")
        if int(step) == 0:
            raise ValueError(f"step 0 in the {what} field: a step must be at least 1")
    if range_part in ("*", "?"):
        return
    start_text, dash, end_text = range_part.partition("-")
    start = _number(start_text, names, what)
    end = _number(end_text, names, what) if dash else (high if step else start)
    if start < low:
        raise ValueError(f"{start} is below the {what} field's minimum {low}")
    if end > high:
        raise ValueError(f"{end} is above the {what} field's maximum {high}")
    if start > end:
        raise ValueError(f"the range {range_part} in the {what} field runs backwards")


def cron_problem(schedule: object) -> str | None:
    """Why `schedule` would be refused by Kubernetes or Longhorn, or None when both accept it."""
    if not isinstance(schedule, str) or not schedule.strip():
        return "expected a cron schedule such as \"0 3 * * *\" or \"@daily\""
    text = schedule.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "a time zone in the schedule is refused by Kubernetes; schedules run in the cluster's time zone"
    if text.startswith("@"):
        if text in DESCRIPTORS:
            return None
        if text.startswith("@every "):
            return None if _GO_DURATION.match(text[len("@every "):].strip()) else \
                "@every needs a Go duration such as \"@every 6h\""
        return f"unknown descriptor {text!r}; use one of {', '.join(DESCRIPTORS)} or @every <duration>"
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for field, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in field.split(","):
            try:
                _check_range(part, what, low, high, names)
            except ValueError as exc:
                return str(exc)
    return None
