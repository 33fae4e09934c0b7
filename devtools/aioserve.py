"""aiohttp applications served from a background thread (tests drive them with sync clients).

with serving(fake_app, proxy_app) as (fake_url, proxy_url):
    OpenAI(base_url=f"{proxy_url}/v1", api_key="k").models.list()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

__all__ = ["serving"]


@contextmanager
def serving(*apps: web.Application) -> Iterator[list[str]]:
    """Serve ``apps`` on free loopback ports, one event loop in one thread; yield their URLs."""
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []
    urls: list[str] = []
    ready = threading.Event()
    failure: list[BaseException] = []

    async def start() -> None:
        for app in apps:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[-1][1]  # the port the kernel chose for port 0
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{port}")

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller's thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="aioserve", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield urls
    finally:

        async def cleanup() -> None:
            for runner in reversed(runners):
                await runner.cleanup()
            # Handlers of connections a client abandoned: end them here, not at loop.close().
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
