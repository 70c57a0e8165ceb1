"""DECSC: every preset runs and trains, its parts match independent torch/numpy computations, weights round-trip."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hsidenoise.errors import CheckpointError, ConfigError, CubeShapeError
from hsidenoise.model import (
    PRESETS,
    DECSCConfig,
    build_model,
    count_parameters,
    find_default_weights,
    list_presets,
    load_weights,
    save_weights,
)
from hsidenoise.model import weights as weights_module
from hsidenoise.model.diffconv import (
    DifferenceConv3d,
    band_conv3d,
    band_conv_transpose3d,
    conv_transpose2d_polyphase,
)
from hsidenoise.model.gic import GICLayer, ResidualConvPrior
from hsidenoise.model.lsu import LSULayer
from hsidenoise.model.swin import SwinBlock
from hsidenoise.model.solver import SolverConfig
from small_models import NOISE_AWARE

torch.set_num_threads(1)

# The paper preset replicates each window 49 times (7 x 7 cycle spinning) and runs 96-atom 3-D convolutions, so
# its smoke tests use the smallest window it accepts.
SMOKE_SHAPES = {"paper": (1, 31, 7, 9), "noise-aware": (2, 31, 20, 23)}
CONFIGS = {"paper": PRESETS["paper"], "noise-aware": NOISE_AWARE}
"""The band-window family: the paper preset, and the noise-aware mode (the retired ``lite`` architecture)."""
FAST_SOLVER = SolverConfig(max_iter=2, phantom_steps=1)


def small(name: str) -> DECSCConfig:
    return replace(CONFIGS[name], solver=FAST_SOLVER)


def inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=generator)
    sigma = 0.02 + 0.1 * torch.rand(shape[:2], generator=generator)
    noisy = clean + sigma[:, :, None, None] * torch.randn(shape, generator=generator)
    init = clean + 0.01 * torch.randn(shape, generator=generator)
    return noisy, init, sigma


@pytest.mark.parametrize("name", sorted(CONFIGS))  # band-window family; the subspace family: test_subspace.py
def test_every_preset_denoises_to_the_input_shape_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = build_model(small(name)).train()
    noisy, init, sigma = inputs(SMOKE_SHAPES[name])
    clean, stats = model(noisy, init=init, sigma=sigma)
    assert clean.shape == noisy.shape
    assert bool(torch.isfinite(clean).all())
    assert stats.evaluations.shape == (noisy.shape[0],)
    assert stats.extra_evaluations == 1 + FAST_SOLVER.phantom_steps  # initial point + phantom steps
    clean.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not silent, f"parameters without gradient: {silent}"
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_paper_preset_is_the_papers_network_with_4_29_million_parameters():
    config = PRESETS["paper"]
    assert (config.bands, config.gic_atoms, config.gic_kernel, config.lsu_atoms, config.lsu_kernel) == (
        31,
        192,
        9,
        96,
        9,
    )
    assert (config.prior, config.prior_depth, config.prior_width, config.prior_heads, config.prior_window) == (
        "swin",
        4,
        192,
        16,
        4,
    )
    assert config.prior_mlp_ratio == 4.0 and not config.noise_aware
    assert (config.solver.max_iter, config.solver.phantom_steps, config.solver.phantom_damping) == (20, 5, 0.9)
    with torch.device("meta"):
        parameters = count_parameters(build_model("paper"))
    assert abs(parameters - 4.29e6) <= 0.01 * 4.29e6


def test_the_presets_are_paper_subspace_and_dctcsc_lite_is_retired():
    assert set(PRESETS) == {"paper", "subspace", "dctcsc", "dctcsc-coupled"}
    with pytest.raises(ConfigError, match="unknown DECSC preset 'lite'"):
        build_model("lite")


def test_list_presets_reports_each_preset_with_its_parameter_count():
    rows = {row["name"]: row for row in list_presets()}
    assert set(rows) == set(PRESETS)
    assert rows["subspace"]["parameters"] == count_parameters(build_model("subspace"))
    assert rows["subspace"]["noise_aware"] and not rows["paper"]["noise_aware"]


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="paper"):
        build_model("huge")


# ---------------------------------------------------------------------------------------------- noise-aware mode


def test_a_band_with_tiny_noise_is_left_at_the_initial_estimate():
    torch.manual_seed(0)
    model = build_model(NOISE_AWARE).eval()
    shape = (1, 31, 24, 24)
    generator = torch.Generator().manual_seed(1)
    init = torch.rand(shape, generator=generator)
    sigma = torch.full(shape[:2], 0.1)
    sigma[0, 5] = 1e-4
    noisy = init + sigma[:, :, None, None] * torch.randn(shape, generator=generator)
    with torch.inference_mode():
        clean, _ = model(noisy, init=init, sigma=sigma)
    change = (clean - init).abs().amax(dim=(0, 2, 3))
    assert float(change[5]) < 1e-2 * float(change[torch.arange(31) != 5].min())
    assert float(change[5]) < 1e-3


def test_the_correction_is_invariant_to_the_units_of_the_residual():
    # r = (noisy - init) / sigma is unchanged when the residual and sigma scale together; the correction scales.
    torch.manual_seed(0)
    model = build_model(NOISE_AWARE).eval()
    noisy, init, sigma = inputs((1, 31, 16, 16))
    with torch.inference_mode():
        base, _ = model(noisy, init=init, sigma=sigma)
        scaled, _ = model(init + 3 * (noisy - init), init=init, sigma=3 * sigma)
    torch.testing.assert_close(scaled - init, 3 * (base - init), atol=1e-5, rtol=1e-4)


def test_paper_mode_ignores_init_and_sigma():
    torch.manual_seed(0)
    model = build_model(replace(small("paper"), shifts=1)).eval()
    noisy, init, sigma = inputs((1, 31, 9, 9))
    with torch.inference_mode():
        blind, _ = model(noisy)
        given, _ = model(noisy, init=init, sigma=sigma)
    assert torch.equal(blind, given)


def test_windows_of_a_batch_are_denoised_independently():
    torch.manual_seed(0)
    model = build_model(NOISE_AWARE).eval()
    noisy, init, sigma = inputs((2, 31, 16, 16))
    noisy[1] = noisy[1] * 3  # a much harder second window: different convergence
    with torch.inference_mode():
        together, stats = model(noisy, init=init, sigma=sigma)
        alone = [model(noisy[i : i + 1], init=init[i : i + 1], sigma=sigma[i : i + 1])[0] for i in range(2)]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape, with_sigma, error",
    [
        ((1, 30, 16, 16), True, CubeShapeError),
        ((31, 16, 16), True, CubeShapeError),
        ((1, 31, 16, 16), False, ConfigError),
    ],
)
def test_bad_inputs_are_one_line_errors(shape, with_sigma, error):
    model = build_model(NOISE_AWARE)
    noisy = torch.rand(shape)
    sigma = torch.full(shape[:2], 0.1) if with_sigma else None
    with pytest.raises(error) as info:
        model(noisy, init=noisy, sigma=sigma)
    assert "\n" not in str(info.value)


def test_cycle_spinning_copies_align_back_exactly():
    model = build_model(replace(small("noise-aware"), shifts=3))
    image = torch.rand(2, 31, 7, 10)
    copies = model._spin(image)
    assert copies.shape == (2 * 9, 31, 9, 12)
    torch.testing.assert_close(model._unspin(copies, (7, 10)), image)


# ------------------------------------------------------------------------------------------------- the layers


@pytest.mark.parametrize("stride, kernel, band_padding", [(1, 3, 1), (2, 5, 0), (3, 7, 0)])
def test_band_convolution_equals_conv3d(stride, kernel, band_padding):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 13, 7, generator=generator)  # (N, B, C, H, W)
    weight = torch.randn(4, 3, 3, kernel, kernel, generator=generator)
    bias = torch.randn(4, generator=generator)
    ours = band_conv3d(x, weight, bias, stride=stride, padding=kernel // 2, band_padding=band_padding)
    reference = F.conv3d(
        x.transpose(1, 2), weight, bias, stride=(1, stride, stride), padding=(band_padding, kernel // 2, kernel // 2)
    )
    torch.testing.assert_close(ours, reference.transpose(1, 2), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride, kernel", [(1, 3), (2, 5), (4, 7), (7, 9)])
def test_band_transposed_convolution_equals_conv_transpose3d(stride, kernel):
    generator = torch.Generator().manual_seed(0)
    size = (13, 22)
    padding = kernel // 2
    codes_shape = [(s + 2 * padding - kernel) // stride + 1 for s in size]
    codes = torch.randn(2, 5, 4, *codes_shape, generator=generator)  # (N, B', J, h, w)
    weight = torch.randn(4, 1, 3, kernel, kernel, generator=generator)
    output_padding = [s - ((c - 1) * stride - 2 * padding + kernel) for s, c in zip(size, codes_shape)]
    reference = F.conv_transpose3d(
        codes.transpose(1, 2),
        weight,
        stride=(1, stride, stride),
        padding=(0, padding, padding),
        output_padding=(0, *output_padding),
    )[:, 0]
    torch.testing.assert_close(
        band_conv_transpose3d(codes, weight, size, stride=stride, padding=padding), reference, atol=1e-4, rtol=1e-4
    )


def test_polyphase_transposed_convolution_equals_conv_transpose2d():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(3, 6, 5, 4, generator=generator)
    weight = torch.randn(6, 2, 9, 9, generator=generator)
    reference = F.conv_transpose2d(codes, weight, stride=4, padding=4, output_padding=(1, 2))
    ours = conv_transpose2d_polyphase(codes, weight, tuple(reference.shape[-2:]), 4, 4)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_difference_convolution_folded_equals_its_five_terms():
    torch.manual_seed(0)
    dconv = DifferenceConv3d(4, init_scale=1.0)
    x = torch.randn(2, 5, 4, 7, 13)  # (N, B, J, h, w)
    unfolded = dconv.forward_unfolded(x)
    torch.testing.assert_close(dconv(x), unfolded, atol=1e-5, rtol=1e-5)
    dconv.eval().fold()
    torch.testing.assert_close(dconv(x), unfolded, atol=1e-5, rtol=1e-5)


def test_difference_terms_are_the_named_differences():
    # Only the inter-band term, a single 1 at spatial centre: y(b) = x(b - 1) - x(b + 1) (zero outside).
    dconv = DifferenceConv3d(1)
    with torch.no_grad():
        for p in dconv.parameters():
            p.zero_()
        dconv.interband[0, 0, 1, 1] = 1.0
    x = torch.randn(1, 6, 1, 3, 4)
    padded = F.pad(x, (0, 0, 0, 0, 0, 0, 1, 1))
    torch.testing.assert_close(dconv(x), padded[:, :-2] - padded[:, 2:])
    # Only the central term with all-ones weights: y = sum over the 3x3x3 neighbourhood of (x(p) - x(centre)).
    with torch.no_grad():
        dconv.interband.zero_()
        dconv.central.fill_(1.0)
    box = F.conv3d(x.transpose(1, 2), torch.ones(1, 1, 3, 3, 3), padding=1).transpose(1, 2)
    torch.testing.assert_close(dconv(x), box - 27 * x, atol=1e-5, rtol=1e-5)


def test_folded_kernel_is_refreshed_after_training_changes_the_weights():
    dconv = DifferenceConv3d(2)
    x = torch.randn(1, 4, 2, 5, 5)
    dconv.eval().fold()
    with torch.no_grad():
        dconv.vanilla.add_(1.0)
    dconv.train()
    torch.testing.assert_close(dconv(x), dconv.forward_unfolded(x))


def test_model_folded_for_inference_gives_the_same_output():
    torch.manual_seed(0)
    model = build_model(NOISE_AWARE).eval()
    noisy, init, sigma = inputs((1, 31, 16, 16))
    with torch.inference_mode():
        before, _ = model(noisy, init=init, sigma=sigma)
        after, _ = model.fold_for_inference()(noisy, init=init, sigma=sigma)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", ["gic", "lsu"])
def test_step_size_is_one_over_the_squared_norm_of_the_decoder(layer):
    torch.manual_seed(0)
    if layer == "gic":
        csc = GICLayer(bands=3, atoms=2, kernel_size=3, stride=2, prior=ResidualConvPrior(2, 2, 1), threshold_init=1.0)
    else:
        csc = LSULayer(bands=4, atoms=2, kernel_size=3, stride=2, threshold_init=1.0)
    size = (csc.probe_size, csc.probe_size)
    codes_shape = csc.power_vector.shape
    with torch.no_grad():
        for _ in range(300):
            csc._power_iteration()
    # The decoder as an explicit matrix (columns = images of the unit codes) and its largest singular value.
    basis = torch.eye(int(np.prod(codes_shape))).view(-1, *codes_shape[1:])
    matrix = csc.decode(basis, size, csc.decoder).detach().reshape(basis.shape[0], -1).T.double().numpy()
    csc.eval()
    assert float(csc.step_size().detach()) == pytest.approx(1 / np.linalg.norm(matrix, 2) ** 2, rel=1e-3)
    # encode with the decoder's weights is the decoder's adjoint
    image = torch.randn(1, csc.bands, *size)
    codes = torch.randn(codes_shape)
    with torch.no_grad():
        lhs = (csc.encode(image, csc.decoder) * codes).sum()
        rhs = (image * csc.decode(codes, size, csc.decoder)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-4)


def naive_window_attention(block: SwinBlock, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Attention among the given tokens (T, C) at window coordinates (T, 2), written out by hand (eqs. 22-23)."""
    attn = block.attn
    heads, window = attn.heads, block.window
    t, c = tokens.shape
    q, k, v = (tokens @ attn.qkv.weight.T + attn.qkv.bias).view(t, 3, heads, c // heads).permute(1, 2, 0, 3)
    bias = torch.empty(heads, t, t)
    for i in range(t):
        for j in range(t):
            dy, dx = (coords[i] - coords[j]).tolist()
            bias[:, i, j] = attn.relative_position_bias_table[(dy + window - 1) * (2 * window - 1) + (dx + window - 1)]
    weights = torch.softmax(q @ k.transpose(1, 2) / (c // heads) ** 0.5 + bias, dim=-1)
    return (weights @ v).transpose(0, 1).reshape(t, c) @ attn.proj.weight.T + attn.proj.bias


def test_swin_block_attends_within_windows_and_ignores_padding():
    torch.manual_seed(0)
    block = SwinBlock(dim=8, heads=2, window=4, shifted=False, mlp_ratio=2.0)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
    x = torch.randn(1, 5, 6, 8)  # padded to 8 x 8 inside: three of the four windows hold padding
    with torch.no_grad():
        out = block(x)
        normed = block.norm1(x[0])
        expected = torch.empty_like(x[0])
        for top in (0, 4):
            for left in (0, 4):
                rows, cols = range(top, min(top + 4, 5)), range(left, min(left + 4, 6))
                coords = torch.tensor([(r - top, c - left) for r in rows for c in cols])
                tokens = torch.stack([normed[r, c] for r in rows for c in cols])
                attended = naive_window_attention(block, tokens, coords)
                for index, (r, c) in enumerate((r, c) for r in rows for c in cols):
                    expected[r, c] = x[0, r, c] + attended[index]
        expected = expected + block.mlp(block.norm2(expected))
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_shifted_swin_block_mixes_across_window_borders_only_when_shifted():
    torch.manual_seed(0)
    plain = SwinBlock(dim=8, heads=2, window=4, shifted=False, mlp_ratio=2.0)
    shifted = SwinBlock(dim=8, heads=2, window=4, shifted=True, mlp_ratio=2.0)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(std=0.5)  # the 0.02 initialisation makes attention nearly uniform and its effects tiny
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(1, 8, 8, 8)
    moved = x.clone()
    moved[0, 4, 4] = torch.randn(8)  # a token in the bottom-right window
    with torch.no_grad():
        # plain windows: the top-left window does not see it; shifted windows: token (3, 3) shares a window with it
        assert torch.equal(plain(x)[0, :4, :4], plain(moved)[0, :4, :4])
        assert not torch.allclose(shifted(x)[0, 3, 3], shifted(moved)[0, 3, 3], atol=1e-3)
        # but the shift never wraps around: the opposite corner is not affected
        assert torch.equal(shifted(x)[0, 0, 0], shifted(moved)[0, 0, 0])


# ------------------------------------------------------------------------------------------------------ weights


def test_weights_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model(NOISE_AWARE)
    model.train()
    noisy, init, sigma = inputs((1, 31, 16, 16))
    model(noisy, init=init, sigma=sigma)  # one training forward moves the power-iteration vectors
    card = {"data": ["a.mat"], "steps": 3, "validation": {"mpsnr": 30.5}}
    path = save_weights(model, model.config, tmp_path / "decsc-lite", card)
    assert path == tmp_path / "decsc-lite.safetensors"
    loaded, config, loaded_card = load_weights(path)
    assert config == model.config and loaded_card == card and not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    assert all(torch.equal(original[k], restored[k]) for k in original)
    meta = json.loads((tmp_path / "decsc-lite.json").read_text())
    assert (meta["preset"], meta["band_window"], meta["parameters"]) == (None, 31, count_parameters(model))
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(noisy, init=init, sigma=sigma)[0], model(noisy, init=init, sigma=sigma)[0], rtol=0, atol=0
        )


def _saved(tmp_path):
    model = build_model(NOISE_AWARE)
    return save_weights(model, model.config, tmp_path / "w", {})


def test_missing_weights_are_a_checkpoint_error(tmp_path):
    path = _saved(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "nothing.safetensors")


def test_corrupt_weights_are_a_checkpoint_error(tmp_path):
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_weights(path)
    assert "\n" not in str(info.value)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_weights(path)


def test_mismatched_weights_are_a_checkpoint_error(tmp_path):
    path = _saved(tmp_path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["gic_atoms"] = 16
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match") as info:
        load_weights(path)
    assert "\n" not in str(info.value)
    meta["config"]["not_a_field"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not_a_field"):
        load_weights(path)


def test_default_weights_are_found_in_the_weights_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "weights_dir", lambda: tmp_path)
    assert find_default_weights() is None
    model = build_model("subspace")
    save_weights(model, model.config, tmp_path / weights_module.DEFAULT_WEIGHTS_NAME, {})
    assert find_default_weights() == tmp_path / f"{weights_module.DEFAULT_WEIGHTS_NAME}.safetensors"


def test_saved_weights_are_readable_by_others(tmp_path):
    import os
    import stat

    model = build_model(NOISE_AWARE)
    umask = os.umask(0o022)
    try:
        path = save_weights(model, model.config, tmp_path / "shared", {})
    finally:
        os.umask(umask)
    for file in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
