"""Run a blocking synthesizer in a worker thread and stream its blocks to asyncio.

Neural and formant synthesis is CPU work that must not block the event loop, which also
carries every other call's audio. Blocks reach the consumer as soon as the thread makes
them; cancelling the consumer sets a flag the thread checks between blocks, so synthesis
stops promptly and the worker is freed for other calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from tts.base import SpeechError

BlockSource = Callable[[threading.Event], Iterator[bytes]]
_DONE = object()


async def stream_from_thread(source: BlockSource, executor: ThreadPoolExecutor) -> AsyncIterator[bytes]:
    """Yield the blocks ``source(cancelled)`` produces in a thread of ``executor``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancelled = threading.Event()

    def produce() -> None:
        try:
            for block in source(cancelled):
                if cancelled.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, block)
        except Exception as error:  # reported to the consumer as a SpeechError
            loop.call_soon_threadsafe(queue.put_nowait, error)
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(executor, produce)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise SpeechError(str(item) or type(item).__name__) from item
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        if not future.done():
            future.add_done_callback(lambda f: f.exception())  # never "exception was never retrieved"
