"""Tests of gitops/: kustomize packaging, RBAC, Argo CD health and sync, monitoring."""
