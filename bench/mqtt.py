"""Benchmark: devices publishing over MQTT into a declared stream, against NATS publishes into the same stream, in
the same run, on the rendered config (the homelab stack with MQTT and auth on, a device user as generated).

    .venv/bin/python bench/mqtt.py [--msgs 20000] [--size 256]

Each rate counts from the first publish until the stream holds every message (QoS 1: and every PUBACK is in):
- MQTT QoS 0 (Eclipse Paho 2.1.0, MQTT 3.1.1) against NATS core publishes (nats-py, no ack): fire and forget both;
- MQTT QoS 1 (Paho, 256 in flight) against JetStream publishes with acks (nats-py, a window of 256).
Prints each rate and the MQTT/NATS ratio. The rates are the Python clients' as much as the server's: compare the
ratios, which share the client language and the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from render.manifests import mqtt_connection  # noqa: E402
from stack.catalog import load_catalog  # noqa: E402
from stack.loader import backup_streams  # noqa: E402
from stack.settings import load_settings  # noqa: E402
from stack.users import plan_users  # noqa: E402
from streams.jetstream import close_all_clients  # noqa: E402
from streams.local.apply import apply_catalog  # noqa: E402
from streams.local.server import local_layout, start_server  # noqa: E402
from streams.local.users import write_local_auth  # noqa: E402
from tests.stack.test_settings import homelab_raw  # noqa: E402

WINDOW = 256


async def stream_count(url: str, login: dict) -> int:
    nc = await nats.connect(url, **login)
    info = await nc.jetstream().stream_info("iot-sensors")
    await nc.close()
    return info.state.messages


def wait_for(url: str, login: dict, count: int) -> None:
    while asyncio.run(stream_count(url, login)) < count:
        time.sleep(0.01)


def mqtt_rate(port: int, password: str, qos: int, msgs: int, payload: bytes, url: str, login: dict,
              already: int) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{qos}", protocol=mqtt.MQTTv311)
    client.username_pw_set("bench-device", password)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda c, u, mid, rc, props: acked.release()
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(5)
    start = time.perf_counter()
    for _ in range(msgs):
        client.publish(f"sensors/bench/qos{qos}", payload, qos=qos)
    for _ in range(msgs):
        acked.acquire()
    wait_for(url, login, already + msgs)
    rate = msgs / (time.perf_counter() - start)
    client.disconnect()
    client.loop_stop()
    return rate


async def nats_rates(url: str, login: dict, msgs: int, payload: bytes, already: int) -> tuple[float, float]:
    nc = await nats.connect(url, **login)
    start = time.perf_counter()
    for _ in range(msgs):
        await nc.publish("sensors.bench.core", payload)
    await nc.flush()
    while await stream_count(url, login) < already + msgs:
        await asyncio.sleep(0.01)
    core = msgs / (time.perf_counter() - start)
    js = nc.jetstream()
    start = time.perf_counter()
    pending = []
    for _ in range(msgs):
        pending.append(asyncio.ensure_future(js.publish("sensors.bench.acked", payload)))
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    acked = msgs / (time.perf_counter() - start)
    await nc.close()
    return core, acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msgs", type=int, default=20000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    payload = b"x" * args.size
    raw = {**homelab_raw(), "mqtt": {"enabled": True},
           "auth": {"enabled": True, "users": {"bench-device": {"mqtt": True, "publish": ["sensors.>"]}}}}
    raw["streams"]["iot-sensors"] = {**raw["streams"]["iot-sensors"], "consumers": {}}
    settings = load_settings(raw)
    catalog = load_catalog(raw["streams"], store_limits=settings.jetstream.store_limits)
    users = plan_users(settings.auth, catalog, backup_streams(settings, catalog, ()), mqtt_enabled=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        layout = local_layout(workdir)
        url = f"nats://127.0.0.1:{layout.client_port}"
        include, passwords = write_local_auth(workdir, users, url,
                                              mqtt=mqtt_connection(settings, "127.0.0.1", layout.mqtt_port))
        layout = replace(layout, auth_include=include)
        login = {"user": "admin", "password": passwords["admin"]}
        with start_server(settings, layout, workdir):
            apply_catalog(catalog, url, login=("admin", passwords["admin"]))
            close_all_clients()
            core, acked = asyncio.run(nats_rates(url, login, args.msgs, payload, 0))
            qos0 = mqtt_rate(layout.mqtt_port, passwords["bench-device"], 0, args.msgs, payload, url, login,
                             2 * args.msgs)
            qos1 = mqtt_rate(layout.mqtt_port, passwords["bench-device"], 1, args.msgs, payload, url, login,
                             3 * args.msgs)
    print(f"{args.msgs} messages of {args.size} B into iot-sensors (file), rendered config, auth on")
    print(f"NATS core publish (no ack):          {core:10,.0f} msg/s")
    print(f"MQTT QoS 0:                          {qos0:10,.0f} msg/s   QoS 0 / NATS core  {qos0 / core:.2f}")
    print(f"NATS JetStream publish with acks:    {acked:10,.0f} msg/s")
    print(f"MQTT QoS 1 (PUBACK each):            {qos1:10,.0f} msg/s   QoS 1 / NATS acked {qos1 / acked:.2f}")


if __name__ == "__main__":
    main()
