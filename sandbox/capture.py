"""Bounded capture of a job's output: the head and the tail are kept, the middle dropped."""

from __future__ import annotations

from collections import deque


class OutputCapture:
    """Collects one stream's bytes up to ``limit``; past it, keeps the head and a tail.

    ``total`` counts every byte the job wrote, so the caller can stop a job whose output
    exceeds its cap; ``truncated`` says that bytes were dropped.
    """

    def __init__(self, limit: int):
        self.limit = max(limit, 0)
        self._head = bytearray()
        self._head_cap = self.limit // 2
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._tail_cap = self.limit - self._head_cap
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or self._tail_cap == 0:
            return
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= self._tail_cap:
            self._tail_len -= len(self._tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        """The kept bytes as text; a marker shows where the middle was dropped."""
        tail = b"".join(self._tail)
        if self.truncated:
            tail = tail[-self._tail_cap:] if self._tail_cap else b""
            dropped = self.total - len(self._head) - len(tail)
            marker = f"\n[... {dropped} bytes omitted ...]\n".encode()
            return (bytes(self._head) + marker + tail).decode("utf-8", "replace")
        return (bytes(self._head) + tail).decode("utf-8", "replace")
