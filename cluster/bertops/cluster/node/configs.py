"""Pure builders of the node's configuration files: containerd's config, the CNI network,
the kubelet's KubeletConfiguration, kube-proxy's configuration, CoreDNS's Corefile and the
kubeconfigs of the node's components. No I/O: each returns text from a :class:`NodeLayout`.

Called by :class:`bertops.cluster.node.node.Node`, which writes them into the cluster's
folder before it starts the processes; unit-tested in tests/cluster/test_node_configs.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

# Addresses that exist only inside the node's network namespace (never routed outside it).
POD_SUBNET = "10.204.0.0/24"
POD_GATEWAY = "10.204.0.1"
NODE_IP = "10.203.0.2"
# Service addresses: allocated by kube-apiserver, routed only inside a node's namespace.
SERVICE_SUBNET = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address: the `kubernetes` Service's
CLUSTER_DNS = "10.203.0.10"
CLUSTER_DOMAIN = "cluster.local"
# The API server as the node sees it: a relay listening on the namespace's loopback.
NODE_API_PORT = 6443
PAUSE_IMAGE = "bertops.local/pause:3.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins


@dataclass(frozen=True)
class NodeLayout:
    """Where everything of one node lives: all of it under the cluster's folder."""

    cluster_dir: Path
    node_name: str

    @property
    def root(self) -> Path:
        return self.cluster_dir / "node"

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cgroup_root(self) -> str:
        """The cgroup under which the kubelet puts every pod (removed by `down`)."""
        return f"/bertops-{self.node_name}"

    @property
    def egress_socket(self) -> Path:
        """The relay's HTTP CONNECT socket, through which the API server reaches the
        kubelet (logs, exec, port-forward) and pods (the proxy subresources)."""
        return self.root / "egress.sock"

    @property
    def api_server(self) -> str:
        return f"https://127.0.0.1:{NODE_API_PORT}"


def containerd_config(layout: NodeLayout, root: Path | None = None) -> str:
    """containerd 1.6 (Debian's) with the CRI plugin, runc under cgroupfs, the local pause
    image, and every path (state, sockets, pod network namespaces) in the node's folder;
    its root (the image store) too unless ``root`` names the shared one
    (:mod:`bertops.cluster.node.store`). restrict_oom_score_adj: this machine lacks
    CAP_SYS_RESOURCE, and runc fails every sandbox that asks for oom_score_adj -998
    without it."""
    base = layout.containerd_dir
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{root or base / "root"}"',
            f'state = "{base / "state"}"',
            "",
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{base / "containerd.sock.ttrpc"}"',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{base / "opt"}"',
            f"[{cri}]",
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_cdi = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.cni_conf_dir}"',
            "  max_conf_num = 1",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f'  Root = "{base / "runc"}"',
            "",
        ]
    )


def network_name(layout: NodeLayout) -> str:
    """The CNI network's name, which also prefixes libcni's cache entries for it."""
    return f"bertops-{layout.node_name}"


def cni_conflist(layout: NodeLayout) -> str:
    """One bridge with host-local addresses from POD_SUBNET, loopback and portmap. No
    masquerade: pods only talk to each other and to the node's namespace."""
    network = {
        "cniVersion": "0.4.0",
        "name": network_name(layout),
        "plugins": [
            {
                "type": "bridge",
                "bridge": "bertops0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_data_dir),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(network, indent=2)


def kubeconfig(server: str, ca_file: Path, token: str, user: str) -> str:
    """A token kubeconfig for one component."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bertops",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "bertops", "context": {"cluster": "bertops", "user": user}}],
        "current-context": "bertops",
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubelet_config(layout: NodeLayout, resolv_conf: Path, client_ca: Path) -> str:
    """The kubelet on this machine: cgroup v1 hybrid with the cgroupfs driver, swap
    tolerated, its API only on the node's address inside the namespace, pod logs in the
    node's folder, disk eviction relaxed for a shared development disk. Its API
    authenticates as on kubeadm's nodes: client certificates from the cluster CA (the
    API server's) and bearer tokens through a TokenReview, each request authorized by a
    SubjectAccessReview; nobody is anonymous."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "30s"},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(layout.pod_logs_dir),
        "staticPodPath": "",
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 30,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "enforceNodeAllocatable": [],
        "rotateCertificates": False,
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(kubeconfig_path: Path) -> str:
    """kube-proxy in iptables mode inside the node's namespace. masqueradeAll: a pod that
    reaches a Service backed by a pod on the same bridge gets its reply through the node
    rather than straight over the bridge, where it would bypass the NAT."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "clusterCIDR": POD_SUBNET,
        "iptables": {"masqueradeAll": True},
        # The conntrack table size is machine-wide; leave it as it is.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(kubeconfig_path: Path) -> str:
    """Cluster DNS for Services and `<hostname>.<subdomain>` pod names; no forwarding
    upstream (nothing outside the node is ever resolved or reached)."""
    return (
        f".:53 {{\n"
        f"    bind {CLUSTER_DNS}\n"
        f"    errors\n"
        f"    health 127.0.0.1:8081\n"
        f"    ready 127.0.0.1:8181\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig_path}\n"
        f"        pods insecure\n"
        f"        fallthrough in-addr.arpa ip6.arpa\n"
        f"        ttl 5\n"
        f"    }}\n"
        f"    cache 5\n"
        f"    loop\n"
        f"}}\n"
    )


def egress_selector_config(socket: Path) -> str:
    """kube-apiserver's EgressSelectorConfiguration: everything bound for the cluster
    network (kubelets, pods, Services) goes through an HTTP CONNECT proxy on ``socket``,
    the node's relay, which dials it from inside the node's network namespace."""
    config = {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "HTTPConnect",
                    "transport": {"uds": {"udsName": str(socket)}},
                },
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def resolv_conf() -> str:
    """The node's resolv.conf, which the kubelet merges into ClusterFirst pods' own: the
    cluster DNS only, never the machine's resolvers."""
    return f"nameserver {CLUSTER_DNS}\noptions ndots:5\n"
