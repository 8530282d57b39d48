"""Per-namespace keys on the real S3 server (VersityGW's internal IAM and bucket policy,
bertops.cluster.storage.tenants): a namespace's key reads, writes, copies, lists and
uploads in parts below its own prefix of the artifact root, and is refused everything
else (another namespace's prefix, the root above it, the bucket's other keys); the
operator's root key still reads every namespace's models. The policy is table-tested as
a pure function too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import s3fs

from bertops.cluster.storage.run import BUCKET, Storage
from bertops.cluster.storage.tenants import Tenants, policy, tenant_prefix
from tests.s3 import needs_s3


@pytest.mark.parametrize(
    ("prefix", "namespace", "expected"),
    [
        ("store", "team-a", "store/team-a"),
        ("/store/", "team-a", "store/team-a"),
        ("a/b", "ns", "a/b/ns"),
        ("", "ns", "ns"),
    ],
)
def test_tenant_prefix(prefix: str, namespace: str, expected: str) -> None:
    assert tenant_prefix(prefix, namespace) == expected


def test_the_policy_gives_each_key_its_own_prefix_only() -> None:
    tenants = {
        "b": {"accessKey": "KB", "secretKey": "SECRET-B", "prefix": "store/b"},
        "a": {"accessKey": "KA", "secretKey": "SECRET-A", "prefix": "store/a"},
    }
    document = policy(tenants)
    assert "SECRET" not in json.dumps(document)
    objects = [s for s in document["Statement"] if s["Sid"].startswith("objects-")]
    lists = [s for s in document["Statement"] if s["Sid"].startswith("list-")]
    assert [(s["Principal"]["AWS"], s["Resource"]) for s in objects] == [
        (["KA"], [f"arn:aws:s3:::{BUCKET}/store/a/*"]),
        (["KB"], [f"arn:aws:s3:::{BUCKET}/store/b/*"]),
    ]
    assert [s["Condition"]["StringLike"]["s3:prefix"] for s in lists] == [
        ["store/a", "store/a/*"],
        ["store/b", "store/b/*"],
    ]
    assert all(s["Effect"] == "Allow" for s in document["Statement"])


def _client(env: dict[str, str]) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        skip_instance_cache=True,
    )


def _outcome(attempt: Any) -> str:
    """``allowed``, or ``denied`` when the store answered 403 (s3fs: PermissionError)."""
    try:
        attempt()
    except PermissionError:
        return "denied"
    return "allowed"


@needs_s3
def test_a_namespace_key_reaches_only_its_own_prefix(
    s3_store: Storage, s3_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"tenants-{tmp_path.name}"
    tenants = Tenants(s3_store)
    own = _client(tenants.client_env("team-a", prefix))
    tenants.client_env("team-b", prefix)  # a second tenant: the policy keeps both
    mine, theirs = f"{BUCKET}/{prefix}/team-a", f"{BUCKET}/{prefix}/team-b"
    root = _client(s3_env)
    root.pipe_file(f"{theirs}/models/m/bertops-model.json", b"{}")

    big = tmp_path / "weights.bin"
    big.write_bytes(b"\0" * (12 << 20))  # over s3fs's part size: a multipart upload
    own.put_file(str(big), f"{mine}/models/m/weights.bin")
    own.copy(f"{mine}/models/m/weights.bin", f"{mine}/models/n/weights.bin")
    own.pipe_file(f"{mine}/models/m/bertops-model.json", b"{}")
    assert own.ls(f"{mine}/models/m") == [
        f"{mine}/models/m/bertops-model.json",
        f"{mine}/models/m/weights.bin",
    ]
    own.rm_file(f"{mine}/models/n/weights.bin")

    refused: list[tuple[str, Any]] = [
        ("read another namespace", lambda: own.cat_file(f"{theirs}/models/m/bertops-model.json")),
        ("write another namespace", lambda: own.pipe_file(f"{theirs}/x", b"x")),
        ("list another namespace", lambda: own.ls(theirs)),
        ("list the root above", lambda: own.ls(f"{BUCKET}/{prefix}")),
        ("write outside the root", lambda: own.pipe_file(f"{BUCKET}/elsewhere", b"x")),
    ]
    assert {what: _outcome(attempt) for what, attempt in refused} == {
        what: "denied" for what, _ in refused
    }
    # The operator's root key still reads every namespace.
    assert root.cat_file(f"{mine}/models/m/bertops-model.json") == b"{}"
    assert (s3_store.directory / "tenants.json").stat().st_mode & 0o777 == 0o600
