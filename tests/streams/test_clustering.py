"""The grow and shrink decisions (streams/clustering.py), tabled: facts and progress in, the next step out."""
import pytest

from streams import clustering as c
from streams.growth import meta_from_answers

S = c.StreamFact
HEALTHY = {"n0": True, "n1": True, "n2": True}


def facts(streams=(), clustered=True, leader="n1", peers=None):
    return c.Facts(clustered, leader if clustered else None, dict(HEALTHY if peers is None else peers) if clustered
                   else {}, {s.name: s for s in streams})


def progress(snapshots=None, snapshotted=None, restored=()):
    return c.GrowProgress(snapshotted=snapshotted, snapshots=snapshots or {}, restored=list(restored))


SNAP = {"messages": 10, "last_seq": 12}
R1 = dict(leader="n0", peers=("n0",))
R3 = dict(replicas=3, leader="n0", peers=("n0", "n1", "n2"))


@pytest.mark.parametrize("existing, action", [
    (None, c.RESTORE),
    (S("a", messages=10, last_seq=12), c.ADOPT),                       # restored before an interruption
    (S("a"), c.REPLACE_EMPTY),                                         # made empty by an `up` before the restore
    (S("a", messages=0, last_seq=5), c.REFUSE),                        # held messages once: not ours to replace
    (S("a", messages=11, last_seq=13), c.REFUSE),                      # written to after the grow began
])
def test_restore_decision(existing, action):
    step = c.restore_decision("a", existing, SNAP)
    assert step.action == action
    if action == c.REFUSE:
        assert "Nothing was changed" in step.detail and "python -m streams backup a" in step.detail


@pytest.mark.parametrize("name, prog, now, expected", [
    ("first snapshot", progress(), facts([S("a", messages=10, last_seq=12), S("m", storage="memory")], False),
     (c.SNAPSHOT, "a")),
    ("all taken", progress({"a": SNAP}), facts([S("a", messages=10, last_seq=12), S("m", storage="memory")], False),
     (c.SNAPSHOTTED, None)),
    ("waiting for the up", progress({"a": SNAP}, ["a"]), facts([S("a", messages=10, last_seq=12)], False),
     (c.WAIT_FOR_UP, None)),
    ("written to since: again", progress({"a": SNAP}, ["a"]), facts([S("a", messages=11, last_seq=13)], False),
     (c.SNAPSHOT, "a")),
    ("a new stream before the up", progress({"a": SNAP}, ["a"]),
     facts([S("a", messages=10, last_seq=12), S("b")], False), (c.SNAPSHOT, "b")),
    ("a cluster without snapshots", progress(), facts([S("a")]), (c.REFUSE, None)),
    ("no meta leader", progress({"a": SNAP}, ["a"]), facts([], leader=None), (c.WAIT_HEALTHY, None)),
    ("a peer behind", progress({"a": SNAP}, ["a"]), facts([], peers={**HEALTHY, "n2": False}), (c.WAIT_HEALTHY, None)),
    ("restore", progress({"a": SNAP}, ["a"]), facts([]), (c.RESTORE, "a")),
    ("raise", progress({"a": SNAP}, ["a"], ["a"]), facts([S("a", messages=10, last_seq=12, **R1)]), (c.RAISE, "a")),
    ("removed after the restore", progress({"a": SNAP}, ["a"], ["a"]), facts([]), (c.REFUSE, "a")),
    ("catching up", progress({"a": SNAP}, ["a"], ["a"]), facts([S("a", current=False, lag=7, **R3)]),
     (c.WAIT_CURRENT, "a")),
    ("done", progress({"a": SNAP}, ["a"], ["a"]), facts([S("a", **R3)]), (c.DONE, None)),
    ("too few nodes", progress({"a": SNAP}, ["a"]), facts([], peers={"n0": True}), (c.REFUSE, None)),
])
def test_grow_next(name, prog, now, expected):
    step = c.grow_next(prog, now, 3)
    assert (step.action, step.stream) == expected, name
    if step.action == c.RAISE:
        assert step.replicas == 3


@pytest.mark.parametrize("name, now, expected", [
    ("standalone", facts([S("a")], False), (c.DONE, None, None)),
    ("no meta leader", facts([S("a", **R3)], leader=None), (c.WAIT_HEALTHY, None, None)),
    ("behind", facts([S("a", current=False, **R3)]), (c.WAIT_CURRENT, "a", None)),
    ("leader elsewhere", facts([S("a", replicas=3, leader="n2", peers=("n2", "n0", "n1"))]), (c.STEPDOWN, "a", "n0")),
    ("R1 on another node", facts([S("a", leader="n2", peers=("n2",))]), (c.RAISE, "a", None)),
    ("leader here", facts([S("a", **R3)]), (c.LOWER, "a", None)),
    ("streams in place: the meta leader to n0", facts([S("a", **R1)]), (c.META_STEPDOWN, None, "n0")),
    ("then the last peer first", facts([S("a", **R1)], leader="n0"), (c.REMOVE_PEER, None, "n2")),
    ("then the next", facts([S("a", **R1)], leader="n0", peers={"n0": True, "n1": True}), (c.REMOVE_PEER, None, "n1")),
    ("alone", facts([S("a", **R1)], leader="n0", peers={"n0": True}), (c.DONE, None, None)),
])
def test_shrink_next(name, now, expected):
    step = c.shrink_next(now, "n0")
    assert (step.action, step.stream, step.node) == expected, name


def test_shrink_refuses_a_node_the_cluster_does_not_have():
    step = c.shrink_next(facts([]), "nats-0")
    assert step.action == c.REFUSE and "n0, n1, n2" in step.detail


def test_stream_facts_from_stream_info():
    info = {"config": {"name": "a", "storage": "file", "num_replicas": 3},
            "state": {"messages": 5, "last_seq": 9},
            "cluster": {"leader": "n1", "replicas": [{"name": "n0", "current": True, "lag": 0},
                                                     {"name": "n2", "current": False, "lag": 4}]}}
    fact = S.of(info)
    assert (fact.leader, fact.peers, fact.current, fact.lag, fact.replicas) == ("n1", ("n1", "n0", "n2"), False, 4, 3)
    standalone = S.of({"config": {"name": "b"}, "state": {}, "cluster": {"leader": "homelab-local"}})
    assert standalone.current and standalone.peers == ("homelab-local",)
    joining = S.of({**info, "cluster": {"leader": "n1", "replicas": [{"name": "n0", "current": True}]}})
    assert not joining.current   # R3 with one replica listed so far
    offline = S.of({**info, "cluster": {"leader": "n1", "replicas": [{"name": "n0", "current": True, "offline": True}]}})
    assert not offline.current


def test_the_meta_group_is_the_leader_s_view():
    def answer(name, leader, replicas, size=None):
        return {"server": {"name": name}, "data": {"meta_cluster": {
            "leader": leader, "replicas": replicas, "cluster_size": len(replicas) + 1 if size is None else size}}}
    answers = [answer("n0", "n2", [{"name": "n1", "current": False}, {"name": "n2", "current": True}]),
               answer("n2", "n2", [{"name": "n0", "current": True}, {"name": "n1", "current": True, "offline": True}])]
    assert meta_from_answers(answers) == ("n2", {"n2": True, "n0": True, "n1": False})
    assert meta_from_answers([answer("n0", None, [{"name": "n1"}])]) == (None, {"n0": False, "n1": False})
    # A leader just elected that does not list the group it counts yet; a removed node answers without a group.
    assert meta_from_answers([answer("n0", "n0", [], size=2), {"server": {"name": "n2"}, "data": {}}]) == \
        (None, {"n0": False, "n2": False})
