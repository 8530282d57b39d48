"""The operator's URI allowlist (bertops.operator.uris): what a spec may read or write."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.operator.config import OperatorConfig
from bertops.operator.uris import uri_problem

CONFIG = OperatorConfig(
    artifact_root="/store",
    state_dir=Path("/state"),
    allowed_uri_prefixes=("/data/team-a", "s3://team-a/"),
)

ALLOWED = [
    "/store/ns/models/m/g1",
    "file:///store/ns/datasets/d/g1",
    "/data/team-a/tweets.csv",
    "/data/team-a",
    "s3://team-a/tweets.parquet",
    "s3://other-bucket/x.csv",  # an allowed scheme
    "https://example.com/data.csv",
    "https://[2001:db8::1]/d.csv",
]

REFUSED = [
    # A local step runs as the operator: its kubeconfig, token and keys are off limits.
    (
        "/root/.bertops/clusters/demo/kubeconfig",
        "outside this namespace's part of the artifact store",
    ),
    (
        "/root/.bertops/clusters/demo/pki/token.csv",
        "outside this namespace's part of the artifact store",
    ),
    (
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "outside this namespace's part of the artifact store",
    ),
    ("/store/../root/.kube/config", "outside this namespace's part of the artifact store"),
    (
        "/data/team-ab/x.csv",
        "outside this namespace's part of the artifact store",
    ),  # a prefix is a folder
    # Another tenant's tree: its raw feedback texts, its models, a write into its data.
    ("/store/other/deployments/web/feedback", "outside"),
    ("/store/other/models/m/g1", "outside"),
    ("file:///store/other/datasets/d/g1", "outside"),
    ("/store/ns/../other/data/x.csv", "outside"),
    ("/store", "outside"),  # the root itself holds every tenant
    ("/store/nsx/data.csv", "outside"),  # a namespace is a folder, not a prefix
    ("file:///etc/passwd", "outside this namespace's part of the artifact store"),
    ("data/x.csv", "must be an absolute path"),
    ("simplecache::s3://team-a/x", "chained fsspec URLs"),
    ("ftp://example.com/x.csv", "uses scheme 'ftp'"),
    ("http://example.com/x.csv", "uses scheme 'http'"),
    ("memory://x", "uses scheme 'memory'"),
    # Cloud metadata, link-local and loopback, in every spelling a URL parser accepts.
    ("https://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ("https://[fd00:ec2::254]/latest/", "cloud metadata address"),
    ("https://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
    ("https://METADATA.google.internal./x", "cloud metadata service"),
    ("https://2852039166/latest/", "cloud metadata address"),
    ("https://0xA9FEA9FE/latest/", "cloud metadata address"),
    ("https://0251.0376.0251.0376/latest/", "cloud metadata address"),
    ("https://[::ffff:169.254.169.254]/x", "cloud metadata address"),
    ("https://169.254.170.2/v2/credentials", "link-local"),
    ("https://[fe80::1]/x", "link-local"),
    ("https://0.0.0.0:6443/api", "unspecified"),
    ("https://127.0.0.1:6443/api", "loopback"),
    ("https://localhost/x", "loopback"),
    ("https://[::1]/x", "loopback"),
    ("https:///x", "has no host"),
]


@pytest.mark.parametrize("uri", ALLOWED)
def test_allowed(uri: str) -> None:
    assert uri_problem(uri, CONFIG, "ns") is None


@pytest.mark.parametrize(("uri", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(uri: str, why: str) -> None:
    problem = uri_problem(uri, CONFIG, "ns")
    assert problem is not None and why in problem


S3_ROOT = OperatorConfig(artifact_root="s3://bertops/store", state_dir=Path("/state"))


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("s3://bertops/store/ns/models/m/g1", None),
        ("s3://bertops/store/ns", None),
        ("s3://public-data/tweets.csv", None),  # outside the store: the scheme allows it
        ("s3://bertops/store/other/models/m/g1", "outside this namespace's part"),
        ("s3://bertops/store/other/deployments/web/feedback", "outside this namespace's part"),
        ("s3://bertops/store", "outside this namespace's part"),  # every tenant's tree
        ("s3://bertops/store/nsx/data.csv", "outside this namespace's part"),
        ("s3://bertops/store/ns/../other/models/m", "'..' segments"),
        ("s3://bertops/store/ns/./x", "'..' segments"),
    ],
)
def test_an_artifact_store_in_s3_is_split_by_namespace(uri: str, why: str | None) -> None:
    problem = uri_problem(uri, S3_ROOT, "ns")
    if why is None:
        assert problem is None
    else:
        assert problem is not None and why in problem


def test_loopback_and_http_when_the_operator_allows_them() -> None:
    config = OperatorConfig(
        artifact_root="/store",
        state_dir=Path("/state"),
        allowed_uri_schemes=("http", "https"),
        allow_loopback_http=True,
    )
    assert uri_problem("http://127.0.0.1:9000/d.csv", config, "ns") is None
    # Metadata stays refused whatever else is allowed.
    assert uri_problem("http://169.254.169.254/", config, "ns") is not None
