"""Which server a command talks to (streams/cli/target.py): named, or the running make dev, never the LAN by default.
The decision is a table; the discovery of a running make dev and the commands' first line run for real."""
import pytest

from streams.cli import main, target
from streams.cli.target import NO_TARGET, NoTarget, RunningDev, StackAddress, resolve_target, running_devs
from streams.local.server import free_port

DEV = RunningDev("homelab", "nats://127.0.0.1:14222", "http://127.0.0.1:18222", "/x/.local/homelab")
OTHER = RunningDev("other", "nats://127.0.0.1:24222", "http://127.0.0.1:28222", "/x/.local/other")


def stack_address(name):
    return {"homelab": StackAddress("nats://10.0.0.248:4222", 8222), "none": StackAddress(None, 8222)}[name]


@pytest.mark.parametrize("server, monitor, stack, env, running, expected", [
    ("nats://a:1", None, None, {}, [DEV], ("nats://a:1", None, "--server", "homelab")),
    ("nats://a:1", "http://a:2", "other", {}, [], ("nats://a:1", "http://a:2", "--server", "other")),
    (None, None, None, {"NATS_URL": "nats://b:1", "NATS_MONITOR_URL": "http://b:2"}, [DEV],
     ("nats://b:1", "http://b:2", "NATS_URL", "homelab")),
    (None, None, "homelab", {}, [DEV],
     ("nats://10.0.0.248:4222", "http://10.0.0.248:8222", "the cluster of stack homelab, named by --stack", "homelab")),
    (None, None, None, {}, [DEV],
     ("nats://127.0.0.1:14222", "http://127.0.0.1:18222", "the running make dev of stack homelab, /x/.local/homelab",
      "homelab")),
    (None, None, None, {}, [OTHER], ("nats://127.0.0.1:24222", "http://127.0.0.1:28222",
                                     "the running make dev of stack other, /x/.local/other", "other")),
])
def test_the_target_is_what_was_named_else_the_running_make_dev(server, monitor, stack, env, running, expected):
    t = resolve_target(server=server, monitor=monitor, stack=stack, environ=env, running=running,
                       stack_address=stack_address)
    assert (t.nats_url, t.monitor_url, t.source, t.stack) == expected


@pytest.mark.parametrize("stack, running, says", [
    (None, [], NO_TARGET),
    (None, [DEV, OTHER], "several make dev servers run in this checkout"),
    ("none", [], "stack none has neither natsUrl nor a load balancer address"),
])
def test_nothing_named_and_nothing_running_is_an_error_not_the_lan(stack, running, says):
    with pytest.raises(NoTarget, match=says.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")[:60]):
        resolve_target(server=None, monitor=None, stack=stack, environ={}, running=running,
                       stack_address=stack_address)


def test_a_password_in_the_url_is_not_on_the_first_line():
    t = resolve_target(server="nats://u:s3cret@127.0.0.1:1", monitor=None, stack=None, environ={}, running=[])
    assert "s3cret" not in t.line() and t.line().startswith("NATS: nats://u:***@127.0.0.1:1 (--server)")


@pytest.mark.parametrize("url, local", [("nats://127.0.0.1:1", True), ("nats://localhost:1,nats://[::1]:2", True),
                                        ("nats://10.0.0.248:4222", False), ("nats://127.0.0.1:1,nats://nas:2", False)])
def test_local_targets(url, local):
    assert resolve_target(server=url, monitor=None, stack=None, environ={}, running=[]).local is local


@pytest.fixture
def no_local(tmp_path, monkeypatch):
    monkeypatch.setattr(target, "LOCAL", tmp_path / ".local")
    for var in ("NATS_URL", "NATS_MONITOR_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / ".local"


@pytest.mark.parametrize("argv", [["check"], ["check", "--json"], ["backup", "iot-sensors", "--to", "/tmp/x"],
                                  ["restore", "iot-sensors", "--from", "/tmp/x"]])
def test_commands_without_a_target_stop_and_say_how_to_name_one(no_local, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no server named" in err and "--server" in err and "make dev" in err


def test_backups_need_a_named_s3_store(no_local, capsys):
    assert main(["list-backups", "--bucket", "nats-backups"]) == 1
    assert "no S3 store named: pass --endpoint URL or set AWS_ENDPOINT_URL" in capsys.readouterr().err


def test_a_running_make_dev_is_found_and_named_on_the_first_line(no_local, capsys):
    from tests.streams.test_check_and_local import foreground_dev
    port, http_port = free_port(), free_port()
    folder = no_local / "homelab"
    with foreground_dev(port, http_port, folder):
        assert running_devs(no_local) == [RunningDev("homelab", f"nats://127.0.0.1:{port}",
                                                     f"http://127.0.0.1:{http_port}", str(folder))]
        code = main(["check", "--json", "--no-round-trip"])
        out, err = capsys.readouterr()
        assert err.splitlines()[0] == (f"NATS: nats://127.0.0.1:{port} (the running make dev of stack homelab, "
                                       f"{folder})")
        assert code == 0, out
    # Stopped: its file is gone, and nothing is found any more.
    assert not (folder / "dev.json").exists() and running_devs(no_local) == []


def test_a_file_left_by_a_killed_make_dev_is_ignored(no_local):
    folder = no_local / "homelab"
    folder.mkdir(parents=True)
    target.write_running_dev(folder, "homelab", "nats://127.0.0.1:1", "http://127.0.0.1:2")
    assert running_devs(no_local) == []   # nobody holds the folder's lock
