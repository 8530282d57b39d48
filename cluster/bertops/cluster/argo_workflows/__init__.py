"""Argo Workflows for local tests of ``engine: argo``: the workflow controller and Argo's
offline lint built from the Go module at a pinned version (``build``), run on loopback
beside the embedded control plane (``run``). Never shipped: see ``build``."""
