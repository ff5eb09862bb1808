"""Subject syntax, overlap and subset, as tables."""
import pytest

from stack.subjects import name_problem, subject_is_subset, subject_problem, subjects_overlap


@pytest.mark.parametrize("name, ok", [
    ("iot-sensors", True), ("app_logs", True), ("EVENTS", True), ("a.b", False), ("a*", False), ("a>", False),
    ("a b", False), ("a/b", False), ("a\\b", False), ("", False), ("x" * 256, False), ("tab\t", False),
])
def test_names(name, ok):
    assert (name_problem(name) is None) == ok


@pytest.mark.parametrize("subject, ok", [
    ("sensors.>", True), ("sensors.*.room1", True), ("a", True), (">", True), ("*", True),
    ("a..b", False), (".a", False), ("a.", False), ("a.>.b", False), ("a b", False), ("", False),
])
def test_subject_syntax(subject, ok):
    assert (subject_problem(subject) is None) == ok


@pytest.mark.parametrize("a, b, overlap", [
    ("sensors.>", "iot.>", False), ("sensors.>", "sensors.temperature.room1", True), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("a.>", "a", False), ("*.b", "a.*", True), (">", "x.y", True), ("a.b", "a.c", False),
    ("logs.>", "events.>", False), ("a.*.c", "a.b.*", True),
])
def test_overlap(a, b, overlap):
    assert subjects_overlap(a, b) == overlap
    assert subjects_overlap(b, a) == overlap


@pytest.mark.parametrize("inner, outer, subset", [
    ("sensors.temperature.>", "sensors.>", True), ("sensors.>", "sensors.>", True), ("iot.sensors.>", "iot.>", True),
    ("sensors.>", "sensors.*", False), ("sensors.a", "sensors.*", True), ("sensors", "sensors.>", False),
    ("logs.>", "sensors.>", False), ("a.*", "a.>", True), ("a.>", "a.*", False), ("a.b.c", "a.*.c", True),
    ("a.*.c", "a.b.c", False),
])
def test_subset(inner, outer, subset):
    assert subject_is_subset(inner, outer) == subset
