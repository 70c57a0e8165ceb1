"""The GPU path of --method lowrank: the torch two-stage DCT equals the numpy one (checked on the CPU), and the
device choice imports torch only where a GPU can be there."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hsidenoise.device import lowrank_device
from hsidenoise.errors import ConfigError
from hsidenoise.methods import build_method
from hsidenoise.subspace.dct_torch import TorchDCTDenoiser
from hsidenoise.subspace.eigenimages import DCTDenoiser


def eigen_images(seed: int = 3) -> np.ndarray:
    """(3, 29, 37) smooth images plus unit noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 3, 29), np.linspace(0, 4, 37), indexing="ij")
    signal = np.stack([20 * np.sin(rows + k) * np.cos(cols - k) for k in range(3)])
    return signal + rng.standard_normal(signal.shape)


@pytest.mark.parametrize("noise", [1.0, np.array([0.7, 1.0, 1.3])])
def test_torch_dct_equals_the_numpy_dct(noise) -> None:
    images = eigen_images()
    numpy_result = DCTDenoiser(2.7).denoise(images, noise)
    torch_result = TorchDCTDenoiser(2.7, "cpu").denoise(images, noise)
    assert torch_result.shape == images.shape and torch_result.dtype == np.float64
    difference = np.abs(torch_result - numpy_result)
    # float32 both; a hard threshold may flip on a coefficient within rounding of 2.7 sigma
    assert difference.max() <= 1e-3 * np.ptp(images) and difference.mean() <= 1e-5 * np.ptp(images)
    assert np.abs(torch_result - images).mean() > 0.3  # it denoised


def test_torch_dct_pads_images_smaller_than_a_block() -> None:
    small = np.random.default_rng(0).standard_normal((2, 5, 6))
    np.testing.assert_allclose(
        TorchDCTDenoiser(2.7, "cpu").denoise(small, 1.0), DCTDenoiser(2.7).denoise(small, 1.0), atol=1e-4
    )


def test_lowrank_device_choices() -> None:
    assert lowrank_device("cpu") is None
    with pytest.raises(ConfigError, match="unknown device"):
        lowrank_device("tpu")
    assert isinstance(build_method("lowrank", device="cpu", spatial="dct").eigen_denoiser, DCTDenoiser)


def test_lowrank_auto_imports_no_torch_without_a_gpu_driver() -> None:
    script = (
        "import json, sys\n"
        "from hsidenoise.device import lowrank_device, nvidia_driver_present\n"
        "chosen = lowrank_device('auto')\n"
        "print(json.dumps({'driver': nvidia_driver_present(), 'chosen': chosen, 'torch': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    facts = json.loads(done.stdout)
    if facts["driver"]:
        pytest.skip("an NVIDIA driver is present here: auto asks torch, as it should")
    assert facts == {"driver": False, "chosen": None, "torch": False}


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    import torch

    if torch.cuda.is_available():
        assert lowrank_device("cuda").startswith("cuda")
    else:
        with pytest.raises(ConfigError, match="torch sees none"):
            lowrank_device("cuda")


def test_the_gpu_path_is_named_in_the_run_facts() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

    cube = np.random.default_rng(1).random((9, 20, 21)).astype(np.float32)
    on_cpu = LowRankDenoiser(LowRankConfig(spatial="dct"))
    on_torch = LowRankDenoiser(LowRankConfig(spatial="dct"), TorchDCTDenoiser(2.7, "cpu"))
    first, second = denoise_array(cube, on_cpu), denoise_array(cube, on_torch)
    assert "device" not in on_cpu.info() and on_torch.info()["device"] == "cpu"
    json.dumps(on_torch.info())  # the run summary serialises it
    assert np.abs(first - second).max() <= 1e-3 * np.ptp(cube)
