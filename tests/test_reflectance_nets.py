"""Reflectance networks: shapes, save/load, sliding window (no seams), refusal of bad weights,
and the shipped weights against the trivial baselines on a few test faces."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from modeling.errors import WeightsError
from modeling.networks.blocks import TinyUNet, uv_coordinates
from modeling.networks.delighting import NUM_STATS, DelightingNet
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.specular import SpecularAlbedoNet
from modeling.networks.tiling import blend_window, sliding_window, tile_starts
from pipelines import AvatarPipeline

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights_config"
COMPONENTS = {"delighting": DelightingNet, "specular": SpecularAlbedoNet,
              "normals": DetailNormalsNet}  # fmt: skip


def get_dummy_components(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    nets = {
        "delighting": DelightingNet(channels=(4, 8)),
        "specular": SpecularAlbedoNet(channels=(4, 8), mean_specular=0.25),
        "normals": DetailNormalsNet(channels=(4, 8)),
    }
    for net in nets.values():  # the zero-initialised heads would make every output trivial
        torch.nn.init.normal_(net.unet.head.weight, std=0.1)
        net.eval()
    torch.nn.init.normal_(nets["specular"].context.head.weight, std=0.1)
    return nets


def _inputs(size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, c, size, size, generator=g) for c in (3, 3, 3, 1)]


def test_shapes_and_ranges():
    nets = get_dummy_components()
    tex, delit, shape, ao = _inputs(50)  # not a multiple of the U-Net's stride
    with torch.no_grad():
        stats = DelightingNet.global_stats(tex, delit, ao)
        albedo = nets["delighting"](tex, delit, shape, ao, ao, stats)
        uv = uv_coordinates(50, 50)
        context = nets["specular"].context_maps(tex, delit, shape, ao)
        assert context.shape == (1, 10, 64, 64)
        spec = nets["specular"](albedo, shape, tex, uv, context)
        normals = nets["normals"](albedo, shape, tex, uv)
    assert albedo.shape == (1, 3, 50, 50)
    assert spec.shape == (1, 1, 50, 50)
    assert normals.shape == (1, 6, 50, 50)
    for n in normals.split(3, 1):
        torch.testing.assert_close(((n * 2 - 1) ** 2).sum(1), torch.ones(1, 50, 50))
    # A freshly built network is the identity on its baseline (zero-initialised head).
    fresh = DelightingNet(channels=(4, 8))
    torch.testing.assert_close(fresh(tex, delit, shape, ao, ao, stats), delit)
    assert torch.all(SpecularAlbedoNet(mean_specular=0.3)(delit, shape, tex, uv, context) == 0.3)


def test_specular_prior_level_keeps_the_structure():
    net = SpecularAlbedoNet(channels=(4, 8), mean_specular=0.2)
    rng = np.random.default_rng(0)
    spec = (0.35 + 0.05 * rng.standard_normal((32, 32, 1))).astype(np.float32)
    chart = np.zeros((32, 32), bool)
    chart[4:28, 6:30] = True
    out = net.with_prior_level(spec, chart)
    assert out.dtype == np.float32 and out.shape == spec.shape
    assert out[chart].mean() == pytest.approx(0.2, abs=1e-3)  # the training mean on the chart
    np.testing.assert_allclose(out - spec, (out - spec)[0, 0, 0], atol=1e-6)  # one offset
    assert net.with_prior_level(spec, None).mean() == pytest.approx(0.2, abs=1e-3)
    dip = spec.copy()
    dip[0, 0] = -1.0  # a texel off the chart far below the rest: clipped at 0, not negative
    assert net.with_prior_level(dip, chart).min() == 0.0


def test_save_load_round_trip(tmp_path):
    nets = get_dummy_components()
    tex, delit, shape, ao = _inputs()
    for name, net in nets.items():
        net.save_pretrained(tmp_path / name)
        again = COMPONENTS[name].from_pretrained(tmp_path / name).eval()
        keys = [k for k in net.config if not k.startswith("_")]
        assert {k: json.dumps(again.config[k]) for k in keys} == {
            k: json.dumps(net.config[k]) for k in keys
        }
        stats = DelightingNet.global_stats(tex, delit, ao)
        uv = uv_coordinates(*tex.shape[-2:])
        if name == "delighting":
            args = (tex, delit, shape, ao, ao, stats)
        elif name == "specular":
            args = (delit, shape, tex, uv, net.context_maps(tex, delit, shape, ao))
        else:
            args = (delit, shape, tex, uv)
        with torch.no_grad():
            torch.testing.assert_close(again(*args), net(*args))


def test_delighting_stats_do_not_depend_on_the_map_resolution():
    from modeling.networks.delighting import NUM_STATS

    tex, delit, _, _ = _inputs(256)
    vis = torch.zeros(1, 1, 256, 256)
    vis[..., 64:192, 32:224] = 1  # the photo saw the middle of the map
    stats = DelightingNet.global_stats(tex, delit, vis)
    assert stats.shape == (1, NUM_STATS)
    # the same maps at twice the resolution: the same statistics (the quantiles are taken on
    # maps area-resized to a fixed size), so the global correction does not change with it
    up = [torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
          for x in (tex, delit, vis)]  # fmt: skip
    torch.testing.assert_close(DelightingNet.global_stats(*up), stats, atol=1e-5, rtol=0)
    # the quantiles are of the seen texels only: what the completion filled in does not count
    filled = tex.clone()
    filled[..., :64, :] = 1.0
    assert torch.equal(DelightingNet.global_stats(filled, delit, vis)[:, 12:], stats[:, 12:])
    # nothing seen: every texel counts (no NaN)
    assert torch.isfinite(DelightingNet.global_stats(tex, delit, vis * 0)).all()


def test_tiles_cover_the_image_and_blend_to_one():
    assert tile_starts(1000, 256, 32) == [0, 224, 448, 672, 744]
    assert tile_starts(200, 256, 32) == [0]
    w = blend_window(64, 64, 16, edges=(True, False, True, False))
    assert w.min() > 0 and w[-1, -1] == 1 and w[0, 0] < 0.01


def test_sliding_window_matches_the_full_image_without_seams():
    torch.manual_seed(0)
    net = TinyUNet(3, 3, (4, 8)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 300), torch.linspace(0, 1, 300), indexing="ij")
    smooth = torch.stack([xx, yy, 0.5 + 0.3 * torch.sin(6 * xx * yy)])[None]
    image = smooth + 0.05 * torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net(image)
    tiled = sliding_window(net, [image], 3, tile=96, overlap=32, batch_size=3)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert (tiled - full)[inner].abs().max() < 1e-3 * full.abs().max() + 1e-4
    # No seams: on the smooth input, the horizontal gradient at tile borders is no larger than
    # elsewhere.
    with torch.no_grad():
        out = sliding_window(net, [smooth], 3, tile=96, overlap=32, batch_size=3)
    grad = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))
    borders = [s + 96 - 1 for s in tile_starts(300, 96, 32)[:-1]]
    assert grad[borders].max() < 2 * grad[10:-10].median() + 1e-4


@pytest.mark.parametrize("norm", [False, True])
def test_constant_channels_as_a_bias_match_the_expanded_channels(norm):
    # The reference: the constants expanded over the image and concatenated, as the networks
    # were trained; the fast path folds them into the first conv's bias (replicate padding keeps
    # them constant), channels-last as the reflectance stage runs it.
    torch.manual_seed(0)
    net = TinyUNet(5 + 7, 4, (4, 8, 16), norm=norm).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, constants = torch.rand(2, 5, 37, 50), torch.rand(2, 7)
    with torch.no_grad():
        expanded = net(torch.cat([x, constants[:, :, None, None].expand(-1, -1, 37, 50)], 1))
        folded = net(x.contiguous(memory_format=torch.channels_last), constants)
    assert (folded - expanded).abs().max() < 1e-5 * expanded.abs().max()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_replicate_pad_is_torchs_in_the_same_memory_format(memory_format):
    from modeling.networks.blocks import replicate_pad

    x = torch.rand(2, 5, 7, 9).contiguous(memory_format=memory_format)
    padded = replicate_pad(x)
    assert torch.equal(padded, torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
    assert padded.is_contiguous(memory_format=memory_format)


def test_unet_gives_the_same_with_and_without_gradients():
    torch.manual_seed(0)
    net = TinyUNet(3, 2, (4, 8)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.3)
    x = torch.rand(1, 3, 30, 20)
    with torch.no_grad():
        fast = net(x)
    assert torch.allclose(net(x), fast, atol=1e-6)


def test_detail_normals_are_unit_vectors_as_normalize_gives():
    from modeling.networks.normals import _unit

    v = torch.randn(2, 3, 16, 16)
    v[0, :, 0, 0] = 0  # F.normalize's eps: the zero vector stays zero
    assert torch.allclose(_unit(v), torch.nn.functional.normalize(v, dim=1), atol=1e-6)


def _copy_weights(tmp_path, dummy=False) -> Path:
    folder = tmp_path / "weights"
    if dummy:
        pipe = AvatarPipeline(**get_dummy_components())
        pipe.save_pretrained(folder)
    else:
        shutil.copytree(WEIGHTS, folder)
    return folder


def test_pipeline_saves_and_loads_its_components(tmp_path):
    folder = _copy_weights(tmp_path, dummy=True)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["delighting"] == ["delighting", "DelightingNet"]  # delighting/delighting.py
    assert index["specular"] == ["specular", "SpecularAlbedoNet"]
    assert index["normals"] == ["normals", "DetailNormalsNet"]
    pipe = AvatarPipeline.from_pretrained(folder)
    assert isinstance(pipe.normals, DetailNormalsNet)
    assert pipe.specular.config.mean_specular == 0.25


@pytest.mark.parametrize("component", ["delighting", "specular", "normals"])
def test_missing_or_corrupt_weights_are_refused_by_name(tmp_path, component):
    folder = _copy_weights(tmp_path, dummy=True)
    weights = folder / component / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"component '{component}'.*corrupt"):
        AvatarPipeline.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(WeightsError, match=f"component '{component}'.*missing"):
        AvatarPipeline.from_pretrained(folder)


def test_pipeline_runs_the_components_on_its_maps():
    pipe = AvatarPipeline(**get_dummy_components())
    r = 64
    rng = np.random.default_rng(0)
    texture, albedo = rng.random((r, r, 3), np.float32), rng.random((r, r, 3), np.float32)
    shape = {"shape_normals": rng.random((r, r, 3), np.float32),
             "ambient_occlusion": rng.random((r, r, 1), np.float32)}  # fmt: skip
    visibility = rng.random((r, r), np.float32)
    maps = pipe.reflectance_maps(texture, albedo, shape, visibility)
    assert maps["diffuse_albedo_first_order"] is albedo
    assert maps["diffuse_albedo"].shape == (r, r, 3)
    assert maps["specular_albedo"].shape == (r, r, 1)
    assert maps["specular_normals"].shape == maps["diffuse_normals"].shape == (r, r, 3)
    assert AvatarPipeline().reflectance_maps(texture, albedo, shape, visibility) == {}


@pytest.mark.slow  # renders and evaluates 30 synthetic faces
def test_shipped_weights_load_and_beat_the_baselines():
    from training.evaluate_reflectance import evaluate, load_networks

    pipe = AvatarPipeline.from_pretrained(WEIGHTS)
    for name, cls in COMPONENTS.items():
        assert isinstance(getattr(pipe, name), cls), name
    # 256 px: the lowest resolution the networks were trained at (at 128 px the detail normals
    # are below a texel and flat is as good as it gets)
    results = evaluate(load_networks(), num_faces=30, resolution=256)  # 8 s; 3 faces are noise
    higher = ("albedo_psnr", "specular_psnr", "rerender_psnr")
    lower = ("diffuse_normals_deg", "specular_normals_deg")
    for k in higher:
        assert results[k]["network"] > results[k]["baseline"], (k, results[k])
    for k in lower:
        assert results[k]["network"] < results[k]["baseline"], (k, results[k])


def test_camera_white_balance_is_one_gain_for_the_three_channels():
    net = get_dummy_components()["delighting"]
    torch.nn.init.normal_(net.global_head[-1].weight, std=0.5)
    stats = torch.rand(2, NUM_STATS)
    with torch.no_grad():
        own, camera = net.global_gain(stats), net.global_gain(stats, "camera")
    assert not torch.allclose(own[:, 0], own[:, 1])  # the network's gains differ by channel
    torch.testing.assert_close(camera, camera[:, :1].expand(-1, 3))
    torch.testing.assert_close(camera[:, 0], own @ torch.tensor([0.2126, 0.7152, 0.0722]))
    tex, delit, shape, ao = _inputs(32)
    with torch.no_grad():
        a = net(tex, delit, shape, ao, ao, DelightingNet.global_stats(tex, delit, ao), "camera")
    assert a.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="white_balance must be one of"):
        net.global_gain(stats, "grey")


def test_network_precision_chooses_bfloat16_only_where_asked_or_native():
    from modeling.networks.blocks import bfloat16_native, network_compute_dtype

    native = torch.bfloat16 if bfloat16_native("cpu") else None
    assert network_compute_dtype("auto", "cpu", torch.float32) is native
    assert network_compute_dtype("float32", "cpu", torch.float32) is None
    assert network_compute_dtype("bfloat16", "cpu", torch.float32) is torch.bfloat16
    # weights the user moved to another dtype run as moved
    assert network_compute_dtype("bfloat16", "cpu", torch.float16) is None
    with pytest.raises(ValueError, match="network_precision must be one of"):
        network_compute_dtype("half", "cpu", torch.float32)
    with pytest.raises(ValueError, match="network_precision must be one of"):
        AvatarPipeline(network_precision="fp8")


def test_bfloat16_trunks_give_float32_maps_close_to_float32():
    """The shipped networks in bfloat16 (convs only) against float32: the maps stay float32
    with float32 steps (the residuals are added in float32, so no bfloat16 banding) and within
    a few thousandths of the exact maps; training (gradients on) is never autocast."""
    from modeling.networks.blocks import compute_dtype
    from modeling.networks.reflectance import reflectance_maps

    nets = {name: cls.from_pretrained(WEIGHTS / name).eval() for name, cls in COMPONENTS.items()}
    texture, albedo, shape, visibility = _smooth_maps(96)
    exact, fast = (reflectance_maps(texture, albedo, shape, visibility, **nets, precision=p)
                   for p in ("float32", "bfloat16"))  # fmt: skip
    for key in ("diffuse_albedo", "specular_albedo", "specular_normals", "diffuse_normals"):
        assert fast[key].dtype == np.float32
        assert np.abs(fast[key] - exact[key]).max() < 5e-3, key
        as_bf16 = torch.from_numpy(fast[key]).bfloat16().float().numpy()
        assert (as_bf16 == fast[key]).mean() < 0.5, key  # not quantised to bfloat16 steps
    unet = nets["normals"].unet
    x = torch.rand(1, unet.down[0].body[0].in_channels, 32, 32)
    with compute_dtype(torch.bfloat16):
        trained = unet(x)
        with torch.no_grad():
            inferred = unet(x)
    assert trained.dtype == inferred.dtype == torch.float32
    assert torch.equal(trained, unet(x))  # gradients on: float32, exactly
    assert not torch.equal(inferred, trained.detach())


def _smooth_maps(r: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:r, 0:r] / r
    smooth = np.stack([0.5 + 0.2 * np.sin(6 * xx), 0.4 + 0.1 * yy, 0.3 + 0.1 * xx * yy], -1)
    texture = (smooth + 0.02 * rng.standard_normal((r, r, 3))).astype(np.float32)
    albedo = (smooth * 1.1).astype(np.float32)
    normals = np.dstack([0.5 + 0.1 * xx, 0.5 + 0.1 * yy, np.ones_like(xx)]).astype(np.float32)
    shape = {"shape_normals": normals, "ambient_occlusion": np.ones((r, r, 1), np.float32)}
    return texture, albedo, shape, np.ones((r, r), np.float32)


def test_networks_on_reduced_maps_keep_the_photo_detail_and_agree_with_full_size():
    """`max_resolution`: maps up to it run as before (the same arrays); larger ones run the
    networks at `network_size` and bring the outputs back: close to the full-size run, the
    first-order albedo's texel-level detail kept in the diffuse albedo, unit normals, and the
    specular level set on the full-size chart."""
    from modeling.networks.reflectance import network_size, reflectance_maps

    assert network_size(4096, 512) == 512 and network_size(1000, 512) == 500
    assert network_size(2048, 1024) == 1024 and network_size(512, 512) == 512
    nets = {name: cls.from_pretrained(WEIGHTS / name).eval() for name, cls in COMPONENTS.items()}
    r = 128
    texture, albedo, shape, visibility = _smooth_maps(r)
    checker = 0.05 * ((np.indices((r, r)).sum(0) % 2) - 0.5)[..., None].astype(np.float32)
    albedo = albedo + checker  # detail at the texel scale, which a half-size run cannot see
    args = (texture, albedo, shape, visibility)
    full = reflectance_maps(*args, **nets, precision="float32")
    same = reflectance_maps(*args, **nets, precision="float32", max_resolution=r)
    for key in full:
        assert np.array_equal(full[key], same[key]), key
    half = reflectance_maps(*args, **nets, precision="float32", max_resolution=r // 2)
    for key in full:
        assert half[key].shape == full[key].shape and half[key].dtype == np.float32, key
        # (the full-size de-lighting damps part of the checker, which the reduced run keeps)
        assert np.abs(half[key] - full[key]).mean() < 0.02, key
    kept = half["diffuse_albedo"] - cv2.blur(half["diffuse_albedo"], (3, 3))
    given = albedo - cv2.blur(albedo, (3, 3))
    inner = (slice(4, -4), slice(4, -4))
    assert np.corrcoef(kept[inner].ravel(), given[inner].ravel())[0, 1] > 0.98
    for key in ("specular_normals", "diffuse_normals"):
        length = np.linalg.norm(half[key] * 2 - 1, axis=-1)
        assert np.allclose(length, 1, atol=2e-3), key
    mean_specular = nets["specular"].config.mean_specular
    assert abs(half["specular_albedo"].mean() - mean_specular) < 1e-3


@pytest.mark.parametrize("bad", [32, 100.0, True, "512"])
def test_pipeline_refuses_a_bad_network_resolution(bad):
    with pytest.raises(ValueError, match="network_resolution must be None or an integer"):
        AvatarPipeline(network_resolution=bad)


def test_gain_refit_recovers_a_level_the_statistics_determine():
    """`training.refit_gain` fits the de-lighting head so the face-mean colour matches the
    truth: on faces whose true level is a known function of their statistics it recovers it,
    and `face_means` is the mean linear colour of the clamped sRGB albedo."""
    from training.refit_gain import face_means, level_error, refit

    rng = np.random.default_rng(0)
    n, k = 96, 40
    stats = torch.from_numpy(rng.uniform(0, 1, (n, NUM_STATS)))
    albedo0 = torch.from_numpy(rng.uniform(0.05, 0.5, (n, k, 3)))
    weight = torch.ones(n, k, 1, dtype=torch.float64)
    weight[:, 30:] = 0  # padded texels do not count
    faces = {"stats": stats, "albedo0": albedo0, "residual": torch.zeros_like(albedo0),
             "weight": weight}  # fmt: skip
    zero = torch.zeros(n, 3, dtype=torch.float64)
    np.testing.assert_allclose(face_means(faces, zero), albedo0[:, :30].mean(1), rtol=1e-9)
    # the truth: the albedo x a level set by the statistics (an exposure the head can read)
    level = 0.6 * (stats[:, :1] - 0.5) + torch.tensor([0.1, 0.0, -0.1], dtype=torch.float64)
    faces["truth"] = face_means(faces, level)
    head = DelightingNet(channels=(8, 16)).global_head  # zero-initialised: gain 0
    before = level_error(faces, head.double(), "skin_prior")["rms"]
    after = level_error(faces, refit(head.float(), faces, steps=300).double(), "skin_prior")
    assert before > 0.15 and after["rms"] < before / 4
    assert abs(after["mean"]) < 0.02
