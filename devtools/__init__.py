"""Development-only helpers shared by ``scripts/`` and ``tests/``; never shipped.

The product wheel packages only ``schemas``, ``gpu_readers``, ``producers`` and ``processor``
(pyproject ``[tool.setuptools] packages``), the Dockerfiles copy only those, and
``.dockerignore`` excludes this directory. Scripts put the repository root on ``sys.path``;
pytest does so through ``pythonpath = ["."]``.

* ``processes`` — start a process, know it again by PID + start time, stop it by PID, reap it.
* ``waiting``   — ``wait_for``: ask until the answer is yes, within a deadline (tenacity).
* ``ports``     — free loopback ports, "does this address accept connections".
* ``logs``      — the end of a log file, led by its first error line.
* ``events``    — builders of contract-valid events (tests and the benchmarks).
* ``stack``     — the local Kafka + FerretDB stack behind ``scripts/stack.py``.
"""
