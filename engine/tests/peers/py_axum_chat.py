"""Python websockets clients against ringcast's axum-chat example (argv[1]: HOST:PORT,
argv[2]: the token it requires). Checks the routes axum answers and the rooms the engine
serves once axum handed the sockets over. Prints one line per check; exits non-zero on
the first failure.
"""
import asyncio
import json
import sys
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def get_json(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as response:
        assert response.status == 200, response.status
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def main(addr, token):
    health = get_json(addr, "/health")
    assert health["status"] == "ok" and health["workers"] >= 1, health
    print("health ok", flush=True)

    try:
        async with connect(f"ws://{addr}/ws?room=py", open_timeout=10):
            raise AssertionError("a socket without the token was upgraded")
    except InvalidStatus as refused:
        assert refused.response.status_code == 401, refused.response.status_code
    print("no token 401", flush=True)

    url = f"ws://{addr}/ws?room=py&token={token}"
    async with connect(url, compression="deflate", open_timeout=10) as a:
        ext = a.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, ext
        joined = await recv_json(a)
        assert joined == {"type": "join", "room": "py", "count": 1}, joined
        async with connect(url, compression=None, open_timeout=10) as b:
            # b's own join; a hears it too (the announcements are the engine's).
            assert (await recv_json(b))["count"] == 2
            assert (await recv_json(a))["count"] == 2
            print("join ok", flush=True)
            rooms = get_json(addr, "/api/rooms")["rooms"]
            assert {"room": "py", "members": 2} in rooms, rooms
            print("rooms ok", flush=True)
            big = "ünïcode and repetition " * 150  # about 3.5 KB, compressed for a
            await a.send(big)
            assert await asyncio.wait_for(a.recv(), 10) == big
            assert await asyncio.wait_for(b.recv(), 10) == big
            await b.send("from b")
            assert await asyncio.wait_for(a.recv(), 10) == "from b"
            assert await asyncio.wait_for(b.recv(), 10) == "from b"
            print("messages ok", flush=True)
            pong = await a.ping(b"py")
            await asyncio.wait_for(pong, 10)
            print("ping ok", flush=True)
        left = await recv_json(a)
        assert left == {"type": "leave", "room": "py", "count": 1}, left
        print("leave ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
