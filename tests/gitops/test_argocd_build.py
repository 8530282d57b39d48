"""The pure parts of the Argo CD build (bertops.cluster.argocd.build): the wrapper
module's replace lines derived from argo-cd's own go.mod, and the version stamp."""

from __future__ import annotations

from datetime import UTC, datetime

from bertops.cluster.argocd.build import ARGOCD_VERSION, upstream_replaces, version_ldflags

GO_MOD = """module github.com/argoproj/argo-cd/v3

go 1.27.0

replace (
\tgithub.com/golang/protobuf => github.com/golang/protobuf v1.5.4

\t// Avoid CVE-2022-3064
\tgopkg.in/yaml.v2 => gopkg.in/yaml.v2 v2.4.0
\tk8s.io/api => k8s.io/api v0.37.0
\tgithub.com/example/local => ./local
)

replace github.com/argoproj/argo-cd/gitops-engine/v3 => ./gitops-engine
"""


def test_replaces_copy_upstream_and_publish_gitops_engine() -> None:
    assert upstream_replaces(GO_MOD) == [
        "\tgithub.com/golang/protobuf => github.com/golang/protobuf v1.5.4",
        "\tgopkg.in/yaml.v2 => gopkg.in/yaml.v2 v2.4.0",
        "\tk8s.io/api => k8s.io/api v0.37.0",
        "\tgithub.com/argoproj/argo-cd/gitops-engine/v3 => "
        f"github.com/argoproj/argo-cd/gitops-engine/v3 v{ARGOCD_VERSION}",
    ]


def test_version_is_stamped_as_upstream_does() -> None:
    flags = version_ldflags(datetime(2026, 11, 28, 20, 0, tzinfo=UTC))
    assert f"-X github.com/argoproj/argo-cd/v3/common.version={ARGOCD_VERSION}" in flags
    assert "buildDate=2026-11-28T20:00:00Z" in flags
