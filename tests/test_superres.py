"""Super-resolution network: x4 shapes, the bicubic start, tiled == whole map, save/load,
refusal of bad weights by name, the shipped weights against bicubic on a held-out face, and the
pipeline's super-resolution path at 2048 px."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling.errors import WeightsError
from modeling.networks.reflectance import use_super_resolution
from modeling.networks.superres import SuperResolutionNet
from modeling.networks.tiling import sliding_window
from pipelines import AvatarPipeline

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights_config"


def _dummy_net(seed: int = 0) -> SuperResolutionNet:
    torch.manual_seed(seed)
    net = SuperResolutionNet(channels=8, num_blocks=2).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.1)  # the zero-initialised head is bicubic
    return net


def _smooth_image(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 12, 12, generator=g)
    image = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    return (image + 0.05 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


def test_shapes_and_bicubic_start():
    x = _smooth_image(37)  # odd sizes are fine
    with torch.no_grad():
        assert _dummy_net()(x).shape == (1, 3, 148, 148)
        fresh = SuperResolutionNet(channels=8, num_blocks=1)
        torch.testing.assert_close(fresh(x), fresh.upsample(x))
    with pytest.raises(ValueError, match="image must be"):
        fresh(torch.rand(1, 4, 8, 8))


def test_tiled_matches_whole_map():
    net = _dummy_net()
    x = _smooth_image(150)
    with torch.no_grad():
        whole = net(x)
    for margin in (net.receptive_field, 0):
        tiled = sliding_window(net, [x], 3, tile=48, overlap=8, batch_size=3, scale=4,
                               margin=margin)  # fmt: skip
        assert tiled.shape == whole.shape
        if margin:  # with the receptive field as margin: the same output everywhere
            torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
        else:  # without: the blending hides the tile borders (close away from them)
            assert (tiled - whole).abs().max() < 0.05


def test_save_load_round_trip(tmp_path):
    net = _dummy_net()
    net.save_pretrained(tmp_path / "superres")
    again = SuperResolutionNet.from_pretrained(tmp_path / "superres").eval()
    assert again.config.channels == 8 and again.config.num_blocks == 2
    x = _smooth_image(20)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))


def _pipeline_folder(tmp_path) -> Path:
    folder = tmp_path / "weights"
    AvatarPipeline(superres=_dummy_net()).save_pretrained(folder)
    return folder


def test_pipeline_loads_superres_and_refuses_bad_weights_by_name(tmp_path):
    folder = _pipeline_folder(tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["superres"] == ["superres", "SuperResolutionNet"]  # superres/superres.py
    assert index["super_resolution"] == "auto"
    pipe = AvatarPipeline.from_pretrained(folder)
    assert isinstance(pipe.superres, SuperResolutionNet)
    weights = folder / "superres" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(WeightsError, match="component 'superres'.*corrupt"):
        AvatarPipeline.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(WeightsError, match="component 'superres'.*missing"):
        AvatarPipeline.from_pretrained(folder)


def test_super_resolution_mode_is_checked():
    with pytest.raises(ValueError, match="super_resolution must be one of"):
        AvatarPipeline(super_resolution="yes")
    net = _dummy_net()
    assert use_super_resolution("auto", net, 2048)
    assert not use_super_resolution("auto", net, 1024)  # "auto": from 2048 px
    assert use_super_resolution("on", net, 1024)
    assert not use_super_resolution("off", net, 4096)
    with pytest.raises(ValueError, match="multiple of 4"):
        use_super_resolution("on", net, 1022)
    assert not use_super_resolution("auto", None, 4096)
    with pytest.raises(ValueError, match="needs the `superres` component"):
        use_super_resolution("on", None, 2048)
    with pytest.raises(ValueError, match="needs the `superres` component"):
        AvatarPipeline()("examples/astronaut.jpg", resolution=2048, super_resolution="on")


@pytest.mark.slow  # renders a 1024 px training face and runs the shipped network on it
def test_shipped_weights_beat_bicubic_on_a_held_out_face():
    from training.render_pairs import make_training_pair, seeds
    from training.train_superres import EVAL_DEGRADATION, degrade, evaluate

    net = SuperResolutionNet.from_pretrained(WEIGHTS / "superres").eval()
    assert sum(p.numel() for p in net.parameters()) <= 150_000
    pair = make_training_pair(seeds("test", 1)[0], resolution=1024)  # x4 from 256 px
    data = {k: np.clip(np.rint(pair[k][None] * 255), 0, 255).astype(np.uint8)
            for k in ("texture", "diffuse_albedo", "mask")}  # fmt: skip
    results = evaluate(net, data, {"degraded": EVAL_DEGRADATION})
    for key, r in results.items():
        assert r["sr_psnr"] > r["bicubic_psnr"], (key, r)
        assert r["sr_ssim"] > r["bicubic_ssim"], (key, r)
    assert degrade(pair["texture"]).shape == (256, 256, 3)


@pytest.mark.slow  # a full reconstruction at 2048 px
def test_pipeline_super_resolves_at_2048(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS / "superres", folder / "superres")
    pipe = AvatarPipeline(superres=SuperResolutionNet.from_pretrained(folder / "superres"))
    out = pipe(ROOT / "examples" / "astronaut.jpg", resolution=2048, num_fit_steps=0)
    assert "super_resolution" in out.timings
    assert out.maps["texture"].shape == (2048, 2048, 3)
    assert out.maps["diffuse_albedo"].shape == (2048, 2048, 3)
    assert out.maps["visibility"].shape == (2048, 2048, 1)
    assert out.maps["shape_normals"].shape == (2048, 2048, 3)
    low = pipe(ROOT / "examples" / "astronaut.jpg", resolution=512, num_fit_steps=0)
    assert "super_resolution" not in low.timings  # "auto" leaves lower resolutions alone


def test_shipped_net_in_bfloat16_stays_close_and_float32():
    """The trunk in bfloat16 (`network_precision`), the bicubic base and the sum in float32."""
    from modeling.networks.blocks import compute_dtype

    net = SuperResolutionNet.from_pretrained(WEIGHTS / "superres").eval()
    x = _smooth_image(40)
    with torch.no_grad():
        exact = net(x)
        with compute_dtype(torch.bfloat16):
            fast = net(x)
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() < 5e-3
    assert (fast.bfloat16().float() == fast).float().mean() < 0.5  # float32 steps
