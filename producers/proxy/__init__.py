"""The usage-capture proxy: an OpenAI-compatible reverse proxy that meters token usage.

* ``wire``      — pure: which requests are metered, request rewrite (``include_usage``), SSE
                  event splitting, usage extraction from a response or a stream.
* ``tenants``   — pure: who a request is billed to (API-key map by hash, else a header).
* ``publisher`` — a bounded queue in front of a Kafka producer thread: never blocks a request.
* ``app``       — the aiohttp application (forwarding, timing, one event per request).

See docs/proxy.md.
"""
