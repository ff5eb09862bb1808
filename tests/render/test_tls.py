"""Client TLS on a real nats-server running the rendered config, with a CA made in the test; and the
cluster objects (Certificate, mounts, tls:// everywhere) under Pulumi's mocks."""
from __future__ import annotations

import asyncio
import datetime
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jsonschema
import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.catalog import load_catalog
from stack.settings import load_settings
from streams.jetstream import close_all_clients
from streams.local.server import local_layout, start_server
from tests.pulumi_harness import ROOT, as_manifest, encode_config, run_program, stack_config
from tests.stack.test_settings import homelab_raw


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("homelab test CA")).issuer_name(_name("homelab test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue(folder: Path, ca_key, ca_cert) -> int:
    """A server certificate for localhost and 127.0.0.1 into folder/tls.crt and tls.key, as cert-manager writes
    them; returns its serial number."""
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("nats")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return cert.serial_number


@pytest.fixture
def tls_server(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_key, ca_cert = make_ca(certs)
    serial = issue(certs, ca_key, ca_cert)
    settings = load_settings({**homelab_raw(), "tls": {"enabled": True, "issuer": {"name": "homelab-ca"}}})
    layout = replace(local_layout(tmp_path / "srv"), tls_dir=str(certs))
    server = start_server(settings, layout, tmp_path / "srv")
    yield server, certs, (ca_key, ca_cert), serial
    close_all_clients()
    server.stop()


def tls_url(server) -> str:
    return f"tls://127.0.0.1:{server.layout.client_port}"


def served_serial(server, ca_file: Path) -> int:
    """The serial of the certificate the server presents now (NATS sends INFO in the clear, then TLS)."""
    with socket.create_connection(("127.0.0.1", server.layout.client_port), timeout=5) as raw:
        raw.recv(4096)
        ctx = ssl.create_default_context(cafile=str(ca_file))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_tls_handshake_with_the_ca_and_plaintext_refused(tls_server):
    server, certs, _, _ = tls_server

    async def go():
        nc = await nats.connect(tls_url(server), tls=ssl.create_default_context(cafile=str(certs / "ca.crt")),
                                allow_reconnect=False)
        info = await nc.jetstream().account_info()
        await nc.close()
        assert info is not None
        # a client that does not trust the CA is refused by its own handshake
        with pytest.raises(Exception, match="(?i)certificate"):
            await nats.connect(tls_url(server), tls=ssl.create_default_context(), allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=2)
    asyncio.run(go())
    # a client speaking plain NATS (as nats-py would refuse to, it upgrades by itself): refused by the server
    with socket.create_connection(("127.0.0.1", server.layout.client_port), timeout=5) as plain:
        info = json.loads(plain.recv(4096).decode().split(" ", 1)[1])
        assert info["tls_required"] is True
        plain.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        answer = b""
        while chunk := plain.recv(4096):
            answer += chunk
    assert b"PONG" not in answer, answer   # the server closed the connection without serving it


def test_the_provider_and_the_cli_trust_the_ca(tls_server, tmp_path):
    server, certs, _, _ = tls_server
    from pulumi.dynamic import Config, ConfigureRequest

    from streams.provider import StreamProvider
    from streams.resources import stream_props
    catalog = load_catalog(homelab_raw()["streams"])
    provider = StreamProvider()
    provider.configure(ConfigureRequest(Config({"homelab-nats:natsUrl": tls_url(server),
                                                "homelab-nats:natsTls": json.dumps({"ca": str(certs / "ca.crt")})},
                                               "homelab-nats")))
    out = provider.create(stream_props(catalog[0], jetstream_servers=1)).outs
    assert out["name"] == catalog[0].name
    close_all_clients()
    env = {"NATS_URL": tls_url(server), "NATS_CA": str(certs / "ca.crt"),
           "NATS_MONITOR_URL": server.monitoring_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "streams", "check", "--json", "--no-round-trip"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert any(f["subject"] == f"stream {catalog[0].name}" and f["level"] == "ok" for f in report["findings"]), report


def test_a_renewed_certificate_is_served_after_a_reload_without_restart(tls_server):
    server, certs, (ca_key, ca_cert), serial = tls_server
    assert served_serial(server, certs / "ca.crt") == serial
    renewed = issue(certs, ca_key, ca_cert)    # cert-manager writes the renewed pair into the Secret
    pid = server.process.pid
    server.process.send_signal(signal.SIGHUP)   # the reloader, which watches cert_file and key_file
    for _ in range(100):
        if served_serial(server, certs / "ca.crt") == renewed:
            break
        time.sleep(0.05)
    assert served_serial(server, certs / "ca.crt") == renewed and server.process.pid == pid


# ---------------------------------------------------------------- the cluster side, under the mocks

# cert-manager v1.21.1 deploy/crds/cert-manager.io_certificates.yaml: the fields used here, their types and enums;
# spec requires issuerRef and secretName, and issuerRef requires name.
CERTIFICATE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"},
        "spec": {"type": "object", "required": ["issuerRef", "secretName"], "additionalProperties": False,
                 "properties": {
                     "secretName": {"type": "string"},
                     "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                  "group": {"type": "string"}}},
                     "dnsNames": {"type": "array", "items": {"type": "string"}},
                     "ipAddresses": {"type": "array", "items": {"type": "string"}},
                     "duration": {"type": "string"}, "renewBefore": {"type": "string"},
                     "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                         "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                         "rotationPolicy": {"enum": ["Never", "Always"]}}},
                     "usages": {"type": "array", "items": {"enum": [
                         "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                         "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                         "server auth", "client auth", "code signing", "email protection", "s/mime",
                         "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
                         "microsoft sgc", "netscape sgc"]}}}}},
}


