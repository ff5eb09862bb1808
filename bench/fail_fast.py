"""Benchmark: how fast `python -m streams backup` gives up, against a backup that succeeds, in the same run.

    .venv/bin/python bench/fail_fast.py [--rounds 3]

Three whole commands (each a fresh process, as a person or a cron job runs it), `--to` a folder:
- baseline: the backup of an empty stream on a local server that answers;
- NATS down: the same command pointed at a free port nobody listens on;
- refused password: a local server with auth on, the admin user with a wrong password.
Prints the median seconds of each and its ratio to the baseline. Target: both failures within 5 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stack.settings import load_settings  # noqa: E402
from stack.users import parse_auth, plan_users  # noqa: E402
from streams.local.server import free_port, local_layout, start_server  # noqa: E402
from streams.local.users import write_local_auth  # noqa: E402
from tests.provider_harness import RawJetStream  # noqa: E402

TARGET_SECONDS = 5.0


def timed(argv: list[str], env: dict, folder: Path) -> tuple[float, int]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams", *argv, "--to", str(folder)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start, done.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_USER", "NATS_PASSWORD")}
    settings = load_settings({})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        open_layout = local_layout(tmp / "open", client_port=free_port(), monitoring_port=free_port())
        auth = parse_auth({"enabled": True}, admin="admin")
        include, _ = write_local_auth(tmp / "secured", plan_users(auth, (), [], admin="admin"), "nats://127.0.0.1")
        secured_layout = replace(local_layout(tmp / "secured", client_port=free_port(), monitoring_port=free_port()),
                                 auth_include=include)
        with start_server(settings, open_layout, tmp / "open") as open_server, \
                start_server(replace(settings, auth=auth), secured_layout, tmp / "secured") as secured:
            RawJetStream(open_server.client_url).api("$JS.API.STREAM.CREATE.s", {"name": "s", "subjects": ["s.>"]})
            cases = {
                "baseline (succeeds)": (["backup", "s", "--server", open_server.client_url], env, 0),
                "NATS down": (["backup", "s", "--server", f"nats://127.0.0.1:{free_port()}"], env, 1),
                "refused password": (["backup", "s", "--server", secured.client_url],
                                     {**env, "NATS_USER": "admin", "NATS_PASSWORD": "wrong"}, 1),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            for r in range(args.rounds):
                for name, (argv, case_env, expected) in cases.items():
                    seconds, code = timed(argv, case_env, tmp / f"out-{r}-{len(times[name])}-{name[:4]}")
                    if code != expected:
                        print(f"{name}: exit {code}, expected {expected}", file=sys.stderr)
                        return 1
                    times[name].append(seconds)
    base = statistics.median(times["baseline (succeeds)"])
    print(f"{'case':22s} {'median s':>9s} {'x baseline':>11s} {'target':>8s}")
    for name, values in times.items():
        median = statistics.median(values)
        target = "" if name.startswith("baseline") else ("met" if median <= TARGET_SECONDS else "MISSED")
        print(f"{name:22s} {median:9.2f} {median / base:11.2f} {target:>8s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
