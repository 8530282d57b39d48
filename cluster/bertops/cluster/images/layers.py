"""The two layers of a Python image: a dependency layer (the Debian base, a venv with every
dependency the image's extras pin, its user) keyed only on ``constraints.txt``,
``pyproject.toml`` and the recipe, and a small project layer (``pip install --no-deps``
of this checkout) rebuilt on every source edit.

The dependency layer is cached with its root filesystem (``<images>/deps/<name>-<key12>/``)
so that the project layer is made on top of it in an overlay mount: pip runs in a chroot
of the merged view, and the overlay's upper folder, holding exactly what pip added, is
the layer. Called by :mod:`bertops.cluster.images.build`; needs root and the kernel's
overlay filesystem. The pure parts (the requirement list, the keys, the whiteout check)
are unit-tested in tests/cluster/test_image_layers.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bertops.cluster.images import oci, rootfs
from bertops.cluster.images.recipes import RECIPE_VERSION, VENV, Recipe, source_files

# The files the dependency layer is made from: a source edit never changes them.
DEPS_INPUTS = ("constraints.txt", "pyproject.toml")
HOST_PIP_CACHE = Path("/root/.cache/pip")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP = f"{VENV}/bin/pip install --disable-pip-version-check"
# What a chroot leaves in the project layer's upper folder that is no part of the image.
SCRATCH = ("src", "tmp", "root/.cache", "etc/resolv.conf")
# pip settings of the host that also apply inside the chroot.
PASSED_ENV = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_TRUSTED_HOST",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)


def requirements(pyproject: str, extras: tuple[str, ...]) -> list[str]:
    """The project's own dependencies plus those of ``extras``, as pyproject declares
    them: what ``pip install '.[extras]'`` would install besides the project."""
    project = tomllib.loads(pyproject)["project"]
    listed = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        listed.extend(optional[extra])
    return list(dict.fromkeys(listed))  # each once, in the order declared


def deps_key(recipe: Recipe, repo: Path, zstd: bool = False) -> str:
    """sha256 over the recipe, the layer compression, constraints.txt and pyproject.toml."""
    digest = hashlib.sha256()
    recipe_text = json.dumps(asdict(recipe), sort_keys=True, default=str)
    compression = " zstd" if zstd else ""
    digest.update(f"bertops-deps {RECIPE_VERSION}{compression}\n{recipe_text}\n".encode())
    for name in DEPS_INPUTS:
        digest.update(f"{name}\0".encode())
        digest.update((repo / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class DepsLayer:
    """A cached dependency layer: its blob and the root filesystem it was made from."""

    rootfs: Path
    layer: oci.Layer


def ensure_deps(
    recipe: Recipe, repo: Path, cache: Path, say: rootfs.Say, zstd_level: int | None
) -> DepsLayer:
    """The dependency layer for the recipe's current inputs, built when missing."""
    key = deps_key(recipe, repo, zstd=zstd_level is not None)
    folder = cache / "deps" / f"{recipe.name}-{key[:12]}"
    if (folder / ".complete").exists():
        say(f"{recipe.name}: dependency layer cached ({folder.name})")
        return _load(folder)
    for stale in folder.parent.glob(f"{recipe.name}-*") if folder.parent.is_dir() else []:
        say(f"{recipe.name}: removing the dependency layer of other inputs ({stale.name})")
        rootfs.unmount_all(stale)
        shutil.rmtree(stale)
    partial = folder.with_name(folder.name + ".partial")
    started = time.monotonic()
    rootfs.copy_rootfs(rootfs.ensure_base(cache, say), partial / "rootfs")
    (partial / "rootfs" / "src").mkdir()
    listed = requirements((repo / "pyproject.toml").read_text(), recipe.extras or ())
    (partial / "rootfs/src/requirements.txt").write_text("\n".join(listed) + "\n")
    shutil.copy2(repo / "constraints.txt", partial / "rootfs/src/constraints.txt")
    say(f"{recipe.name}: pip install the dependencies of [{','.join(recipe.extras or ())}] ...")
    _in_chroot(partial / "rootfs", _deps_script(recipe))
    _prune(partial / "rootfs")
    (partial / "rootfs/etc/resolv.conf").write_text("")  # the runtime mounts its own
    rootfs.clean_apt(partial / "rootfs")
    say(f"{recipe.name}:   installed in {time.monotonic() - started:.0f}s; writing the layer ...")
    layer = oci.write_layer(partial / "rootfs", partial / "layer.blob", zstd_level)
    (partial / "layer.json").write_text(
        json.dumps({"descriptor": layer.descriptor, "diff_id": layer.diff_id})
    )
    (partial / ".complete").write_text(key + "\n")
    partial.rename(folder)
    say(f"{recipe.name}:   dependency layer built in {time.monotonic() - started:.0f}s")
    return _load(folder)


