"""`up --security sasl-ssl`: a SASL_SSL (SCRAM-SHA-512) listener next to the loopback PLAINTEXT one.

The stack's own CA and broker certificate are made with ``openssl`` in ``<state>/kafka/tls``
(the state dir is git-ignored), and one SCRAM user is written into the KRaft metadata when the
storage is formatted. Its credentials go to ``<state>/kafka/sasl.json`` (mode 0600) for the
clients. The PLAINTEXT listener stays for the broker's own traffic and the stack's readiness
probes and topic creation; it is on loopback, a dev compromise that docs/security.md names.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Final, Literal

from devtools.stack.config import Address, StackConfig
from devtools.stack.errors import StackError

__all__ = [
    "SASL_MECHANISM",
    "SASL_USER",
    "Security",
    "credentials_path",
    "ensure_credentials",
    "sasl_address",
    "sasl_properties",
    "scram_format_args",
]

Security = Literal["plaintext", "sasl-ssl"]
SECURITY_MODES: Final = ("plaintext", "sasl-ssl")
SASL_MECHANISM: Final = "SCRAM-SHA-512"
SASL_USER: Final = "tokencost"
CERT_DAYS: Final = "825"


def sasl_address(cfg: StackConfig) -> Address:
    """The SASL_SSL listener: broker port + 2 (the controller has + 1)."""
    return Address(cfg.kafka_listen.host, cfg.kafka_listen.port + 2)


def credentials_path(state_dir: Path) -> Path:
    return state_dir / "kafka" / "sasl.json"


def _openssl(*args: str) -> None:
    try:
        out = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise StackError(
            "openssl is needed for --security sasl-ssl (scripts/setup-debian.sh installs it)"
        ) from None
    if out.returncode != 0:
        raise StackError(f"openssl {args[0]} failed (exit {out.returncode}): {out.stderr}")


def _make_tls(tls: Path, host: str, store_password: str) -> None:
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca, key, csr, cert = (
        tls / n for n in ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.pem")
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        CERT_DAYS,
        "-subj",
        "/CN=tokencost dev stack CA",
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={host}",
    )
    ext = tls / "broker.ext"
    # librdkafka checks the broker's host name against the SAN (ssl.endpoint.identification).
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    ext.write_text(f"subjectAltName={san},DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        CERT_DAYS,
        "-extfile",
        str(ext),
    )
    _openssl(
        "pkcs12",
        "-export",
        "-in",
        str(cert),
        "-inkey",
        str(key),
        "-certfile",
        str(ca),
        "-name",
        "broker",
        "-out",
        str(tls / "broker.p12"),
        "-passout",
        f"pass:{store_password}",
    )
    for path in tls.iterdir():
        path.chmod(0o600)


def ensure_credentials(cfg: StackConfig) -> dict[str, str]:
    """The SCRAM user, its password, the CA and the keystore; made once per state dir."""
    path = credentials_path(cfg.state_dir)
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text("utf-8"))
        return data
    tls = cfg.state_dir / "kafka" / "tls"
    store_password = secrets.token_urlsafe(18)
    _make_tls(tls, cfg.kafka_listen.host, store_password)
    data = {
        "bootstrap": str(sasl_address(cfg)),
        "security_protocol": "SASL_SSL",
        "mechanism": SASL_MECHANISM,
        "username": SASL_USER,
        "password": secrets.token_urlsafe(24),
        "ca_location": str(tls / "ca.pem"),
        "keystore": str(tls / "broker.p12"),
        "keystore_password": store_password,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    return data


def scram_format_args(creds: dict[str, str]) -> list[str]:
    """`kafka-storage format` arguments creating the SCRAM user at format time (Kafka >= 3.5)."""
    user, password = creds["username"], creds["password"]
    return ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={password}]"]


def sasl_properties(cfg: StackConfig, creds: dict[str, str]) -> dict[str, str]:
    """server.properties keys added for the SASL_SSL listener (named SASL_SSL)."""
    return {
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": creds["keystore"],
        "ssl.keystore.password": creds["keystore_password"],
        "ssl.key.password": creds["keystore_password"],
    }
