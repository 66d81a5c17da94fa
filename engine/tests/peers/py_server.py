"""Python websockets echo server for ringcast's interop tests.

Prints its port, then echoes every message. A text "close:CODE:REASON" makes it close
with that code; it prints the close code it received when a client closes.
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await ws.close(int(code), reason)
                return
            await ws.send(message)
    finally:
        print(f"closed {ws.close_code}", flush=True)


async def main():
    async with serve(echo, "127.0.0.1", 0, compression="deflate", max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"port {port}", flush=True)
        # Stop on its own: the tests never need it for long.
        await asyncio.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 60)


asyncio.run(main())