@pytest.fixture(scope="module")
def secured():
    return run_program({**stack_config("homelab"), **encode_config({
        "homelab-nats:tls": {"enabled": True, "issuer": {"name": "homelab-ca-issuer"},
                             "extraDnsNames": ["nats.home.lan"]}})})


def test_the_certificate_names_every_address_clients_dial(secured):
    [cert] = [as_manifest(r) for r in secured.resources if r.type == "kubernetes:cert-manager.io/v1:Certificate"]
    jsonschema.validate(cert, CERTIFICATE_SCHEMA)
    spec = cert["spec"]
    # Not nats-tls: the homelab's Ingress nats-monitoring owns that Secret (stack/homelab_git.py).
    assert spec["secretName"] == "nats-server-tls"
    assert spec["issuerRef"] == {"name": "homelab-ca-issuer", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert spec["dnsNames"] == ["nats", "nats.nats", "nats.nats.svc", "nats.nats.svc.cluster.local", "nats.home.lan"]
    assert spec["ipAddresses"] == ["10.0.0.248"]


def test_server_reloader_box_and_backup_mount_the_certificate(secured):
    pod = as_manifest(secured.one("kubernetes:apps/v1:StatefulSet", "nats"))["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "nats-server-tls", "defaultMode": 0o440}} in pod["volumes"]
    for container in pod["containers"][:2]:
        assert {"name": "tls", "mountPath": "/etc/nats-tls", "readOnly": True} in container["volumeMounts"]
    conf = as_manifest(secured.one("kubernetes:core/v1:ConfigMap", "nats-config"))["data"]["nats.conf"]
    assert '  cert_file: "/etc/nats-tls/tls.crt"' in conf and '  key_file: "/etc/nats-tls/tls.key"' in conf
    box = as_manifest(secured.one("kubernetes:core/v1:Secret", "nats-box-contexts"))["stringData"]["default.json"]
    assert json.loads(box)["url"] == "tls://nats:4222" and json.loads(box)["ca"] == "/etc/nats-tls/ca.crt"
    job = as_manifest(secured.one("kubernetes:batch/v1:CronJob", "nats-backup"))["spec"]["jobTemplate"]["spec"]
    snapshot = job["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in snapshot["env"]}
    assert env["NATS_URL"] == "tls://nats:4222" and env["NATS_CA"] == "/etc/nats-tls/ca.crt"


def test_outputs_switch_to_tls(secured):
    assert secured.exports["clientUrl"] == "tls://10.0.0.248:4222"
    assert secured.exports["inClusterUrl"] == "tls://nats:4222"
    assert secured.exports["monitoringUrl"] == "http://10.0.0.248:8222"


def test_an_existing_secret_needs_no_certificate():
    run = run_program({**stack_config("homelab"), **encode_config({
        "homelab-nats:tls": {"enabled": True, "secretName": "my-nats-cert"}})})
    assert not [r for r in run.resources if r.type == "kubernetes:cert-manager.io/v1:Certificate"]
    pod = as_manifest(run.one("kubernetes:apps/v1:StatefulSet", "nats"))["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "my-nats-cert", "defaultMode": 0o440}} in pod["volumes"]


@pytest.mark.parametrize("tls, says", [
    ({"enabled": "yes"}, "homelab-nats:tls.enabled: expected true or false"),
    ({"enabled": True, "issuer": "homelab-ca"}, "homelab-nats:tls.issuer: expected {name, kind}"),
    ({"enabled": True, "issuer": {"name": "ca", "kind": "Vault"}}, "homelab-nats:tls.issuer.kind"),
    ({"enabled": True, "extraDnsNames": ["not a name"]}, "homelab-nats:tls.extraDnsNames"),
    ({"enabled": True, "cert": "x"}, "homelab-nats:tls: unknown key(s) cert"),
])
def test_bad_tls_settings_name_the_key(tls, says):
    import pulumi
    with pytest.raises(pulumi.RunError, match="^" + re.escape(says)):
        run_program({**stack_config("homelab"), **encode_config({"homelab-nats:tls": tls})})
