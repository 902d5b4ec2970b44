"""The GPU device: listing and choosing adapters, no adapter and a lost device as clear errors
(in child processes, so this suite's shared device survives), and GPU memory that goes with the
networks that hold it."""

import gc
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import polyvtd as pv
from reference.dense import rel_err

needs_gpu = pytest.mark.skipif(
    not pv.gpu_available(), reason="no GPU adapter found by wgpu (install mesa-vulkan-drivers for lavapipe)"
)


def run_child(code, **env):
    """Runs `code` in a fresh Python process (extra environment `env`) and returns the JSON
    object its last stdout line holds; the process must exit cleanly."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# What a child process reports about one GPU forward: its result, or the error it raised.
FORWARD = """
def forward():
    layer = pv.layers.Dense(9, 5, "tanh", bias=True, dtype="int4", seed=1)
    x = np.linspace(-1, 1, 27, dtype=np.float32).reshape(3, 9)
    try:
        gpu = layer.forward(x, device="gpu")
    except pv.GpuUnavailableError as e:
        return {"error": str(e)}
    return {"rel_err": float(np.abs(gpu - layer.forward(x)).max() / np.abs(layer.forward(x)).max())}
"""


# ---- adapters ------------------------------------------------------------------------------------

@needs_gpu
def test_adapters_are_listed_and_the_context_is_on_one_of_them():
    adapters = pv.gpu_adapters()
    assert adapters and all(set(a) == {"name", "backend", "device_type", "driver"} for a in adapters)
    assert all(isinstance(v, str) for a in adapters for v in a.values())
    info = pv.gpu_info()
    assert (info["name"], info["backend"]) in {(a["name"], a["backend"]) for a in adapters}


@needs_gpu
def test_use_gpu_accepts_the_adapter_in_use_and_refuses_another():
    info = pv.gpu_info()
    assert pv.use_gpu() == info
    assert pv.use_gpu(info["name"][:4].swapcase()) == info  # a case-insensitive substring
    with pytest.raises(pv.GpuUnavailableError, match="already created on") as raised:
        pv.use_gpu("no-such-adapter-42")
    assert info["name"] in str(raised.value)
    assert isinstance(raised.value, RuntimeError)


@needs_gpu
def test_use_gpu_chooses_before_first_use_and_may_retry_another_name():
    name = pv.gpu_info()["name"]
    got = run_child(f"""
        import json, numpy as np, polyvtd as pv
        {textwrap.indent(FORWARD, "        ").strip()}
        try:
            pv.use_gpu("no-such-adapter-42")
            missing = None
        except pv.GpuUnavailableError as e:
            missing = str(e)
        info = pv.use_gpu({name[:6].upper()!r})
        print(json.dumps({{"missing": missing, "name": info["name"], "forward": forward()}}))
    """)
    assert "matches none of" in got["missing"] and name in got["missing"]
    assert got["name"] == name
    assert got["forward"]["rel_err"] <= 1e-5


@needs_gpu
def test_polyvtd_adapter_environment_variable_still_chooses():
    name = pv.gpu_info()["name"]
    code = f"""
        import json, numpy as np, polyvtd as pv
        {textwrap.indent(FORWARD, "        ").strip()}
        print(json.dumps({{"available": pv.gpu_available(), "forward": forward()}}))
    """
    chosen = run_child(code, POLYVTD_ADAPTER=name[:6].lower())
    assert chosen["available"] and chosen["forward"]["rel_err"] <= 1e-5
    unknown = run_child(code, POLYVTD_ADAPTER="no-such-adapter-42")
    assert not unknown["available"]
    assert "POLYVTD_ADAPTER" in unknown["forward"]["error"] and "no-such-adapter-42" in unknown["forward"]["error"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hides the Vulkan drivers through the Linux loader")
def test_no_adapter_is_a_clear_error_not_a_crash():
    missing = "/nonexistent/polyvtd_no_driver.json"
    got = run_child(f"""
        import json, numpy as np, polyvtd as pv
        {textwrap.indent(FORWARD, "        ").strip()}
        errors = []
        for call in (pv.gpu_info, pv.use_gpu, forward):
            try:
                result = call()
                errors.append(result.get("error"))
            except pv.GpuUnavailableError as e:
                errors.append(str(e))
        print(json.dumps({{"available": pv.gpu_available(), "adapters": pv.gpu_adapters(),
                          "memory": pv.gpu_memory(), "errors": errors}}))
    """, VK_ICD_FILENAMES=missing, VK_DRIVER_FILES=missing, WGPU_BACKEND="vulkan", POLYVTD_ADAPTER="")
    assert got["available"] is False and got["adapters"] == []
    assert got["memory"]["total_bytes"] == 0
    for error in got["errors"]:
        assert error.startswith("no GPU adapter found") and "mesa-vulkan-drivers" in error, error


# ---- a lost device -------------------------------------------------------------------------------

@needs_gpu
def test_a_lost_device_raises_gpu_unavailable_and_the_process_survives():
    got = run_child(f"""
        import json, numpy as np, polyvtd as pv
        {textwrap.indent(FORWARD, "        ").strip()}
        before = forward()
        pv._core._gpu_destroy_device_for_tests()
        after = [forward(), forward()]
        norm = pv.layers.RMSNorm(6, dtype="int8")
        try:
            norm.forward(np.ones((2, 6), np.float32), device="gpu")
            norm_error = None
        except pv.GpuUnavailableError as e:
            norm_error = str(e)
        cpu = pv.layers.Dense(4, 2, seed=1).forward(np.ones((1, 4), np.float32)).tolist()
        print(json.dumps({{"before": before, "after": after, "norm": norm_error,
                          "available": pv.gpu_available(), "cpu": cpu}}))
    """)
    assert got["before"]["rel_err"] <= 1e-5
    for error in [a["error"] for a in got["after"]] + [got["norm"]]:
        assert "device was lost" in error and "restart the process" in error, error
    assert got["available"] is False
    assert len(got["cpu"][0]) == 2  # the CPU keeps working


# ---- GPU memory follows the networks that hold it ------------------------------------------------

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mixed_network(seed):
    """Dense and norm layers in several dtypes: ~2.4 MB of float32 masters, and 7 weight tensors
    (~0.85 MB) cached on the GPU (Dense biases go with each call)."""
    net = pv.VolumetricNetwork(1, 1, 1, 6)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(96, 1024, "relu", bias=True, seed=seed))
    net.set_layer(0, 0, 0, 1, pv.layers.RMSNorm(1024, dtype="fp8e4m3", seed=seed))
    net.set_layer(0, 0, 0, 2, pv.layers.Dense(1024, 384, "gelu", dtype="int8", seed=seed + 1))
    net.set_layer(0, 0, 0, 3, pv.layers.LayerNorm(384, dtype="bfloat16", seed=seed))
    net.set_layer(0, 0, 0, 4, pv.layers.Dense(384, 256, "tanh", bias=True, dtype="q4_0", seed=seed + 2))
    net.set_layer(0, 0, 0, 5, pv.layers.Dense(256, 10, dtype="int4", seed=seed + 3))
    return net


@needs_gpu
def test_dropped_networks_release_their_gpu_memory():
    """20 rounds of build, GPU forward, drop: the GPU bytes polyvtd holds return exactly to where
    they were after every round, and process RSS stays within 24 MiB from round 5 on (a leak of
    one network per round would add 15 × 3 MB). A warm-up round first compiles the kernels."""
    x = np.random.default_rng(0).standard_normal((3, 96)).astype(np.float32)
    mixed_network(seed=99).forward(x, device="gpu")
    gc.collect()
    baseline = pv.gpu_memory()
    assert baseline["total_bytes"] == baseline["weights_bytes"] + baseline["other_bytes"]
    rss = []
    for round in range(20):
        net = mixed_network(seed=round)
        y = net.forward(x, device="gpu")
        assert rel_err(y, net.forward(x)) <= 1e-5
        held = pv.gpu_memory()
        assert held["weights_tensors"] == baseline["weights_tensors"] + 7
        assert held["weights_bytes"] >= baseline["weights_bytes"] + 800_000
        del net, y
        gc.collect()
        assert pv.gpu_memory() == baseline, f"round {round}"
        rss.append(rss_bytes())
    assert max(rss[5:]) - rss[4] <= 24 << 20, [r >> 20 for r in rss]


@needs_gpu
def test_replaced_weights_release_their_gpu_copies():
    """Training replaces every master and packed version: their GPU copies are released, not
    kept beside the new ones; a deep copy's buffers go with the copy."""
    net = pv.VolumetricNetwork(1, 1, 1, 2)
    net.set_layer(0, 0, 0, 0, pv.layers.Dense(24, 32, "tanh", bias=True, seed=1))
    net.set_layer(0, 0, 0, 1, pv.layers.Dense(32, 4, dtype="int8", seed=2))
    x = np.random.default_rng(1).standard_normal((16, 24)).astype(np.float32)
    gc.collect()
    baseline = pv.gpu_memory()
    net.forward(x, device="gpu")
    held = pv.gpu_memory()
    assert held["weights_tensors"] == baseline["weights_tensors"] + 2  # the bias goes with each call
    net.train(x, np.zeros((16, 4), np.float32), epochs=2, lr=0.05)
    trained = net.forward(x, device="gpu")
    assert pv.gpu_memory() == held
    assert rel_err(trained, net.forward(x)) <= 1e-5
    copy = net.copy()
    np.testing.assert_array_equal(copy.forward(x, device="gpu"), trained)
    # The copy owns its float32 master (a new buffer) and shares the int8 version.
    assert pv.gpu_memory()["weights_tensors"] == held["weights_tensors"] + 1
    del copy
    gc.collect()
    assert pv.gpu_memory() == held
    del net
    gc.collect()
    assert pv.gpu_memory() == baseline