def _load(folder: Path) -> DepsLayer:
    recorded = json.loads((folder / "layer.json").read_text())
    layer = oci.Layer(recorded["descriptor"], recorded["diff_id"], path=folder / "layer.blob")
    return DepsLayer(folder / "rootfs", layer)


def project_layer(
    recipe: Recipe, repo: Path, deps: DepsLayer, work: Path, zstd_level: int | None
) -> oci.Layer:
    """``pip install --no-deps`` of the checkout on top of the dependency layer, in an
    overlay whose upper folder becomes the layer (written to ``work/layer.blob``)."""
    if work.exists():
        rootfs.unmount_all(work)
        shutil.rmtree(work)
    upper = work / "upper"
    with _overlay(deps.rootfs, work) as merged:
        for name in source_files(repo):
            destination = merged / "src" / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, destination)
        _in_chroot(merged, _project_script())
    _prune(upper)
    whiteouts = deletions(upper)
    if whiteouts:  # a layer of additions only: a deletion would need OCI whiteout files
        raise rootfs.RootfsError(
            f"{recipe.name}: installing the project removed files of the dependency layer "
            f"({', '.join(whiteouts[:5])}); bump RECIPE_VERSION or check pyproject's extras"
        )
    return oci.write_layer(upper, work / "layer.blob", zstd_level)


def deletions(upper: Path) -> list[str]:
    """What an overlay's upper folder deletes from the layers below: whiteouts (character
    devices 0/0) and opaque folders, relative to upper."""
    found = []
    for folder, names, files in os.walk(upper):
        for name in [*names, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                found.append(str(path.relative_to(upper)))
            elif stat.S_ISDIR(info.st_mode) and _opaque(path):
                found.append(f"{path.relative_to(upper)}/ (opaque)")
    return sorted(found)


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque") == b"y"
    except OSError:
        return False


@contextmanager
def _overlay(lower: Path, work: Path) -> Iterator[Path]:
    """``lower`` read-only under a writable upper folder; the merged view's path."""
    for name in ("upper", "work", "merged"):
        (work / name).mkdir(parents=True)
    merged = work / "merged"
    options = f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        yield merged
    finally:
        rootfs.unmount_all(merged)


def _in_chroot(root: Path, script: str) -> None:
    """Run a pip script in a chroot of root with the host's pip cache, DNS and CA bundle."""
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    if HOST_CA_BUNDLE.is_file():  # the host's CA bundle (may hold a proxy's CA)
        shutil.copy2(HOST_CA_BUNDLE, root / "tmp/host-ca.crt")
        env["PIP_CERT"] = "/tmp/host-ca.crt"
    HOST_PIP_CACHE.mkdir(parents=True, exist_ok=True)
    with rootfs.mounted(root, binds=[(HOST_PIP_CACHE, "/root/.cache/pip")]):
        rootfs.chroot(root, script, env)


def _prune(root: Path) -> None:
    """Remove what a chroot run leaves that belongs in no image: the sources, temporary
    files (the folder itself stays), pip's cache folder and the host's resolv.conf."""
    for name in SCRATCH:
        path = root / name
        if name == "tmp" and path.is_dir():
            for entry in path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _deps_script(recipe: Recipe) -> str:
    """The dependency layer's install: one command a line (`sh -e` stops at a failure)."""
    pip = f"{PIP} -c /src/constraints.txt"
    lines = [
        f"python3 -m venv {VENV}",
        f"{pip} -r /src/requirements.txt",
        *(f"{pip} --no-deps {package}" for package in recipe.no_deps_packages),
        "getent group 1000 >/dev/null || groupadd -g 1000 bertops",
        "getent passwd 1000 >/dev/null || "
        "useradd -u 1000 -g 1000 -d /tmp -M -s /usr/sbin/nologin bertops",
    ]
    return "\n".join(lines)


def _project_script() -> str:
    """The project layer's install: the checkout alone, on the dependencies below it."""
    return "\n".join([f"{PIP} --no-deps /src", f"{VENV}/bin/bertops --help >/dev/null"])
