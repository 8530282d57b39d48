"""The embedded S3 server for tests (VersityGW, :mod:`bertops.cluster.storage`): the skip
when it is not built, and :func:`client_env` for a running one. The session fixture
``s3_store`` (tests/conftest.py) starts one server per test process."""

from __future__ import annotations

import pytest

from bertops.cluster.storage.build import binary_path

needs_s3 = pytest.mark.skipif(
    not binary_path().is_file(),
    reason=f"VersityGW is not built in {binary_path()}: run `make storage` (about a minute)",
)
