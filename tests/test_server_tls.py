"""TLS, mutual TLS and tokens over real gRPC on loopback (certificates made at test time)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcodec.client import Connection, RetryPolicy, ServerUnavailableError
from fedcodec.client.errors import AuthenticationError
from fedcodec.server import BackgroundServer, ConfigError, load_config
from fedcodec.v1 import aggregation_service_pb2 as pb

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

MODEL = {"w": np.ones((4, 4), np.float32)}
TOKENS = {"c0": "token-of-client-0-0123456789"}


def _name(common_name: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: Any, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fedcodec test CA", ca_key, None, ca=True)
    _write(root / "ca", ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(
        root / "server",
        _cert("localhost", server_key, ("fedcodec test CA", ca_key), server=True),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(root / "client", _cert("c0", client_key, ("fedcodec test CA", ca_key)), client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(root / "other-ca", _cert("another CA", other_key, None, ca=True))
    return root


def _config(tmp_path: Path, pki: Path, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "state_path": str(tmp_path / "state.sqlite"),
        "security.tls_cert": str(pki / "server.crt"),
        "security.tls_key": str(pki / "server.key"),
        "limits.codec_threads": 1,
        "downlink.shared_initial": False,
    }
    values.update(extra)
    return load_config(env={}, overrides=values)


@pytest.fixture
def tls_server(tmp_path: Path, pki: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(_config(tmp_path, pki), tokens=TOKENS, initial_model=MODEL) as srv:
        yield srv


def _connect(srv: BackgroundServer, **kwargs: Any) -> Connection:
    args: dict[str, Any] = {"client_id": "c0", "retry": RetryPolicy(attempts=1, call_timeout_s=10)}
    args.update(kwargs)
    token = args.pop("token", TOKENS["c0"])
    return Connection(f"localhost:{srv.port}", token, **args)


def test_tls_is_required_unless_insecure_is_asked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS"):
        load_config(env={}, overrides={"state_path": str(tmp_path / "s.sqlite")})


def test_a_client_trusting_the_ca_connects_over_tls_with_its_token(
    tls_server: BackgroundServer, pki: Path
) -> None:
    conn = _connect(tls_server, tls_ca=str(pki / "ca.crt"))
    assert conn.health()
    assert conn.check_in().assignment == pb.ASSIGNMENT_SELECTED
    package = conn.download(None, None)
    assert package.is_keyframe


def test_tls_still_needs_the_token(tls_server: BackgroundServer, pki: Path) -> None:
    conn = _connect(tls_server, tls_ca=str(pki / "ca.crt"), token="")
    with pytest.raises(AuthenticationError) as info:
        conn.check_in()
    assert info.value.status == "UNAUTHENTICATED"


def test_plaintext_or_an_untrusted_ca_cannot_talk_to_a_tls_server(
    tls_server: BackgroundServer, pki: Path
) -> None:
    with pytest.raises(ServerUnavailableError):
        _connect(tls_server, insecure=True).check_in()
    with pytest.raises(ServerUnavailableError):
        _connect(tls_server, tls_ca=str(pki / "other-ca.crt")).check_in()


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, pki: Path) -> None:
    config = _config(tmp_path, pki, **{"security.tls_client_ca": str(pki / "ca.crt")})
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        with pytest.raises(ServerUnavailableError):
            _connect(srv, tls_ca=str(pki / "ca.crt")).check_in()
        conn = _connect(
            srv,
            tls_ca=str(pki / "ca.crt"),
            client_cert=str(pki / "client.crt"),
            client_key=str(pki / "client.key"),
        )
        assert conn.check_in().assignment == pb.ASSIGNMENT_SELECTED


def test_the_plaintext_health_port_serves_only_health(tmp_path: Path, pki: Path) -> None:
    config = _config(tmp_path, pki, health_listen="127.0.0.1:0")
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        port = srv.server.health_port
        assert port
        probe = Connection(f"127.0.0.1:{port}", "", insecure=True, retry=RetryPolicy(attempts=1))
        assert probe.health()
        assert probe.health("fedcodec.v1.AggregationService")
        with pytest.raises(Exception, match="UNIMPLEMENTED"):
            probe.check_in()
