"""A TCP relay from the node's network namespace to the API server on the machine's
loopback: it listens on 127.0.0.1:6443 inside the namespace and connects, for each client,
to kube-apiserver's loopback port outside it. The kubelet, kube-proxy and CoreDNS live in
the namespace and reach the API server only through it; the API server itself never
listens anywhere but loopback.

Started by :class:`bertops.cluster.node.node.Node` as
``python -m bertops.cluster.node.forwarder --netns NAME --listen-port 6443 --target-port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

from bertops.cluster.node import netns


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def _relay(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target_port: int
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
    )


def listening_socket(namespace: str, port: int) -> socket.socket:
    """A listening socket on the namespace's loopback, made from inside the namespace."""
    with netns.inside(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(namespace: str, listen_port: int, target_port: int) -> None:
    sock = listening_socket(namespace, listen_port)
    server = await asyncio.start_server(lambda r, w: _relay(r, w, target_port), sock=sock)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.netns, args.listen_port, args.target_port))


if __name__ == "__main__":
    main()
