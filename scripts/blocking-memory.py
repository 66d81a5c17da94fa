#!/usr/bin/env python3
"""Idle memory of `echo-server --backend blocking` after one large message per connection.

Starts the echo server (one thread per connection), opens CONNS connections with Python
websockets, sends one message of SIZE bytes on each and waits for its echo, leaves every
connection open and idle, and reports the server's resident memory (VmRSS from
/proc/PID/status) before, at the peak and once idle. Loopback only; the server is
stopped by PID at the end.

    target/venv/bin/python scripts/blocking-memory.py --server target/release/echo-server \
        [--conns 300] [--size 921600] [--compress] [--payload text|random]

With --compress the server negotiates permessage-deflate and every message goes
compressed both ways; `text` payloads are base64 of random bytes (they compress to
about 75 %), `random` payloads do not compress at all.
"""
import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import time

from websockets.asyncio.client import connect


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def payload(kind, size):
    if kind == "random":
        return os.urandom(size)
    return base64.b64encode(os.urandom(size))[:size].decode()


async def run(args, pid, url):
    peak = 0
    conns = []
    body = payload(args.payload, args.size)
    compression = "deflate" if args.compress else None

    async def one():
        ws = await connect(url, compression=compression, max_size=None, open_timeout=30,
                           ping_interval=None, close_timeout=5)
        await ws.send(body)
        echo = await asyncio.wait_for(ws.recv(), 60)
        assert len(echo) == len(body), (len(echo), len(body))
        conns.append(ws)

    # Bounded parallelism: the server runs one thread per connection on 2 cores.
    sem = asyncio.Semaphore(32)

    async def bounded():
        nonlocal peak
        async with sem:
            await one()
            peak = max(peak, rss_kib(pid))

    await asyncio.gather(*(bounded() for _ in range(args.conns)))
    await asyncio.sleep(args.settle)
    idle = rss_kib(pid)
    for ws in conns:
        await ws.close()
    return peak, idle, len(conns)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="target/release/echo-server")
    parser.add_argument("--conns", type=int, default=300)
    parser.add_argument("--size", type=int, default=900 * 1024)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--payload", choices=["text", "random"], default="text")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds idle before the idle figure is read")
    args = parser.parse_args()

    command = [args.server, "--backend", "blocking", "--addr", "127.0.0.1:0"]
    if args.compress:
        command.append("--compress")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            sys.exit(f"no address in {line!r}")
        url = f"ws://{match.group(1)}/"
        time.sleep(0.2)
        before = rss_kib(server.pid)
        started = time.monotonic()
        peak, idle, opened = asyncio.run(run(args, server.pid, url))
        took = time.monotonic() - started
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    mib = 1024.0
    print(f"connections {opened}, message {args.size} B ({args.payload}), "
          f"compression {'on' if args.compress else 'off'}, {took:.1f} s")
    print(f"server RSS before {before / mib:.1f} MiB, peak {peak / mib:.1f} MiB, "
          f"idle {idle / mib:.1f} MiB")
    print(f"idle growth {(idle - before) / mib:.1f} MiB "
          f"({(idle - before) / max(opened, 1):.0f} KiB per connection)")


if __name__ == "__main__":
    main()
