"""Kafka client security settings shared by the processor and the producers.

    >>> class S(KafkaSecurity, ServiceSettings): ...
    >>> S(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u",
    ...   kafka_sasl_password="p").kafka_security_config()["sasl.mechanism"]
    'SCRAM-SHA-512'

The field names are the variables upper-cased and carry no ``validation_alias``: the
``<NAME>_FILE`` source hands values over by field name, so an aliased secret would be dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, FilePath, model_validator

from service_settings import Secret

__all__ = ["KafkaSecurity", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSecurity(BaseModel):
    """Mixin of a ServiceSettings: how every Kafka client of the service authenticates."""

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT",
        description="Kafka client protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL "
        "(SASL/SCRAM over TLS, docs/security.md). Applies to every Kafka client of the service.",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism when KAFKA_SECURITY_PROTOCOL is SASL_*: SCRAM-SHA-512, "
        "SCRAM-SHA-256 or PLAIN.",
    )
    kafka_sasl_username: str | None = Field(
        None, min_length=1, description="SASL user name (required with SASL_*)."
    )
    kafka_sasl_password: Secret | None = Field(
        None,
        description="SASL password (required with SASL_*). Secret: or read from "
        "KAFKA_SASL_PASSWORD_FILE.",
    )
    kafka_ssl_ca_location: FilePath | None = Field(
        None,
        description="PEM file of the CA that signed the broker's certificate (SSL, SASL_SSL); "
        "unset: the system's trust store.",
    )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSecurity:
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{' and '.join(missing)} (or KAFKA_SASL_PASSWORD_FILE)"
                )
        return self

    def kafka_security_config(self) -> dict[str, Any]:
        """The librdkafka keys for security; merged into every client config of the service."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}  # librdkafka's default: the configs stay as they were before this option
        config: dict[str, Any] = {"security.protocol": protocol.lower()}
        if protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by the validator
            config |= {
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            }
        if protocol in ("SSL", "SASL_SSL") and self.kafka_ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_location)
        return config
