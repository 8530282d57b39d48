"""Which optional parts of bertops can run here: the wheel always ships every component's
code, so "is ``bertops.trainer`` importable?" is always yes; what differs between an
operator image and a training image is which extras' libraries are installed.

``missing(extra)`` names the top-level modules of that extra that cannot be found, without
importing any of them (``importlib.util.find_spec`` only searches), so ``bertops --help``
stays fast. Used by :mod:`bertops.cli.main` to gate subcommands and by the demo.
Stdlib only: it has to work in a core install with no extras at all.
"""

from __future__ import annotations

import importlib.util

# The top-level import names of each extra's requirements in pyproject.toml (a test
# keeps the two in step). "compress" is not an extra: the compress step needs the
# trainer's libraries plus ONNX Runtime, which comes with the server extra.
MODULES: dict[str, tuple[str, ...]] = {
    "operator": (
        "kopf",
        "kubernetes",
        "prometheus_client",
        "cryptography",
        "httpx",
        "argo_workflows",
        "numpy",
        "scipy",
        "fsspec",
        "s3fs",
    ),
    "trainer": (
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "numpy",
        "pandas",
        "pyarrow",
        "fsspec",
        "s3fs",
        "sklearn",
        "tqdm",
    ),
    "server": (
        "starlette",
        "uvicorn",
        "httpx",
        "prometheus_client",
        "evidently",
        "pandas",
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "numpy",
        "onnxruntime",
        "onnx",
        "fsspec",
        "s3fs",
        "limits",
    ),
    "ui": ("kubernetes", "starlette", "uvicorn", "fsspec", "s3fs"),
}
COMPRESS_EXTRAS = ("trainer", "server")


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return True


def missing(*extras: str) -> list[str]:
    """The modules of these extras that are not installed (empty: all are)."""
    wanted = dict.fromkeys(module for extra in extras for module in MODULES[extra])
    return [module for module in wanted if _absent(module)]


def install_hint(*extras: str) -> str:
    return f"pip install 'bertops[{','.join(extras)}]'"


def compression_available() -> bool:
    """The compress step can run here (torch, transformers and ONNX Runtime installed)."""
    return not missing(*COMPRESS_EXTRAS)
