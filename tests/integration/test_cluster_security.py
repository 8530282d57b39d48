"""The running embedded cluster keeps its secrets to itself: etcd answers only TLS clients
holding a certificate from its own CA (kube-apiserver's), and nothing in the cluster
folder, including what etcd and kube-apiserver write there, is readable by others."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bertops.cluster.controlplane import certs

pytestmark = pytest.mark.integration


def etcd_range(url: str, context: ssl.SSLContext | None = None) -> int | str:
    """The HTTP status of a keys-only range request over every key, or the error that
    ended it (a refused TLS handshake surfaces as an SSL or connection error)."""
    everything = {
        "key": base64.b64encode(b"\0").decode(),
        "range_end": base64.b64encode(b"\0").decode(),
        "keys_only": True,
    }
    request = urllib.request.Request(
        f"{url}/v3/kv/range", data=json.dumps(everything).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError) as error:
        return f"{type(error).__name__}: {error}"


def tls_context(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def test_etcd_refuses_plain_http_and_clients_without_its_certificate(
    cluster: Any, tmp_path: Path
) -> None:
    etcd_url = cluster.state().etcd_url
    assert etcd_url.startswith("https://127.0.0.1:")
    pki = cluster.directory / "pki" / "etcd"
    ca = pki / "ca.crt"
    apiserver = (pki / f"{certs.ETCD_CLIENT}.crt", pki / f"{certs.ETCD_CLIENT}.key")

    plain = etcd_range(f"http://{urlsplit(etcd_url).netloc}")
    assert plain != 200, "etcd answered plain HTTP"
    certless = etcd_range(etcd_url, tls_context(ca))
    assert certless != 200, "etcd answered a TLS client without a certificate"
    assert isinstance(certless, str), certless
    # A well-formed client certificate from another CA (the API server's kind) is refused.
    certs.generate_etcd(tmp_path)
    stranger = (tmp_path / f"{certs.ETCD_CLIENT}.crt", tmp_path / f"{certs.ETCD_CLIENT}.key")
    assert etcd_range(etcd_url, tls_context(ca, stranger)) != 200
    # The client certificate kube-apiserver holds is accepted: the refusals were not luck.
    assert etcd_range(etcd_url, tls_context(ca, apiserver)) == 200


def test_cluster_folder_is_private(cluster: Any) -> None:
    assert cluster.ready()
    assert (cluster.directory / "etcd").is_dir(), "etcd has written its data"
    loose = [
        f"{path} {oct(stat.S_IMODE(path.lstat().st_mode))}"
        for path in [cluster.directory, *cluster.directory.rglob("*")]
        if path.lstat().st_mode & 0o077
    ]
    assert loose == []
