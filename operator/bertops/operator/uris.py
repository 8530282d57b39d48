"""Which URIs a custom resource may name: the operator's allowlist, checked before a step
starts and before the operator itself reads an artifact.

A local step runs as the operator's user, so a dataset whose ``source.uri`` is the
control plane's token file or kubeconfig would copy it into an artifact; on Kubernetes an
``http(s)`` URI could reach the cloud's instance metadata service and its credentials.
So: a path (or ``file://``) must lie under the namespace's own part of the artifact
store, ``<root>/<namespace>`` (tenants never name each other's data, models or
feedback), or an explicitly allowed prefix (the operator's, shared by every namespace);
a remote URI needs an allowed scheme (or an allowed prefix), and an http(s) host may not
be a metadata endpoint, link-local, unspecified or (unless allowed) loopback. An artifact
root in an object store (``s3://bucket/prefix``) is split by namespace the same way, and
object keys with ``.`` or ``..`` segments are refused. Within the store this is the
operator's rule only: the store's own credentials decide what a step could reach, so on a
shared cluster each tenant's steps should get a key scoped to its prefix.

Pure functions of :class:`~bertops.operator.config.OperatorConfig`, called by the planners
and the reconciler. Host checks are syntactic: a DNS name that resolves to a metadata
address is stopped only by an egress NetworkPolicy, which a cluster should have anyway.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import socket
from urllib.parse import urlsplit

from bertops.operator.config import OperatorConfig

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_IPV6_HOST = re.compile(r"//\[[0-9a-fA-F:.]*\]")
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _normalized(uri: str) -> str:
    """Paths and file:// URIs as absolute normalised paths (``..`` resolved); remote URIs
    unchanged."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if _SCHEME.match(uri):
        return uri
    return posixpath.normpath(uri) if uri.startswith("/") else uri


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP a literal host denotes, including the legacy forms a URL library or libc
    still accepts (2852039166, 0xA9FEA9FE, 0251.0376.0251.0376)."""
    try:
        found = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def http_host_problem(uri: str, allow_loopback: bool) -> str | None:
    host = (urlsplit(uri).hostname or "").rstrip(".").lower()
    if not host:
        return "has no host"
    if host in METADATA_HOSTS:
        return f"names the cloud metadata service {host}"
    address = _address(host)
    loopback = host == "localhost" or host.endswith(".localhost")
    if address is not None:
        if address in METADATA_ADDRESSES:
            return f"names the cloud metadata address {address}"
        if address.is_link_local or address.is_unspecified or address.is_multicast:
            return f"names the link-local, unspecified or multicast address {address}"
        loopback = loopback or address.is_loopback
    if loopback and not allow_loopback:
        return "names a loopback host (allowed only with --allow-loopback-http)"
    return None


def tenant_root(config: OperatorConfig, namespace: str) -> str:
    """The part of the artifact store a namespace's objects may name: ``<root>/<ns>``."""
    return config.artifact_uri(namespace)


def uri_problem(uri: str, config: OperatorConfig, namespace: str) -> str | None:
    """Why an object in ``namespace`` may not use this URI, or None when the allowlist
    permits it: of the artifact store only the namespace's own tree, ``<root>/<ns>``
    (another tenant's data, models and feedback are out of reach), plus the operator's
    explicitly allowed prefixes and schemes."""
    if "::" in _IPV6_HOST.sub("", uri):
        return "chained fsspec URLs (a::b) are not allowed"
    target = _normalized(uri)
    prefixes = (tenant_root(config, namespace), *config.allowed_uri_prefixes)
    scheme_match = _SCHEME.match(target)
    if scheme_match is None:
        if not target.startswith("/"):
            return "must be an absolute path or a URI"
        if any(_under(target, _normalized(p)) for p in prefixes if p.startswith(("/", "file:"))):
            return None
        allowed = ", ".join(p for p in prefixes if p.startswith(("/", "file:")))
        return (
            f"is outside this namespace's part of the artifact store and the allowed "
            f"prefixes ({allowed})"
        )
    scheme = scheme_match.group(1).lower()
    if problem := _object_store_problem(target, config, namespace):
        return problem
    if scheme in ("http", "https"):
        problem = http_host_problem(target, config.allow_loopback_http)
        if problem:
            return problem
    if any(_under(target, p) for p in prefixes if _SCHEME.match(p)):
        return None
    if scheme not in config.allowed_uri_schemes:
        return (
            f"uses scheme {scheme!r}; allowed: {', '.join(config.allowed_uri_schemes) or 'none'}"
            " (or an allowed prefix)"
        )
    return None


def _object_store_problem(target: str, config: OperatorConfig, namespace: str) -> str | None:
    """An object store has no folders: ``..`` in a key is kept as it is by S3, but a
    gateway in front of a filesystem may resolve it, so such keys are refused. And an
    artifact root in an object store is split by namespace like a local one."""
    segments = target.split("://", 1)[1].split("/")
    if any(segment in (".", "..") for segment in segments[1:]):
        return "has '.' or '..' segments (object keys are not paths)"
    root = config.artifact_root.rstrip("/")
    own = tenant_root(config, namespace).rstrip("/")
    if _SCHEME.match(root) and _under(target, root) and not _under(target, own):
        return f"is outside this namespace's part of the artifact store ({own})"
    return None


def looks_like_uri(value: str) -> bool:
    """A ModelSource.tokenizer is a folder/URI or an installed package name."""
    return "/" in value or _SCHEME.match(value) is not None


def refusals(named: dict[str, str | None], config: OperatorConfig, namespace: str) -> list[str]:
    """One message per refused URI, each naming the spec field it came from."""
    found = []
    for field_path, uri in named.items():
        if uri is None:
            continue
        problem = uri_problem(uri, config, namespace)
        if problem:
            found.append(f"{field_path} {uri!r} {problem}")
    return found
