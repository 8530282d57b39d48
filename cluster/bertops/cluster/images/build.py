"""Builds the images of :mod:`bertops.cluster.images.recipes` into OCI archives in the
cache (``$BERTOPS_CACHE`` or ~/.cache/bertops, ``images/<name>-<key12>.tar``): a copy of
the debootstrapped base rootfs, a venv at /opt/bertops filled by pip in a chroot (the
host's pip cache bind-mounted), user 1000, then one uncompressed layer. An archive whose
inputs did not change is reused; a build writes a temporary name and renames it at the
end, so a partial build never looks complete. Called by ``bertops images build``."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bertops.cluster.images import oci, rootfs
from bertops.cluster.images.recipes import (
    RECIPES,
    TOP_FILES,
    VENV,
    Recipe,
    archive_path,
    busybox_path,
    cache_key,
    source_files,
)

ZSTD_LEVEL = 3  # fast; CUDA libraries shrink to about half
HOST_PIP_CACHE = Path("/root/.cache/pip")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
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


@dataclass(frozen=True)
class Built:
    """One image in the cache."""

    recipe: Recipe
    path: Path
    reused: bool
    seconds: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def cache_root() -> Path:
    return Path(os.environ.get("BERTOPS_CACHE", Path.home() / ".cache" / "bertops"))


def images_dir() -> Path:
    return cache_root() / "images"


def repo_root() -> Path:
    """The checkout the images are built from (this file is cluster/bertops/cluster/...)."""
    return Path(__file__).resolve().parents[4]


def current_archive(recipe: Recipe, repo: Path | None = None) -> Path:
    """The cache path for ``recipe`` with the inputs as they are now: the newest of the
    uncompressed and the zstd build, or the uncompressed one's path if neither exists."""
    repo = repo or repo_root()
    paths = [
        archive_path(images_dir(), recipe, cache_key(recipe, repo, zstd=z)) for z in (False, True)
    ]
    existing = [path for path in paths if path.exists()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else paths[0]


def build(
    names: list[str] | None = None,
    rebuild: bool = False,
    zstd: bool = False,
    repo: Path | None = None,
    say: rootfs.Say = print,
) -> list[Built]:
    """Build (or reuse) the named images (all by default), in order."""
    repo = repo or repo_root()
    results = []
    for name in names or list(RECIPES):
        recipe = RECIPES[name]
        started = time.monotonic()
        key = cache_key(recipe, repo, zstd=zstd)
        target = archive_path(images_dir(), recipe, key)
        cached = current_archive(recipe, repo)  # either compression will do
        if cached.exists() and not rebuild:
            say(f"{name}: cached {cached} ({rootfs.human(cached.stat().st_size)})")
            results.append(Built(recipe, cached, True, time.monotonic() - started))
            continue
        if not rootfs.is_root():
            raise rootfs.RootfsError("building images needs root (debootstrap, chroot, mount)")
        target.parent.mkdir(parents=True, exist_ok=True)
        # An archive of other inputs is never imported again: free its disk first (the
        # ML image needs about 15 GB while it is built: the rootfs plus the archive).
        for stale in target.parent.glob(f"{recipe.name}-*.tar"):
            if stale != target:
                say(f"{name}: removing the stale {stale.name}")
                stale.unlink()
        free = rootfs.human(shutil.disk_usage(target.parent).free)
        say(f"{name}: building {', '.join(recipe.tags)} ({recipe.description}; {free} free) ...")
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            if recipe.busybox:
                _build_busybox(recipe, partial)
            else:
                _build_python(recipe, repo, key, partial, say, ZSTD_LEVEL if zstd else None)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        say(f"{name}: built {target} in {seconds:.0f}s ({rootfs.human(target.stat().st_size)})")
        results.append(Built(recipe, target, False, seconds))
    return results


def _build_busybox(recipe: Recipe, partial: Path) -> None:
    binary = busybox_path().read_bytes()
    if not is_static_elf(binary):
        raise rootfs.RootfsError("busybox is dynamically linked: apt-get install busybox-static")
    layer = oci.layer_from_files({"bin/busybox": (binary, 0o755)}, time.time())
    oci.write_archive(partial, list(recipe.tags), recipe.config, layer=layer)


def is_static_elf(binary: bytes) -> bool:
    """Whether a 64-bit little-endian ELF executable has no interpreter (PT_INTERP)."""
    if binary[:6] != b"\x7fELF\x02\x01":
        return False
    phoff = int.from_bytes(binary[32:40], "little")
    size = int.from_bytes(binary[54:56], "little")
    count = int.from_bytes(binary[56:58], "little")
    types = [
        int.from_bytes(binary[phoff + i * size : phoff + i * size + 4], "little")
        for i in range(count)
    ]
    return 3 not in types  # PT_INTERP


def _copy_sources(repo: Path, target: Path) -> None:
    for name in source_files(repo):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, destination)


