"""Python websockets client for ringcast's interop tests: exchanges text, binary,
fragmented and compressed messages and a ping with the echo server at argv[1], then
closes with 4002. Prints one line per check; exits non-zero on the first failure.
"""
import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url):
    async with connect(url, compression="deflate", max_size=None, open_timeout=10) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, ext
        print("compression negotiated", flush=True)
        await ws.send("héllo ringcast")
        assert await asyncio.wait_for(ws.recv(), 10) == "héllo ringcast"
        print("text ok", flush=True)
        await ws.send(bytes(range(256)))
        assert await asyncio.wait_for(ws.recv(), 10) == bytes(range(256))
        print("binary ok", flush=True)
        await ws.send(["frag", "mented ", "text"])
        assert await asyncio.wait_for(ws.recv(), 10) == "fragmented text"
        print("fragmented ok", flush=True)
        big = "compress me please " * 5000
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 10) == big
        print("compressed ok", flush=True)
        pong = await ws.ping(b"py-ping")
        await asyncio.wait_for(pong, 10)
        print("ping ok", flush=True)
        await ws.close(4002, "from python")
        # ringcast's default close handler echoes the code back.
        assert ws.close_code == 4002, ws.close_code
        print(f"closed {ws.close_code}", flush=True)


asyncio.run(main(sys.argv[1]))
