"""Per-namespace keys on the embedded S3 server: each tenant namespace gets an account of
its own (VersityGW's internal IAM, role ``user``), and the bucket's policy lets that
account read, write and list only ``<prefix>/<namespace>/``, the namespace's part of an
artifact root ``s3://<bucket>/<prefix>``. So the split of the store by namespace is the
store's rule, not only the operator's: a pod handed its namespace's key cannot name
another namespace's objects at all.

Keys are generated once and kept in ``<storage>/tenants.json`` (mode 0600), created on the
server through its admin API (signed with the root key, as ``versitygw admin`` does), and
the policy is rewritten from that file whenever a tenant is added. Called by ``bertops
cluster storage tenant`` and the tests; the root key (the operator's, which reads every
namespace's models) stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from bertops.cluster.files import write_private
from bertops.cluster.storage.run import BUCKET, REGION, Credentials, Storage

# What a tenant may do to its objects: read (GetObject also allows HEAD), write, copy
# (a publication copies from its temporary prefix), delete, and multipart uploads.
OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def tenant_prefix(prefix: str, namespace: str) -> str:
    """The namespace's part of the artifact root, as an object key prefix (no slashes
    around it): ``store/<ns>`` for ``s3://bertops/store``."""
    return "/".join(part for part in (prefix.strip("/"), namespace) if part)


def policy(tenants: dict[str, dict[str, str]], bucket: str = BUCKET) -> dict[str, Any]:
    """The bucket policy for every tenant: its objects below its prefix, and listing only
    there. Pure."""
    statements: list[dict[str, Any]] = []
    for namespace, tenant in sorted(tenants.items()):
        principal = {"AWS": [tenant["accessKey"]]}
        own = tenant["prefix"]
        statements += [
            {
                "Sid": f"objects-{namespace}",
                "Effect": "Allow",
                "Principal": principal,
                "Action": OBJECT_ACTIONS,
                "Resource": [f"arn:aws:s3:::{bucket}/{own}/*"],
            },
            {
                "Sid": f"list-{namespace}",
                "Effect": "Allow",
                "Principal": principal,
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [own, f"{own}/*"]}},
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def _access_key(namespace: str) -> str:
    """A readable, stable access key id per namespace (20 characters, as AWS's)."""
    return "BTN" + hashlib.sha256(namespace.encode()).hexdigest()[:17].upper()


class Tenants:
    """The tenant accounts of one embedded S3 server (see the module docstring)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.path = storage.directory / "tenants.json"

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        found: dict[str, dict[str, str]] = json.loads(self.path.read_text())
        return found

    def credentials(self, namespace: str, prefix: str) -> Credentials:
        """The namespace's key, made (and allowed its prefix of the bucket) on first use."""
        tenants = self._load()
        tenant = tenants.get(namespace)
        own = tenant_prefix(prefix, namespace)
        if tenant is None or tenant["prefix"] != own:
            tenant = tenant or {
                "accessKey": _access_key(namespace),
                "secretKey": secrets.token_urlsafe(30),
            }
            tenant["prefix"] = own
            tenants[namespace] = tenant
            write_private(self.path, json.dumps(tenants, indent=1))
        key = Credentials(tenant["accessKey"], tenant["secretKey"])
        self._ensure_account(key)
        self._put_policy(tenants)
        return key

    def client_env(self, namespace: str, prefix: str) -> dict[str, str]:
        """The namespace's S3 client environment: the server's, with the tenant's key."""
        key = self.credentials(namespace, prefix)
        return {
            **self.storage.client_env(),
            "AWS_ACCESS_KEY_ID": key.access_key,
            "AWS_SECRET_ACCESS_KEY": key.secret_key,
        }

    def _endpoint(self) -> str:
        endpoint = self.storage.endpoint
        if endpoint is None:
            raise RuntimeError("the S3 server is not running: `bertops cluster storage up`")
        return endpoint

    def _ensure_account(self, key: Credentials) -> None:
        """Create the account through VersityGW's admin API unless it exists."""
        body = (
            f"<Account><Access>{key.access_key}</Access><Secret>{key.secret_key}</Secret>"
            "<Role>user</Role><UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID>"
            "</Account>"
        ).encode()
        status, text = _signed(
            "PATCH", f"{self._endpoint()}/create-user", body, self.storage.credentials()
        )
        if status >= 400 and "exists" not in text.lower():
            raise RuntimeError(f"cannot create the S3 account {key.access_key}: {text[:300]}")

    def _put_policy(self, tenants: dict[str, dict[str, str]]) -> None:
        import botocore.session

        root = self.storage.credentials()
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self._endpoint(),
            region_name=REGION,
            aws_access_key_id=root.access_key,
            aws_secret_access_key=root.secret_key,
        )
        try:
            client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy(tenants)))
        finally:
            client.close()


def _signed(method: str, url: str, body: bytes, key: Credentials) -> tuple[int, str]:
    """An HTTP request signed with AWS SigV4 for service ``s3`` (the admin API's scheme)."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method=method, url=url, data=body)
    request.headers["X-Amz-Content-Sha256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(BotoCredentials(key.access_key, key.secret_key), "s3", REGION).add_auth(request)
    prepared = urllib.request.Request(
        url, data=body, method=method, headers=dict(request.headers.items())
    )
    try:
        with urllib.request.urlopen(prepared, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
