"""The stack-file fuzz of issue 9, through the real program under mocks: every bad input fails preview with
one clean message naming the key (pulumi.RunError, no traceback), and every valid one is accepted."""
import pulumi
import pytest

from tests.pulumi_harness import as_manifest, encode_config, run_program, stack_config

HOMELAB = stack_config("homelab")


def with_config(**overrides) -> dict:
    return {**HOMELAB, **encode_config({f"homelab-nats:{k}": v for k, v in overrides.items()})}


def plain(key: str, text: str) -> dict:
    """A scalar as the engine hands it over: text, whatever YAML type it had."""
    return {**HOMELAB, f"homelab-nats:{key}": text}


BAD = [
    # cron fields out of range, for the CronJob and for Longhorn
    (with_config(backups={"enabled": True, "schedule": "61 */6 * * *"}), "homelab-nats:backups.schedule",
     "61 is above the minute field's maximum 59"),
    (with_config(backups={"enabled": True, "schedule": "0 27 * * *"}), "homelab-nats:backups.schedule",
     "27 is above the hour"),
    (with_config(volumeSnapshots={"cron": "*/0 * * * *"}), "homelab-nats:volumeSnapshots.cron", "step 0"),
    (with_config(volumeSnapshots={"cron": "0 0 * * 7"}), "homelab-nats:volumeSnapshots.cron", "maximum 6"),
    # load balancer addresses no one can announce
    (with_config(loadBalancer={"ip": "0.0.0.0"}), "homelab-nats:loadBalancer.ip", "unspecified address"),
    (with_config(loadBalancer={"ip": "224.0.0.1"}), "homelab-nats:loadBalancer.ip", "multicast address"),
    (with_config(loadBalancer={"ip": "127.0.0.1"}), "homelab-nats:loadBalancer.ip", "loopback address"),
    (with_config(loadBalancer={"ip": "169.254.1.1"}), "homelab-nats:loadBalancer.ip", "link-local address"),
    (with_config(loadBalancer={"ip": "255.255.255.255"}), "homelab-nats:loadBalancer.ip", "broadcast address"),
    # stores nats-server cannot hold, memory too small to start
    (with_config(jetstream={"fileStore": "100Ei"}), "homelab-nats:jetstream.fileStore", "more bytes than nats-server"),
    (with_config(resources={"limits": {"memory": "16Mi"}, "requests": {"memory": "8Mi"}}),
     "homelab-nats:resources.limits.memory", "too small for nats-server to run"),
    # storeDir on another volume's mount path, or over the image's folders
    (with_config(jetstream={"storeDir": "/etc/nats-config"}), "homelab-nats:jetstream.storeDir", "collides"),
    (with_config(jetstream={"storeDir": "/var/run/nats/js"}), "homelab-nats:jetstream.storeDir", "collides"),
    (with_config(jetstream={"storeDir": "/var/run"}), "homelab-nats:jetstream.storeDir", "collides"),
    (with_config(jetstream={"storeDir": "/etc"}), "homelab-nats:jetstream.storeDir", "collides"),
    (with_config(jetstream={"storeDir": "/data/../etc"}), "homelab-nats:jetstream.storeDir", "not a plain path"),
    # S3 names S3 would refuse, prefixes that climb
    (with_config(backups={"enabled": True, "bucket": "my..bucket"}), "homelab-nats:backups.bucket", "'..'"),
    (with_config(backups={"enabled": True, "bucket": "192.168.1.10"}), "homelab-nats:backups.bucket", "IP address"),
    (with_config(backups={"enabled": True, "bucket": "xn--bucket"}), "homelab-nats:backups.bucket", "reserves"),
    (with_config(backups={"enabled": True, "bucket": "ab"}), "homelab-nats:backups.bucket", "S3 bucket name"),
    (with_config(backups={"enabled": True, "prefix": "../other"}), "homelab-nats:backups.prefix", "'..'"),
    (with_config(backups={"enabled": True, "prefix": "a//b"}), "homelab-nats:backups.prefix", "no empty"),
    (with_config(backups={"enabled": True, "prefix": "nats/./x"}), "homelab-nats:backups.prefix", "usable S3 key"),
    # backups.streams naming a memory stream (the server cannot snapshot it)
    (with_config(backups={"enabled": True, "streams": ["events"]}), "homelab-nats:backups.streams",
     "memory stream"),
    # natsUrl that is not a URL (and no password echoed)
    (plain("natsUrl", "10.0.0.248:4222"), "homelab-nats:natsUrl", "not a NATS URL"),
    (plain("natsUrl", "http://10.0.0.248:4222"), "homelab-nats:natsUrl", "not a NATS URL"),
    (plain("natsUrl", "nats://u:hunter2@nats.local:99999"), "homelab-nats:natsUrl", "u:***@"),
    # a stream's maxBytes above the store it lives in
    (with_config(streams={"big": {"subjects": ["big.>"], "maxBytes": "20GB"}}), "stream 'big'", "maxBytes"),
    # a consumer given as a string
    (with_config(streams={"s": {"subjects": ["s.>"], "consumers": {"c": "explicit"}}}), "consumer 'c' of stream 's'",
     "expected an object of settings"),
]


