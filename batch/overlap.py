"""Overlapping stages: run an iterator in a thread of its own, with a small queue in between."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Stopped(Exception):
    """Another stage failed: this one stops too."""


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


def fan_out(items: Iterable[T], consumers: list[Callable[[Iterator[T]], None]], *, depth: int = 2) -> None:
    """Feed every item to each consumer, each running in a thread of its own over its own bounded
    stream, so the consumers work at the same time. Returns when all are done; the first
    exception (of the producer or of a consumer) is raised, after every thread has stopped."""
    slots = [queue.Queue[object](maxsize=depth) for _ in consumers]
    failed = threading.Event()
    errors: list[BaseException] = []

    def stream(slot: queue.Queue[object], finished: list[bool]) -> Iterator[T]:
        while True:
            try:
                item = slot.get(timeout=0.1)
            except queue.Empty:
                if failed.is_set():
                    raise _Stopped from None
                continue
            if item is _DONE:
                finished.append(True)
                return
            yield item  # type: ignore[misc]

    def consume(consumer: Callable[[Iterator[T]], None], slot: queue.Queue[object]) -> None:
        finished: list[bool] = []
        try:
            consumer(stream(slot, finished))
            if not finished:
                raise RuntimeError("a consumer stopped before the end of its stream")
        except BaseException as exc:  # raised by fan_out once every thread has stopped
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=consume, args=(c, s), name=f"predstore-target-{i}", daemon=True)
               for i, (c, s) in enumerate(zip(consumers, slots, strict=True))]
    for thread in threads:
        thread.start()

    def put(slot: queue.Queue[object], item: object) -> bool:
        while not failed.is_set():
            try:
                slot.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not all(put(slot, item) for slot in slots):
                break
    except BaseException as exc:  # the producer's failure stops the consumers too
        errors.append(exc)
        failed.set()
    finally:
        for slot in slots:
            put(slot, _DONE)
        for thread in threads:
            thread.join()
        if errors:
            _close(items, errors)
    if errors:
        raise errors[0]


def _close(items: Iterable[object], errors: list[BaseException]) -> None:
    """Close a producer stopped early, so that it releases what it holds now (a COPY holds its
    connection's lock until its block exits: left open, the connection could never roll back)."""
    close = getattr(items, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # a lost connection fails the COPY's exit too; the first error is the one shown
        errors.append(exc)
