"""The webhook service's HTTP protocol bounds a request head (httptools buffers one of any length)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from connectors.webhooks.http import HEAD_LIMIT, BoundedHeadProtocol
from tests.fixtures.waiting import wait_for


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with the length of the body it read."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    config = uvicorn.Config(
        echo_length, host="127.0.0.1", port=0, http=BoundedHeadProtocol, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, 0.01, what="uvicorn to start")
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)


def exchange(port: int, *chunks: bytes) -> bytes:
    """Send the chunks one by one and read until the server closes or answers a complete response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                return answer
            if not data:
                return answer
            answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            if b"content-length: " in head.lower():
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    return answer


def request(header_bytes: int, body: bytes = b"") -> bytes:
    return (
        b"POST /v1/webhooks/stripe HTTP/1.1\r\nhost: x\r\n"
        + b"x-filler: "
        + b"a" * header_bytes
        + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )


def test_a_head_under_the_limit_is_served(port: int) -> None:
    answer = exchange(port, request(HEAD_LIMIT // 2, b"{}"))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert answer.endswith(b"\r\n\r\n2")


def test_a_head_over_the_limit_is_refused_431(port: int) -> None:
    answer = exchange(port, request(HEAD_LIMIT + 1024, b"{}"))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert b"connection: close" in answer


def test_a_head_dribbled_in_small_pieces_is_counted_across_them(port: int) -> None:
    whole = request(HEAD_LIMIT * 2)
    pieces = [whole[i : i + 1000] for i in range(0, len(whole), 1000)]
    answer = exchange(port, *pieces)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_large_body_after_a_small_head_is_not_the_head(port: int) -> None:
    body = b"x" * (HEAD_LIMIT * 4)
    answer = exchange(port, request(100, body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert answer.endswith(b"\r\n\r\n%d" % len(body))


def test_each_request_of_a_kept_alive_connection_gets_its_own_allowance(port: int) -> None:
    one = request(HEAD_LIMIT * 3 // 4, b"{}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for _ in range(3):
            conn.sendall(one)
            answer = b""
            while not answer.endswith(b"\r\n\r\n2"):
                data = conn.recv(65536)
                assert data, f"closed after {answer[:80]!r}"
                answer += data
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


def test_a_blank_line_split_across_two_reads_still_ends_the_head(port: int) -> None:
    body = b"y" * (HEAD_LIMIT * 2)
    whole = request(HEAD_LIMIT - 200, body)
    cut = whole.index(b"\r\n\r\n") + 3
    answer = exchange(port, whole[:cut], whole[cut:])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert answer.endswith(b"\r\n\r\n%d" % len(body))
