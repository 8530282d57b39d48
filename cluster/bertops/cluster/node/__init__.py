"""The node side of the embedded cluster: ``build`` compiles kubelet,
kube-controller-manager, kube-scheduler, kube-proxy, kubectl and CoreDNS from their Go
modules into a versioned cache beside the control plane's kube-apiserver and etcd.
"""