def _install_script(recipe: Recipe) -> str:
    extras = ",".join(recipe.extras or ())
    pip = f"{VENV}/bin/pip install --disable-pip-version-check -c /src/constraints.txt"
    lines = [
        f"python3 -m venv {VENV}",
        f"{pip} '/src[{extras}]'",
        *(f"{pip} --no-deps {package}" for package in recipe.no_deps_packages),
        f"{VENV}/bin/bertops --help >/dev/null",
        "getent group 1000 >/dev/null || groupadd -g 1000 bertops",
        "getent passwd 1000 >/dev/null || "
        "useradd -u 1000 -g 1000 -d /tmp -M -s /usr/sbin/nologin bertops",
    ]
    return "\n".join(lines)  # one command a line: `sh -e` stops at the first failure


def _build_python(
    recipe: Recipe, repo: Path, key: str, partial: Path, say: rootfs.Say, zstd_level: int | None
) -> None:
    base = rootfs.ensure_base(images_dir(), say)
    work = images_dir() / "work" / f"{recipe.name}-{key[:12]}"
    # An interrupted build's rootfs (several GB) of any key: nothing else would remove it.
    for stale in work.parent.glob(f"{recipe.name}-*") if work.parent.is_dir() else []:
        say(f"{recipe.name}: removing the interrupted build's {stale.name}")
        rootfs.remove_rootfs(stale)
    step = time.monotonic()
    rootfs.copy_rootfs(base, work)
    try:
        _copy_sources(repo, work / "src")
        for name in TOP_FILES:
            if not (work / "src" / name).exists():
                raise rootfs.RootfsError(f"{name} is missing from {repo}")
        shutil.copy2("/etc/resolv.conf", work / "etc/resolv.conf")
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        if HOST_CA_BUNDLE.is_file():  # the host's CA bundle (may hold a proxy's CA)
            shutil.copy2(HOST_CA_BUNDLE, work / "tmp/host-ca.crt")
            env["PIP_CERT"] = "/tmp/host-ca.crt"
        HOST_PIP_CACHE.mkdir(parents=True, exist_ok=True)
        say(f"{recipe.name}: pip install [{','.join(recipe.extras or ())}] in a chroot ...")
        with rootfs.mounted(work, binds=[(HOST_PIP_CACHE, "/root/.cache/pip")]):
            rootfs.chroot(work, _install_script(recipe), env)
        say(
            f"{recipe.name}:   installed in {time.monotonic() - step:.0f}s "
            f"(venv {rootfs.tree_size(work / VENV.lstrip('/'))})"
        )
        shutil.rmtree(work / "src")
        for leftover in (work / "tmp").iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        shutil.rmtree(work / "root/.cache", ignore_errors=True)
        (work / "etc/resolv.conf").write_text("")  # the runtime mounts its own
        rootfs.clean_apt(work)
        step = time.monotonic()
        say(f"{recipe.name}: writing the OCI archive ({rootfs.tree_size(work)} rootfs) ...")
        oci.write_archive(
            partial, list(recipe.tags), recipe.config, rootfs=work, zstd_level=zstd_level
        )
        say(f"{recipe.name}:   archive written in {time.monotonic() - step:.0f}s")
    finally:
        rootfs.remove_rootfs(work)
