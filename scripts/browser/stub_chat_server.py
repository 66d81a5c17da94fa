#!/usr/bin/env python3
"""TEST FIXTURE, not the chat server: a stand-in for ./target/release/chat.

It implements the chat server's contract in a few lines of Python (the `websockets`
package from target/venv) so the page and the browser test can be developed and
checked without the Rust server:

  GET /                 examples/chat/index.html
  WS  /ws?room=NAME     every text message goes to every client of the room, sender
                        included, unchanged; join/leave notices as JSON text lines
                        {"type":"join","room":NAME,"count":N}, sent to the whole room
                        (the joining client included); messages over 4096 bytes close
                        the connection (1009).

  --coalesce            hold each client's outgoing messages 50 ms and send what
                        piled up as one frame joined by '\\n' (allowed by the contract)
  --bug cross-room      misbehave: broadcast to every room (the test must fail)
  --bug no-echo         misbehave: do not send a message back to its sender
  --bug no-notices      misbehave: send no join/leave notices

  target/venv/bin/python scripts/browser/stub_chat_server.py --addr 127.0.0.1:8080
"""

import argparse
import asyncio
import json
import signal
from collections import defaultdict
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_BYTES = 4096
PAGE = Path(__file__).resolve().parents[2] / "examples" / "chat" / "index.html"


class Client:
    def __init__(self, ws, room, coalesce):
        self.ws = ws
        self.room = room
        self.coalesce = coalesce
        self.queue = asyncio.Queue()

    async def writer(self):
        try:
            while True:
                batch = [await self.queue.get()]
                if self.coalesce:
                    await asyncio.sleep(0.05)
                    while not self.queue.empty():
                        batch.append(self.queue.get_nowait())
                    if len(batch) > 1:
                        print(f"coalesced {len(batch)} messages into one frame", flush=True)
                await self.ws.send("\n".join(batch))
        except ConnectionClosed:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:8080")
    ap.add_argument("--coalesce", action="store_true")
    ap.add_argument("--bug", action="append", default=[],
                    choices=["cross-room", "no-echo", "no-notices"])
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    rooms = defaultdict(set)

    def deliver(sender, text):
        targets = set().union(*rooms.values()) if "cross-room" in args.bug else rooms[sender.room]
        for c in targets:
            if c is sender and "no-echo" in args.bug:
                continue
            c.queue.put_nowait(text)

    def notice(kind, room):
        if "no-notices" in args.bug:
            return
        line = json.dumps({"type": kind, "room": room, "count": len(rooms[room])},
                          separators=(",", ":"))
        for c in rooms[room]:
            c.queue.put_nowait(line)

    def process_request(connection, request):
        path = urlsplit(request.path).path
        if path == "/ws":
            return None
        if path == "/":
            resp = connection.respond(HTTPStatus.OK, PAGE.read_text(encoding="utf-8"))
            del resp.headers["Content-Type"]
            resp.headers["Content-Type"] = "text/html; charset=utf-8"
            resp.headers["Cache-Control"] = "no-store"
            return resp
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def handler(ws):
        query = parse_qs(urlsplit(ws.request.path).query)
        room = (query.get("room") or ["lobby"])[0] or "lobby"
        client = Client(ws, room, args.coalesce)
        writer = asyncio.create_task(client.writer())
        rooms[room].add(client)
        notice("join", room)
        try:
            async for message in ws:
                if isinstance(message, str):
                    deliver(client, message)
        except ConnectionClosed:
            pass
        finally:
            rooms[room].discard(client)
            notice("leave", room)
            if not rooms[room]:
                del rooms[room]
            writer.cancel()

    async def run():
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
        async with serve(handler, host, int(port), process_request=process_request,
                         max_size=MAX_BYTES):
            print(f"stub chat server on http://{host}:{port}/ bugs={args.bug or 'none'}"
                  f" coalesce={args.coalesce}", flush=True)
            await stop

    asyncio.run(run())


if __name__ == "__main__":
    main()
