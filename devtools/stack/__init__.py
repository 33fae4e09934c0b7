"""The local stack: a real Apache Kafka broker (KRaft) and a real FerretDB, as processes.

    from devtools import stack
    stack.up(".state/mine", only="kafka", kafka_listen="127.0.0.1:19092")
    stack.down(".state/mine")

``scripts/stack.py`` is its command line; docs/local-stack.md describes both. Modules:

* ``config``         addresses, directories, versions, topic names; ``ServerState``
* ``install``        Kafka's jars (Maven) and the FerretDB binary (Go) into the cache
* ``ferretdb_patch`` our fix to FerretDB's ``$group``, applied before each build
* ``servers``        how each server is run (Kafka's KRaft properties, FerretDB's flags)
* ``supervise``      PID files, start, stop, readiness of one server
* ``probes``         does a server answer a real request
* ``topics``         the project's topics, created idempotently
* ``lifecycle``      ``up`` / ``down`` / ``status``
* ``cli``            argument parsing and exit codes
"""

from devtools.processes import pid_is_gone
from devtools.stack.config import (
    KAFKA_VERSION,
    SERVERS,
    Address,
    Server,
    ServerState,
    StackConfig,
    default_cache_dir,
    mongo_url,
    topic_names,
)
from devtools.stack.errors import MissingToolError, StackError
from devtools.stack.install import install_ferretdb, install_kafka, installed
from devtools.stack.lifecycle import down, kafka_bootstrap, status, up
from devtools.stack.probes import answers, kafka_answers, kafka_metadata, mongo_answers, tcp_open
from devtools.stack.supervise import running_pid
from devtools.stack.topics import ensure_topics

__all__ = [
    "KAFKA_VERSION",
    "SERVERS",
    "Address",
    "MissingToolError",
    "Server",
    "ServerState",
    "StackConfig",
    "StackError",
    "answers",
    "default_cache_dir",
    "down",
    "ensure_topics",
    "install_ferretdb",
    "install_kafka",
    "installed",
    "kafka_answers",
    "kafka_bootstrap",
    "kafka_metadata",
    "mongo_answers",
    "mongo_url",
    "pid_is_gone",
    "running_pid",
    "status",
    "tcp_open",
    "topic_names",
    "up",
]
