"""Container images without a registry or Docker: ``recipes`` (the ML, operator and pause
images and their cache keys), ``rootfs`` (debootstrap + chroot), ``oci`` (OCI archives
written directly), ``build`` (the cached builds) and ``load`` (``ctr images import`` and a
throwaway containerd). Used by ``bertops images build`` (bertops.cli.images)."""
