"""The relays between the machine's loopback, where kube-apiserver listens, and the node's
network namespace, where the kubelet, kube-proxy, CoreDNS and the pods live. The API
server itself never listens anywhere but loopback, and nothing here listens outside the
namespace except a unix socket.

- Into the API server: listens inside the namespace on 127.0.0.1:6443 (the node
  components' kubeconfigs) and on the node's address at the API server's own port (the
  ``kubernetes`` Service's endpoint, so pods with in-cluster config reach it through
  kube-proxy), and connects each client to kube-apiserver's loopback port.
- Out of the API server: an HTTP CONNECT proxy on a unix socket, named by the API
  server's egress selector for the ``cluster`` network. Each CONNECT to the node's
  address or a pod address is dialled from inside the namespace; that is how
  ``kubectl logs``, ``exec`` and ``port-forward`` reach the kubelet. Any other target
  gets 403.

Started by :class:`bertops.cluster.node.node.Node` as ``python -m
bertops.cluster.node.forwarder --netns NAME --listen 127.0.0.1:6443 --listen ADDR:PORT
--target-port P --egress-socket PATH --allow CIDR...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
from pathlib import Path

from bertops.cluster.node import netns

CONNECT_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 8192


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


async def _join(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))


async def _to_apiserver(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int
) -> None:
    try:
        upstream = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        writer.close()
        return
    await _join(reader, writer, upstream)


def listening_socket(namespace: str, host: str, port: int) -> socket.socket:
    """A listening socket on an address of the namespace, made from inside it."""
    with netns.inside(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    sock.setblocking(False)
    return sock


def parse_connect(head: bytes) -> tuple[str, int]:
    """The (host, port) of an HTTP CONNECT request head; ValueError when it is none."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = request_line.partition(" ")
    target = rest.split(" ", 1)[0]
    host, _, port = target.rpartition(":")
    if method != "CONNECT" or not host or not port.isdigit():
        raise ValueError(f"not a CONNECT request: {request_line[:100]!r}")
    return host.strip("[]"), int(port)


def allowed(host: str, networks: list[ipaddress.IPv4Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # names are never resolved here: the API server dials addresses
    return any(address in network for network in networks)


class EgressProxy:
    """The API server's HTTP CONNECT proxy into the node's namespace."""

    def __init__(self, namespace: str, networks: list[ipaddress.IPv4Network]) -> None:
        self.namespace = namespace
        self.networks = networks

    async def _dial_inside(self, host: str, port: int) -> socket.socket:
        # The event loop is this process's only thread: setns moves just it, briefly.
        with netns.inside(self.namespace):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), CONNECT_TIMEOUT
            )
        except BaseException:
            sock.close()
            raise
        return sock

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            host, port = parse_connect(head[:MAX_REQUEST_HEAD])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await _answer(writer, b"400 Bad Request")
            return
        if not allowed(host, self.networks):
            await _answer(writer, b"403 Forbidden")
            return
        try:
            sock = await self._dial_inside(host, port)
        except (OSError, TimeoutError):
            await _answer(writer, b"502 Bad Gateway")
            return
        upstream = await asyncio.open_connection(sock=sock)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _join(reader, writer, upstream)


async def _answer(writer: asyncio.StreamWriter, status: bytes) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(
    namespace: str,
    listen: list[tuple[str, int]],
    target_port: int,
    egress_socket: Path | None,
    networks: list[ipaddress.IPv4Network],
) -> None:
    servers = [
        await asyncio.start_server(
            lambda r, w: _to_apiserver(r, w, target_port),
            sock=listening_socket(namespace, host, port),
        )
        for host, port in listen
    ]
    if egress_socket is not None:
        old_umask = os.umask(0o177)  # the socket is the API server's alone (root, 0600)
        try:
            proxy = EgressProxy(namespace, networks)
            servers.append(
                await asyncio.start_unix_server(
                    proxy.handle, path=str(egress_socket), limit=MAX_REQUEST_HEAD
                )
            )
        finally:
            os.umask(old_umask)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--listen", action="append", required=True, help="ADDRESS:PORT")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--egress-socket", type=Path)
    parser.add_argument("--allow", action="append", default=[], help="a CIDR CONNECT may reach")
    args = parser.parse_args()
    networks = [ipaddress.IPv4Network(cidr) for cidr in args.allow]
    listen = [_endpoint(item) for item in args.listen]
    if args.egress_socket is not None:
        args.egress_socket.unlink(missing_ok=True)  # a previous run's
    asyncio.run(serve(args.netns, listen, args.target_port, args.egress_socket, networks))


if __name__ == "__main__":
    main()
