#!/usr/bin/env python3
"""Check that a benchmark peer server keeps the peers' contract (see README.md).

    python check.py SERVER_BINARY [--workers N]

Starts SERVER_BINARY --addr 127.0.0.1:PORT (a free port), waits for its `listening on`
line, runs the checks below with the Python `websockets` client, then stops the server
with SIGTERM (by PID) and checks that it exits 0. Every step is bounded by a timeout.
Prints one line per check and a closing `N passed, N failed`; exits 1 when a check
failed (2 when the server could not be started).

Checks: echo of text, binary, a 1 MiB message and 200 pipelined messages in order; ping;
the closing handshake (echo and chat); 404 for a WebSocket handshake on another path and
for a plain HTTP request; chat rooms: a text message
reaches every client of its room, the sender included, and none of another room; binary
is not broadcast; /ws without a room is room `lobby`; order is kept; a client that does
not read is dropped while the others receive everything.

A frame received on /ws is split on '\\n': the gorilla chat peer joins the messages
queued for a client into one frame, as the gorilla chat example does.
"""

import argparse
import asyncio
import collections
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CHECK_TIMEOUT = 60.0  # seconds, for one check
QUIET = 0.5  # seconds without a message that count as "received nothing"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The server under test, started on a free loopback port and stopped by PID."""

    def __init__(self, binary, extra_args):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "--addr", f"127.0.0.1:{self.port}", *extra_args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )

    def wait_listening(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        return None
                    buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode(errors="replace")

    def stop(self, timeout=5.0):
        """SIGTERM, then wait; SIGKILL if it does not exit. Returns the exit code or None."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None
        finally:
            self.proc.stdout.close()


class Client:
    """A WebSocket client whose text frames are split into messages on '\\n'."""

    def __init__(self, ws):
        self.ws = ws
        self.pending = collections.deque()

    async def next(self, timeout=10.0):
        while not self.pending:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(frame, str):
                self.pending.extend(frame.split("\n"))
            else:
                self.pending.append(frame)
        return self.pending.popleft()

    async def nothing(self, quiet=QUIET):
        """True when no message arrives within `quiet` seconds."""
        try:
            await self.next(quiet)
        except asyncio.TimeoutError:
            return True
        return False


def open_ws(url, **kw):
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 5)
    return connect(url, **kw)


async def http_status(port, target):
    """Status code of a plain GET, or None when the server closes without answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            return None
        return int(line.split()[1])
    except ConnectionResetError:
        return None
    finally:
        writer.close()


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


# ---- echo ----------------------------------------------------------------------------


async def check_echo(url):
    async with open_ws(url + "/echo") as ws:
        await ws.send("hello, peer")
        expect(await asyncio.wait_for(ws.recv(), 10) == "hello, peer", "text echoed")
        await ws.send(b"\x00\x01\xfe\xff")
        expect(await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01\xfe\xff", "binary echoed")
        big = os.urandom(1 << 20)
        await ws.send(big)
        expect(await asyncio.wait_for(ws.recv(), 10) == big, "1 MiB binary echoed")
        for i in range(200):
            await ws.send(f"msg-{i}")
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(200)]
        expect(got == [f"msg-{i}" for i in range(200)], "200 pipelined messages echoed in order")
        pong = await ws.ping(b"ping?")
        await asyncio.wait_for(pong, 10)
        await ws.close()
        expect(ws.close_code == 1000, f"server answered close with 1000, got {ws.close_code}")


async def check_not_found(url, port):
    try:
        async with open_ws(url + "/nope"):
            raise Failed("handshake on /nope was accepted")
    except InvalidStatus as e:
        code = e.response.status_code
        expect(code == 404, f"handshake on /nope: 404, got {code}")
    status = await http_status(port, "/nope")
    expect(status == 404, f"plain GET /nope: 404, got {status}")


# ---- chat ----------------------------------------------------------------------------


async def check_rooms(url):
    async with open_ws(url + "/ws?room=a") as a1, open_ws(url + "/ws?room=a") as a2, open_ws(
        url + "/ws?room=b"
    ) as b1:
        a1, a2, b1 = Client(a1), Client(a2), Client(b1)
        # Joining is not acknowledged: give the server a moment to register the clients.
        await asyncio.sleep(0.2)
        await a1.ws.send("from-a1")
        expect(await a1.next() == "from-a1", "sender receives its own message")
        expect(await a2.next() == "from-a1", "other client of the room receives it")
        expect(await b1.nothing(), "client of room b receives nothing from room a")
        await b1.ws.send("from-b1")
        expect(await b1.next() == "from-b1", "room b's sender receives its message")
        quiet = await a1.nothing(0.2) and await a2.nothing(0.2)
        expect(quiet, "room a receives nothing from room b")
        await a2.ws.send(b"binary")
        expect(
            await a1.nothing(0.3) and await a2.nothing(0.2) and await b1.nothing(0.1),
            "binary messages are not broadcast",
        )
        for i in range(100):
            await a2.ws.send(f"seq-{i}")
        want = [f"seq-{i}" for i in range(100)]
        got = [await a1.next() for _ in range(100)]
        expect(got == want, "100 messages arrive in order (other client)")
        got = [await a2.next() for _ in range(100)]
        expect(got == want, "100 messages arrive in order (sender)")
        expect(await b1.nothing(0.2), "room b still receives nothing")


async def check_default_room(url):
    async with open_ws(url + "/ws") as bare, open_ws(url + "/ws?room=lobby") as lobby:
        bare, lobby = Client(bare), Client(lobby)
        await asyncio.sleep(0.2)
        await bare.ws.send("to-lobby")
        expect(await bare.next() == "to-lobby", "sender in the default room receives it")
        expect(await lobby.next() == "to-lobby", "/ws?room=lobby shares /ws's room")
        await bare.ws.close()
        code = bare.ws.close_code
        expect(code == 1000, f"chat answered close with 1000, got {code}")
        await lobby.ws.send("after-close")
        expect(await lobby.next() == "after-close", "the room lives on with its other client")


async def check_slow_client(url):
    """A client that does not read falls behind and is dropped; the others keep up."""
    size, batch, batches = 32 * 1024, 50, 40  # 64 MiB in all, far beyond any buffering
    async with open_ws(url + "/ws?room=slow") as sender, open_ws(
        url + "/ws?room=slow"
    ) as fast, open_ws(url + "/ws?room=slow", max_queue=1) as slow:
        sender, fast = Client(sender), Client(fast)
        await asyncio.sleep(0.2)
        pad = "x" * (size - 8)
        n = 0
        for _ in range(batches):
            for _ in range(batch):
                await sender.ws.send(f"{n:08d}{pad}")
                n += 1
            # Lockstep, so that only `slow` falls behind.
            for c in (fast, sender):
                for i in range(n - batch, n):
                    m = await c.next(20)
                    expect(m[:8] == f"{i:08d}", f"message {i} in order, got {m[:8]!r}")
        # Now read what the slow client was sent: it must end before the last message.
        got = 0
        try:
            while True:
                await asyncio.wait_for(slow.recv(), 20)
                got += 1
        except ConnectionClosed:
            pass
        except asyncio.TimeoutError:
            raise Failed(f"slow client still open after {got} frames, nothing more for 20 s")
        expect(got < n, f"slow client dropped before the end ({got} frames of {n} messages)")
        return f"slow client dropped after {got} frames of {n} messages"


async def run_checks(server):
    checks = [
        ("echo", lambda: check_echo(server.url)),
        ("not found", lambda: check_not_found(server.url, server.port)),
        ("chat rooms", lambda: check_rooms(server.url)),
        ("chat default room", lambda: check_default_room(server.url)),
        ("chat slow client", lambda: check_slow_client(server.url)),
    ]
    passed = failed = 0
    for name, check in checks:
        try:
            note = await asyncio.wait_for(check(), CHECK_TIMEOUT)
            print(f"ok    {name}" + (f" ({note})" if note else ""), flush=True)
            passed += 1
        except Failed as e:
            print(f"FAIL  {name}: {e}", flush=True)
            failed += 1
        except Exception as e:  # a timeout or a connection error is a failure too
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    return passed, failed


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("binary", help="the server to check")
    parser.add_argument("--workers", type=int, help="pass --workers N to the server")
    args = parser.parse_args()

    extra = ["--workers", str(args.workers)] if args.workers else []
    print(f"checking {args.binary} {' '.join(extra)}".rstrip(), flush=True)
    server = Server(args.binary, extra)
    try:
        line = server.wait_listening()
        if not line or not line.startswith("listening on "):
            print(f"FAIL  start: no 'listening on' line (got {line!r})", flush=True)
            return 2
        print(f"ok    start: {line}", flush=True)
        passed, failed = asyncio.run(run_checks(server))
    finally:
        code = server.stop()
    if code == 0:
        print("ok    stop: exit 0 on SIGTERM")
        passed += 1
    else:
        print(f"FAIL  stop: exit {code} on SIGTERM (None: had to be killed)")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
