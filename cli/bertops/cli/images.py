"""``bertops images build``: the trainer/server (ML), operator and pause images built
from a Debian rootfs into OCI archives in the cache, without a registry or Docker, and
optionally imported into a containerd (see :mod:`bertops.cluster.images`). Registered
by :mod:`bertops.cli.main`."""

from __future__ import annotations

import signal
import sys
import time

import typer

images_app = typer.Typer(
    help="Container images built locally (no registry, no Docker).", no_args_is_help=True
)


def _say(message: str) -> None:
    typer.echo(f"[bertops images] {message}", err=True)


@images_app.callback()
def _images() -> None:
    """Container images built locally (no registry, no Docker)."""


@images_app.command("build")
def build_command(
    import_to: str = typer.Option(
        "", "--import-to", help="A containerd socket to import the images into (k8s.io)."
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Only this image (ml, operator, pause); repeatable."
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even when cached."),
    zstd: bool = typer.Option(
        False, "--zstd", help="zstd-compress the layers (about half the disk, more CPU)."
    ),
    namespace: str = typer.Option("k8s.io", help="The containerd namespace to import into."),
) -> None:
    """Build (or reuse from the cache) the images; with --import-to, import them."""
    from bertops.cluster.images.build import build
    from bertops.cluster.images.load import LoadError, import_images
    from bertops.cluster.images.recipes import RECIPES
    from bertops.cluster.images.rootfs import RootfsError, human

    unknown = [name for name in only if name not in RECIPES]
    if unknown:
        _say(f"error: unknown image {unknown}; known: {', '.join(RECIPES)}")
        raise typer.Exit(2)
    started = time.monotonic()
    # A SIGTERM (make interrupted, a CI timeout) would end Python without running the
    # build's finally blocks, leaving the chroot's mounts behind: make it an exit instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        built = build(only or None, rebuild=rebuild, zstd=zstd, say=_say)
        if import_to:
            import_images(import_to, namespace, [b.recipe.name for b in built], say=_say)
    except (RootfsError, LoadError) as error:
        _say(f"error: {error}")
        raise typer.Exit(1) from error
    for item in built:
        state = "cached" if item.reused else f"built in {item.seconds:.0f}s"
        typer.echo(f"{item.path}\t{human(item.size)}\t{state}\t{' '.join(item.recipe.tags)}")
    _say(f"done in {time.monotonic() - started:.0f}s")
