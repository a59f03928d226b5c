"""Overlapping stages: run an iterator in a thread of its own, with a small queue in between."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def background(items: Iterable[T], *, depth: int = 2, name: str = "stage") -> Iterator[T]:
    """Yield ``items`` produced by a background thread, at most ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer; a consumer that stops early (or
    fails) stops the producer at its next item.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name=f"predstore-{name}", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=30)
