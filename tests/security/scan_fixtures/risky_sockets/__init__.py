"""Talks to the network, listens on it, and asks only to connect to one host (a scanner fixture)."""

import asyncio
import socket
import urllib.request

from plugin_sdk import Plugin


def raw() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # expect: socket


def connect() -> None:
    with socket.create_connection(("api.example.com", 443), timeout=5):  # expect: net-connect
        pass
    with socket.create_connection(("evil.example.net", 443), timeout=5):  # expect: net-connect
        pass


async def streams() -> None:
    _, writer = await asyncio.open_connection("api.example.com", 443)  # expect: net-connect
    writer.close()
    loop = asyncio.get_running_loop()
    await loop.create_connection(asyncio.Protocol, "api.example.com", 443)  # expect: net-connect
    server = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 8080)  # expect: net-listen
    server.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:  # expect: http-client
        return bytes(response.read())


class SocketsPlugin(Plugin):
    name = "risky_sockets"
    version = "1.0.0"
    permissions = ("net:connect:api.example.com:443",)
