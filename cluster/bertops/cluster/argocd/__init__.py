"""A real Argo CD for the embedded cluster: built from its Go module (``build``) and run
on loopback beside the control plane (``run``). Used by ``bertops cluster argocd`` and the
Argo CD integration test."""
