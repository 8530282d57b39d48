"""A real node for an embedded cluster: containerd with runc and CNI, the kubelet,
kube-proxy and CoreDNS inside the node's own network namespace, and
kube-controller-manager and kube-scheduler beside kube-apiserver on loopback.

Pods get addresses from a bridge that exists only in that namespace; a relay
(:mod:`.forwarder`) is the namespace's only way to the API server. Every file the node
writes (containerd's root and state, the kubelet's folder, pod logs, CNI addresses)
lives under ``<cluster>/node``; ``down`` stops the processes, kills what is left of the
pods, unmounts everything under that folder, deletes the namespace (its bridge, veths
and iptables rules go with it) and removes the node's cgroups.

Called by ``bertops cluster up --node`` / ``down`` and the e2e test fixture.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertops.cluster.files import private_dir, write_private
from bertops.cluster.node import cleanup, configs, identity, netns, store
from bertops.cluster.processes import alive, spawn, terminate
from bertops.cluster.teardown import Teardown

Progress = Callable[[str], None]


class NodeError(RuntimeError):
    """The node could not start; the message says which part and shows its log."""


@dataclass
class NodeState:
    node_name: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float | None = None
    # Machine paths (cleanup.MACHINE_PATHS) this node created, removed again by down.
    created_paths: list[str] = field(default_factory=list)
    # containerd's root when it is the shared image store (bertops.cluster.node.store).
    image_store: str = ""


# containerd refuses a socket path longer than this (the kernel's sun_path is 108 bytes).
MAX_SOCKET_PATH = 104
# (state key, binary name as the process shows it) in start order; stopped in reverse.
_HOST_PROCESSES = ("forwarder", "kube-controller-manager", "kube-scheduler")
_NETNS_PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns")


@dataclass
class Node:
    """Handle on the node of one embedded cluster (``<cluster dir>/node``)."""

    cluster_dir: Path
    cluster_name: str
    progress: Progress = field(default=lambda message: None, repr=False)

    @property
    def layout(self) -> configs.NodeLayout:
        return configs.NodeLayout(self.cluster_dir, self.cluster_name)

    @property
    def netns(self) -> str:
        return netns.netns_name(self.cluster_name)

    @property
    def _state_file(self) -> Path:
        return self.layout.root / "node.json"

    @property
    def admin_kubeconfig(self) -> Path:
        """The cluster's admin kubeconfig: for the set-up and checks only, never a
        component's credential."""
        return self.cluster_dir / "kubeconfig"

    def state(self) -> NodeState:
        if not self._state_file.exists():
            return NodeState(node_name=self.cluster_name)
        return NodeState(**json.loads(self._state_file.read_text()))

    def _save(self, state: NodeState) -> None:
        write_private(self._state_file, json.dumps(asdict(state), indent=2))

    def running(self) -> bool:
        pids = self.state().pids
        return bool(pids) and all(
            alive(pids.get(name), _binary(name)) for name in (*_HOST_PROCESSES, *_NETNS_PROCESSES)
        )

    # -- start -----------------------------------------------------------------------------

    def write_files(
        self, api_port: int, tokens: dict[str, str], containerd_root: Path | None = None
    ) -> dict[str, Path]:
        """Every configuration file the node's processes read; their paths by name. Each
        component has a kubeconfig with its own token (:mod:`.identity`)."""
        layout = self.layout
        for folder in (
            layout.root,
            layout.containerd_dir,
            layout.cni_conf_dir,
            layout.cni_data_dir,
            layout.kubelet_dir,
            layout.pod_logs_dir,
        ):
            private_dir(folder)
        ca = self.cluster_dir / "pki" / "ca.crt"
        files = {
            "containerd": layout.root / "containerd.toml",
            "cni": layout.cni_conf_dir / "10-bertops.conflist",
            "kubelet": layout.root / "kubelet.yaml",
            "kube-proxy": layout.root / "kube-proxy.yaml",
            "corefile": layout.root / "Corefile",
            "resolv": layout.root / "resolv.conf",
            **{
                f"{name}.kubeconfig": layout.root / f"{name}.kubeconfig"
                for name in identity.COMPONENTS
            },
        }
        write_private(files["containerd"], configs.containerd_config(layout, containerd_root))
        write_private(files["cni"], configs.cni_conflist(layout))
        write_private(files["resolv"], configs.resolv_conf())
        write_private(files["kubelet"], configs.kubelet_config(layout, files["resolv"], ca))
        write_private(
            files["kube-proxy"], configs.kube_proxy_config(files["kube-proxy.kubeconfig"])
        )
        write_private(files["corefile"], configs.corefile(files["coredns.kubeconfig"]))
        for name in identity.COMPONENTS:
            # The controllers run beside the API server; the rest reach it by the relay.
            host_side = name in ("kube-controller-manager", "kube-scheduler")
            server = f"https://127.0.0.1:{api_port}" if host_side else layout.api_server
            write_private(
                files[f"{name}.kubeconfig"], configs.kubeconfig(server, ca, tokens[name], name)
            )
        return files

    def up(
        self,
        binaries: Any,
        api_port: int,
        tokens: dict[str, str],
        load_images: Callable[[Path], None],
        timeout: float = 120.0,
    ) -> NodeState:
        """Start every part, load the images, wait until the Node is Ready."""
        if self.running():
            self.progress(f"node {self.cluster_name!r} already running")
            return self.state()
        self.down(quiet=True)
        socket = self.layout.containerd_dir / "containerd.sock.ttrpc"  # the longest
        if len(str(socket)) > MAX_SOCKET_PATH:
            raise NodeError(
                f"{socket} is {len(str(socket))} bytes, longer than a unix socket path may be "
                f"({MAX_SOCKET_PATH}): set BERTOPS_HOME to a shorter folder"
            )
        started = time.monotonic()
        shared = store.claim(self.cluster_dir)
        if shared is None:
            self.progress("the shared image store is in use by another node: using its own")
        files = self.write_files(api_port, tokens, shared)
        netns.create(self.netns, [configs.NODE_IP, configs.CLUSTER_DNS], configs.SERVICE_SUBNET)
        state = NodeState(
            node_name=self.cluster_name,
            started_at=time.time(),
            created_paths=cleanup.missing_machine_paths(),
            image_store=str(shared or ""),
        )
        try:
            self._start(state, "forwarder", self._forwarder_argv(api_port))
            identity.apply_bootstrap_rbac(self.admin_kubeconfig)
            self._start(
                state, "containerd", ["containerd", f"--config={files['containerd']}"], inside=True
            )
            self._wait(self.layout.containerd_socket.exists, "containerd's socket", 30)
            step = time.monotonic()
            load_images(self.layout.containerd_socket)
            self.progress(f"images loaded in {time.monotonic() - step:.0f}s")
            self._start_controllers(state, binaries, files)
            self._start_node_agents(state, binaries, files)
            self._wait(self.node_ready, f"Node {self.cluster_name} Ready", timeout)
        except BaseException:
            self.down(quiet=True)
            raise
        self.progress(
            f"node {self.cluster_name!r} ready in {time.monotonic() - started:.1f}s "
            f"(pods on {configs.POD_SUBNET} inside network namespace {self.netns})"
        )
        return state

    def _forwarder_argv(self, api_port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bertops.cluster.node.forwarder",
            f"--netns={self.netns}",
            f"--listen=127.0.0.1:{configs.NODE_API_PORT}",
            f"--listen={configs.NODE_IP}:{api_port}",
            f"--target-port={api_port}",
            f"--egress-socket={self.layout.egress_socket}",
            f"--allow={configs.NODE_IP}/32",
            f"--allow={configs.POD_SUBNET}",
        ]

    def _start_controllers(self, state: NodeState, binaries: Any, files: dict[str, Path]) -> None:
        pki = self.cluster_dir / "pki"
        self._start(
            state,
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={files['kube-controller-manager.kubeconfig']}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                # Each controller acts as its own service account with its bootstrap role.
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
                "--controllers=*",
                "--node-monitor-grace-period=40s",
                "--v=1",
            ],
        )
        self._start(
            state,
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--kubeconfig={files['kube-scheduler.kubeconfig']}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _start_node_agents(self, state: NodeState, binaries: Any, files: dict[str, Path]) -> None:
        layout = self.layout
        cleanup.make_cgroups(layout.cgroup_root)
        self._start(
            state,
            "kubelet",
            [
                str(binaries.kubelet),
                f"--config={files['kubelet']}",
                f"--kubeconfig={files['kubelet.kubeconfig']}",
                f"--root-dir={layout.kubelet_dir}",
                f"--cert-dir={layout.kubelet_dir / 'pki'}",
                f"--hostname-override={self.cluster_name}",
                f"--node-ip={configs.NODE_IP}",
                "--v=1",
            ],
            inside=True,
        )
        self._start(
            state,
            "kube-proxy",
            [
                str(binaries.kube_proxy),
                f"--config={files['kube-proxy']}",
                f"--hostname-override={self.cluster_name}",
                "--v=1",
            ],
            inside=True,
        )
        self._start(
            state,
            "coredns",
            [
                str(binaries.coredns),
                f"-conf={files['corefile']}",
            ],
            inside=True,
        )

    def _start(self, state: NodeState, name: str, argv: list[str], inside: bool = False) -> None:
        prefix = netns.enter_argv(self.netns) if inside else []
        state.pids[name] = spawn([*prefix, *argv], self.layout.root / f"{name}.log", umask=0o022)
        self._save(state)
        time.sleep(0.2)
        if not alive(state.pids[name], _binary(name)):
            raise NodeError(f"{name} exited at start; last log lines:\n{self.log_tail(name)}")

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for name, pid in self.state().pids.items():
                if not alive(pid, _binary(name)):
                    raise NodeError(f"{name} exited; last log lines:\n{self.log_tail(name)}")
            time.sleep(0.5)
        raise NodeError(f"no {what} after {timeout:.0f}s; kubelet log:\n{self.log_tail('kubelet')}")

    def node_ready(self) -> bool:
        """The Node object's Ready condition is True."""
        from kubernetes import client, config

        with config.new_client_from_config(str(self.admin_kubeconfig)) as api_client:
            try:
                node = client.CoreV1Api(api_client).read_node(self.cluster_name)
            except client.ApiException:
                return False
        conditions = (node.status.conditions if node.status else None) or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.layout.root / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- stop ------------------------------------------------------------------------------

    def down(self, *, quiet: bool = False, timeout: float = 20.0) -> bool:
        """Stop everything the node started and remove what it left; whether it ran.
        Each stage runs even when one before it failed (a process that will not stop
        must not leave the mounts and the network namespace behind); the failures are
        raised together at the end (:class:`bertops.cluster.teardown.DownError`)."""
        teardown = Teardown()
        # An unreadable state file loses the pids, not the rest: leftovers are still
        # found by cgroup and command line, mounts by path, the namespace by name.
        state = teardown.run("node state", self.state) or NodeState(node_name=self.cluster_name)
        was_running = False
        for name in reversed((*_HOST_PROCESSES, *_NETNS_PROCESSES)):
            stop = functools.partial(self._stop, state, name, timeout)
            was_running |= bool(teardown.run(name, stop))
        layout = self.layout
        groups = cleanup.cgroup_dirs(layout.cgroup_root)
        leftovers = cleanup.pids_in_cgroups(groups) | cleanup.pids_mentioning(f"{layout.root}/")
        teardown.run("leftover processes", lambda: cleanup.kill_all(leftovers))
        unmounted = teardown.run("mounts", lambda: _unmount_everything(layout.root)) or []
        teardown.run("network namespace", lambda: netns.delete(self.netns))
        teardown.run("cgroups", lambda: cleanup.remove_cgroups(groups))
        network = configs.network_name(layout)
        teardown.run(
            "machine paths",
            lambda: cleanup.remove_machine_leftovers(layout.root, network, state.created_paths),
        )
        teardown.run("image store", lambda: store.release(self.cluster_dir))
        if state.pids:
            state.pids = {}
            teardown.run("state", lambda: self._save(state))
        if (was_running or unmounted) and not quiet:
            self.progress(f"node {self.cluster_name!r} stopped ({len(unmounted)} mounts removed)")
        teardown.finish()
        return was_running

    @staticmethod
    def _stop(state: NodeState, name: str, timeout: float) -> bool:
        pid = state.pids.get(name)
        if not alive(pid, _binary(name)):
            return False
        terminate(pid, _binary(name), timeout)  # type: ignore[arg-type]
        return True


def _unmount_everything(root: Path) -> list[Path]:
    """Unmount all below the node's folder; an error names what stayed mounted."""
    from bertops.cluster.mounts import mounts_under

    unmounted = cleanup.unmount_all(root) if root.exists() else []
    left = mounts_under(root) if root.exists() else []
    if left:
        raise NodeError(f"still mounted after umount -l: {', '.join(map(str, left))}")
    return unmounted


def _binary(name: str) -> str:
    """What /proc/<pid>/cmdline shows first for each part (nsenter execs the command)."""
    return Path(sys.executable).name if name == "forwarder" else name
