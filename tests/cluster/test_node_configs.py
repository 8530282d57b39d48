"""The node's configuration builders and the pure parts of its clean-up: every path the
node writes is under the cluster's folder, the addresses stay inside its namespace, and
mounts are found and ordered children first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bertops.cluster import mounts
from bertops.cluster.node import configs


@pytest.fixture
def layout(tmp_path: Path) -> configs.NodeLayout:
    return configs.NodeLayout(tmp_path / "clusters" / "demo", "demo")


def test_containerd_keeps_every_path_in_the_node_folder(layout: configs.NodeLayout) -> None:
    text = configs.containerd_config(layout)
    paths = [
        line.split("=", 1)[1].strip().strip('"')
        for line in text.splitlines()
        if line.strip().startswith(("root", "state", "address", "path", "conf_dir"))
    ]
    assert paths and all(p.startswith(str(layout.root)) for p in paths), paths
    assert "restrict_oom_score_adj = true" in text
    assert "netns_mounts_under_state_dir = true" in text
    assert f'sandbox_image = "{configs.PAUSE_IMAGE}"' in text


def test_cni_network_is_a_bridge_without_masquerade(layout: configs.NodeLayout) -> None:
    network = json.loads(configs.cni_conflist(layout))
    bridge = network["plugins"][0]
    assert (bridge["type"], bridge["ipMasq"]) == ("bridge", False)
    assert bridge["ipam"]["dataDir"].startswith(str(layout.root))
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": configs.POD_SUBNET, "gateway": configs.POD_GATEWAY}]
    ]


def test_kubelet_runs_on_this_machine_and_logs_into_the_node_folder(
    layout: configs.NodeLayout,
) -> None:
    config = yaml.safe_load(
        configs.kubelet_config(layout, layout.root / "resolv.conf", layout.root / "ca.crt")
    )
    assert (config["failCgroupV1"], config["failSwapOn"], config["cgroupDriver"]) == (
        False,
        False,
        "cgroupfs",
    )
    assert config["podLogsDir"].startswith(str(layout.root))
    assert config["clusterDNS"] == [configs.CLUSTER_DNS]
    assert config["cgroupRoot"] == "/bertops-demo"
    assert config["containerRuntimeEndpoint"] == f"unix://{layout.containerd_socket}"


def test_dns_resolves_only_the_cluster(tmp_path: Path) -> None:
    corefile = configs.corefile(tmp_path / "kubeconfig")
    assert "forward" not in corefile and f"bind {configs.CLUSTER_DNS}" in corefile
    assert configs.resolv_conf().splitlines()[0] == f"nameserver {configs.CLUSTER_DNS}"


MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
90 22 0:50 / /x/node/containerd/state/rootfs rw - overlay overlay rw
91 90 0:51 / /x/node/containerd/state/rootfs/proc rw - proc proc rw
92 22 0:52 / /x/node/kubelet/pods/a\\040b rw - tmpfs tmpfs rw
93 22 0:53 / /x/nodeother rw - tmpfs tmpfs rw
"""


def test_mounts_under_a_folder_deepest_first() -> None:
    found = mounts.mounts_under(Path("/x/node"), MOUNTINFO)
    assert set(found) == {
        Path("/x/node/containerd/state/rootfs/proc"),
        Path("/x/node/containerd/state/rootfs"),
        Path("/x/node/kubelet/pods/a b"),
    }
    rootfs = Path("/x/node/containerd/state/rootfs")
    assert found.index(rootfs / "proc") < found.index(rootfs)
