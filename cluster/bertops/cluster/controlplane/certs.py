"""Certificates and keys for an embedded cluster.

``generate`` writes the API server's PKI: a CA, a serving certificate signed by it for
127.0.0.1/localhost and for the names pods use (the ``kubernetes`` Service's address and
DNS names, the address a node's relay advertises), the client certificate the API server
presents to a kubelet, and the service-account signing key pair.
``generate_etcd`` writes a separate etcd PKI under ``etcd/``: its own CA (as kubeadm
does, so etcd trusts only certificates issued for talking to it), a serving certificate,
a peer certificate and the one client certificate kube-apiserver presents. Neither CA
key is ever written, so nothing can be issued from them later. Every file is created 0600
in a 0700 folder (:mod:`.files`).

Pure apart from writing the PEM files; called by ``Cluster.up`` for a cluster folder
that lacks them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bertops.cluster.files import private_dir, write_private

ETCD_CLIENT = "apiserver-etcd-client"
"""Basename of kube-apiserver's etcd client certificate and key, in ``etcd/``."""
KUBELET_CLIENT = "apiserver-kubelet-client"
"""Basename of the certificate and key kube-apiserver presents to kubelets."""
KUBELET_CLIENT_NAME = "kube-apiserver-kubelet-client"  # its common name (the RBAC user)
# What in-cluster clients dial: kubernetes.default.svc and its longer forms.
_SERVICE_NAMES = [
    x509.DNSName(name)
    for name in (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
]

_VALIDITY = dt.timedelta(days=365)
_LOOPBACK = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]
_SERVER = ExtendedKeyUsageOID.SERVER_AUTH
_CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    common_name: str,
    usages: list[x509.ObjectIdentifier],
    names: list[x509.GeneralName] | None = None,
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by ca: (certificate PEM, key PEM)."""
    ca_key, ca_cert = ca
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def generate(directory: Path, in_cluster_ips: tuple[str, ...] = ()) -> None:
    """Write ca.crt, server.crt/key, the kubelet client's .crt/.key and sa.key/pub into
    directory. ``in_cluster_ips``: the addresses pods reach the API server at (the
    ``kubernetes`` Service's, the advertised one), added to the serving certificate."""
    private_dir(directory)
    ca = _ca("bertops-embedded-ca")
    ips = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in in_cluster_ips]
    server_crt, server_key = _issue(
        ca, "kube-apiserver", [_SERVER], [*_LOOPBACK, *_SERVICE_NAMES, *ips]
    )
    kubelet_crt, kubelet_key = _issue(ca, KUBELET_CLIENT_NAME, [_CLIENT])
    write_private(directory / f"{KUBELET_CLIENT}.crt", kubelet_crt)
    write_private(directory / f"{KUBELET_CLIENT}.key", kubelet_key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(directory / "server.crt", server_crt)
    write_private(directory / "server.key", server_key)
    write_private(directory / "sa.key", _key_pem(sa_key))
    write_private(
        directory / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    write_private(directory / "ca.crt", _cert_pem(ca[1]))  # last: marks the set complete


def generate_etcd(directory: Path) -> None:
    """Write ca.crt, server/peer/apiserver-etcd-client .crt/.key into directory.

    etcd trusts exactly this CA for clients (``--client-cert-auth``), and only
    kube-apiserver gets a client certificate from it. The serving certificate also
    carries clientAuth because etcd's own gRPC gateway dials the server with it.
    """
    private_dir(directory)
    ca = _ca("bertops-etcd-ca")
    issued = {
        "server": _issue(ca, "etcd-server", [_SERVER, _CLIENT], _LOOPBACK),
        "peer": _issue(ca, "etcd-peer", [_SERVER, _CLIENT], _LOOPBACK),
        ETCD_CLIENT: _issue(ca, "kube-apiserver-etcd-client", [_CLIENT]),
    }
    for name, (cert, key) in issued.items():
        write_private(directory / f"{name}.crt", cert)
        write_private(directory / f"{name}.key", key)
    write_private(directory / "ca.crt", _cert_pem(ca[1]))  # last: marks the set complete