@pytest.mark.parametrize("config, key, fragment", BAD, ids=[f"{i}-{k}" for i, (_, k, _) in enumerate(BAD)])
def test_bad_input_fails_preview_naming_the_key(config, key, fragment):
    with pytest.raises(pulumi.RunError) as err:
        run_program(config, preview=True)
    message = str(err.value)
    assert key in message and fragment in message, message
    assert err.value.__suppress_context__  # printed as one message, without a traceback
    assert "hunter2" not in message


GOOD = [
    ("image pinned by digest", with_config(images={"nats": "nats@sha256:" + "a" * 64})),
    ("image pinned by tag and digest", with_config(images={"natsBox": "natsio/nats-box:0.19.7@sha256:" + "b" * 64})),
    ("@daily", with_config(backups={"enabled": True, "schedule": "@daily"})),
    ("@every for Longhorn", with_config(volumeSnapshots={"cron": "@every 6h"})),
    ("weekday names", with_config(backups={"enabled": True, "schedule": "0 3 * * mon-fri"})),
    ("endpoint with a trailing slash", with_config(backups={"enabled": True, "endpoint": "http://10.0.0.241/"})),
    ("namespace of digits", plain("namespace", "1234")),
    ("prefix with folders", with_config(backups={"enabled": True, "prefix": "homelab/nats"})),
    ("a stream made outside Pulumi in backups.streams",
     with_config(backups={"enabled": True, "streams": ["iot-sensors", "made-by-hand"]})),
    ("several NATS URLs", plain("natsUrl", "nats://10.0.0.248:4222,nats://10.0.0.249:4222")),
    ("the smallest memory limit", with_config(resources={"limits": {"memory": "32Mi"},
                                                         "requests": {"memory": "16Mi"}},
                                              jetstream={"memoryStore": "8Mi"})),
    ("IPv6 load balancer", with_config(loadBalancer={"ip": "fd00::248"})),
    ("storeDir elsewhere", with_config(jetstream={"storeDir": "/var/lib/nats"})),
]


@pytest.mark.parametrize("name, config", GOOD, ids=[n for n, _ in GOOD])
def test_valid_input_is_accepted(name, config):
    run = run_program(config, preview=True)
    assert run.of_type("kubernetes:apps/v1:StatefulSet"), name


def test_accepted_values_arrive_as_written():
    run = run_program(plain("namespace", "1234"), preview=True)
    assert as_manifest(run.one("kubernetes:core/v1:Namespace"))["metadata"]["name"] == "1234"
    run = run_program(with_config(backups={"enabled": True, "endpoint": "http://10.0.0.241/",
                                           "streams": ["iot-sensors", "made-by-hand"]}), preview=True)
    cron = as_manifest(run.one("kubernetes:batch/v1:CronJob"))
    env = {e["name"]: e.get("value") for c in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
           for e in c.get("env", [])}
    assert env["MC_HOST_backup"].endswith("@10.0.0.241")  # the trailing slash is not part of the host
    assert any("'made-by-hand' is not a stream this stack declares" in w for w in run.warnings)
    digest = "nats@sha256:" + "a" * 64
    ss = as_manifest(run_program(with_config(images={"nats": digest}), preview=True).one("kubernetes:apps/v1:StatefulSet"))
    assert ss["spec"]["template"]["spec"]["containers"][0]["image"] == digest


def test_a_near_miss_project_namespace_warns_at_preview():
    run = run_program({**HOMELAB, "homelab-nat:streams": '{"x": {}}'}, preview=True)
    assert any("'homelab-nat:streams' is in namespace 'homelab-nat'" in w for w in run.warnings)
    # other projects' keys (the kubernetes provider's) are not ours to warn about
    run = run_program({**HOMELAB, "kubernetes:context": "um890"}, preview=True)
    assert not any("kubernetes:context" in w for w in run.warnings)
