"""Backups to and from a plain folder, in the layout `nats stream backup STREAM DIR` writes and
`nats stream restore DIR` reads (nats-io/jsm.go snapshots.go: DIR/stream.tar.s2 and DIR/backup.json with
{"config", "state"} indented by two)."""
import json
import os
import signal
import stat
import subprocess
import sys

from streams.cli import main
from tests.provider_harness import RawJetStream
from tests.pulumi_harness import ROOT
from tests.streams.test_backup_signals import big_stream, wait_for
from tests.streams.test_backups import add_consumer_with_progress, all_messages, fill_stream


def test_backup_to_a_folder_restores_and_verifies(nats_server, tmp_path, capsys):
    source, target = nats_server(), nats_server()
    raw = RawJetStream(source.client_url)
    fill_stream(raw, n=25)
    add_consumer_with_progress(raw)
    folder = tmp_path / "backup"
    assert main(["backup", "iot-sensors", "--to", str(folder), "--server", source.client_url]) == 0
    assert f"{folder}/" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["backup.json", "stream.tar.s2"]  # the CLI's layout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700                                 # as jsm.go makes it
    meta = json.loads((folder / "backup.json").read_text())
    assert set(meta) == {"config", "state"} and meta["config"]["name"] == "iot-sensors"
    assert (folder / "backup.json").read_text().startswith('{\n  "config"')
    assert main(["restore", "iot-sensors", "--from", str(folder), "--server", target.client_url]) == 0
    assert all_messages(target.client_url, "iot-sensors") == all_messages(source.client_url, "iot-sensors")
    assert RawJetStream(target.client_url).consumer("iot-sensors", "processor")["ack_floor"]["stream_seq"] == 7
    assert main(["verify", "iot-sensors", "--from", str(folder)]) == 0
    assert "verified" in capsys.readouterr().out


def test_several_streams_go_to_a_folder_each_and_nothing_is_overwritten(nats_server, tmp_path, capsys):
    server = nats_server()
    raw = RawJetStream(server.client_url)
    fill_stream(raw, n=5)
    fill_stream(raw, name="app-logs", subjects=("logs.>",), n=3)
    folder = tmp_path / "all"
    assert main(["backup", "--all", "--to", str(folder), "--server", server.client_url]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["app-logs", "iot-sensors"]
    before = (folder / "iot-sensors" / "stream.tar.s2").read_bytes()
    raw.api("$JS.API.STREAM.PURGE.iot-sensors")
    assert main(["backup", "iot-sensors", "--to", str(folder / "iot-sensors"), "--server", server.client_url]) == 1
    assert "already holds a backup" in capsys.readouterr().err
    assert (folder / "iot-sensors" / "stream.tar.s2").read_bytes() == before  # the good one is untouched


def test_a_folder_the_nats_cli_wrote_restores_here(nats_server, tmp_path):
    """As jsm.go writes it: Go's json.MarshalIndent of {"config", "state"} (sorted keys, no final newline)."""
    source, target = nats_server(), nats_server()
    fill_stream(RawJetStream(source.client_url), n=12)
    made_here = tmp_path / "here"
    assert main(["backup", "iot-sensors", "--to", str(made_here), "--server", source.client_url]) == 0
    cli = tmp_path / "cli"
    cli.mkdir(mode=0o700)
    (cli / "stream.tar.s2").write_bytes((made_here / "stream.tar.s2").read_bytes())
    doc = json.loads((made_here / "backup.json").read_text())
    (cli / "backup.json").write_text(json.dumps({"config": doc["config"], "state": doc["state"]}, indent=2,
                                                sort_keys=True))
    assert main(["restore", "iot-sensors", "--from", str(cli), "--server", target.client_url]) == 0
    assert RawJetStream(target.client_url).stream("iot-sensors")["state"]["messages"] == 12


def test_a_stopped_folder_backup_leaves_no_files(nats_server, tmp_path):
    server = nats_server()
    big_stream(RawJetStream(server.client_url), mib=48)
    folder = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "streams", "backup", "big", "--to", str(folder), "--server",
                             server.client_url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(lambda: (folder / "stream.tar.s2.partial").exists() and
             (folder / "stream.tar.s2.partial").stat().st_size > 1 << 20, "the archive to grow", process=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not folder.exists()  # it made the folder, and took it away again


def test_bucket_or_folder_not_both(capsys):
    import pytest
    with pytest.raises(SystemExit) as exit_:
        main(["backup", "x", "--bucket", "b", "--to", "/tmp/x"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
