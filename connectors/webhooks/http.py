"""The webhook service's HTTP/1.1 protocol: uvicorn's httptools (llhttp) parser with a bounded
request head.

llhttp keeps a request line or a header of any length until it is complete, so a head is
bounded here the way h11 bounds it: the bytes received since the connection opened, or since
the previous request ended, are counted up to the blank line that ends the head, and a head
over `HEAD_LIMIT` is answered 431 and its connection closed before the parser sees it. A
request pipelined behind another in the same read is counted from the next read on.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_LIMIT = 16 * 1024
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 33\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"the request head is over 16384 B\n"
)


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over `HEAD_LIMIT` bytes with 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # the head ends at its blank line, which may straddle two reads; what follows is body
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4 - len(self._tail)
            if self._head_bytes > HEAD_LIMIT:
                self.logger.info("webhooks: a request head over %d B refused", HEAD_LIMIT)
                self.transport.write(REFUSAL)
                self.transport.close()
                return
            self._tail = seen[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()
