"""The benchmark's pure parts: NME, the iBUG-68 mapping, alignment, the RESULTS.md writer."""

import json
from pathlib import Path

import numpy as np
import pytest

from bench import report
from bench.metrics import (
    colour_shift,
    lab,
    masked_psnr,
    masked_ssim,
    mean_linear,
    mean_vertex_distance_mm,
    nme,
    rigid_align,
)
from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, NUM_LANDMARKS, load_topology
from rendering.color import linear_to_srgb, srgb_to_linear

# iBUG-68 mirror partner of each point (the 300-W convention).
IBUG68_MIRROR = (
    [16 - i for i in range(17)]
    + [26 - i for i in range(10)]
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def _points(seed=0):
    pts = np.random.default_rng(seed).uniform(0, 100, (68, 2))
    pts[36], pts[45] = (30.0, 40.0), (70.0, 40.0)  # inter-ocular distance 40
    return pts


def test_nme_known_points():
    ref = _points()
    assert nme(ref, ref) == 0.0
    assert nme(ref + [3.0, 4.0], ref) == pytest.approx(5 / 40)  # every point 5 px off
    shifted = ref.copy()
    shifted[0] += (0.0, 68 * 2.0)  # one point 136 px off -> mean 2 px
    assert nme(shifted, ref) == pytest.approx(2 / 40)
    with pytest.raises(ValueError):
        nme(ref[:5], ref[:5])


def test_ibug68_mapping_indices():
    m = np.array(IBUG68_FROM_MEDIAPIPE)
    assert m.shape == (68,) and len(set(m.tolist())) == 68
    assert m.min() >= 0 and m.max() < NUM_LANDMARKS


def test_ibug68_mapping_is_left_right_consistent():
    sym = load_topology().base_symmetry
    m = np.array(IBUG68_FROM_MEDIAPIPE)
    assert len(IBUG68_MIRROR) == 68 and sorted(IBUG68_MIRROR) == list(range(68))
    for i, j in enumerate(IBUG68_MIRROR):
        assert sym[m[i]] == m[j], f"iBUG {i} -> MediaPipe {m[i]}, mirror {sym[m[i]]} != {m[j]}"


def test_ibug68_points_sit_where_ibug_says():
    shape = load_topology().frontal_shape[list(IBUG68_FROM_MEDIAPIPE)]  # +x subject's left
    assert shape[0, 0] < 0 < shape[16, 0]  # jaw runs from the subject's right to left
    assert shape[36, 0] < shape[39, 0] < 0 < shape[42, 0] < shape[45, 0]  # eye corners
    assert shape[8, 1] < shape[57, 1] < shape[51, 1] < shape[30, 1] < shape[27, 1]  # chin up


def test_masked_psnr_ssim():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (40, 40, 3))
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    b = a.copy()
    b[~mask] = 0  # outside the mask does not count
    assert masked_psnr(a, b, mask) > 100
    assert masked_ssim(a, a, mask) == pytest.approx(1.0)
    assert masked_psnr(a, a + 0.1, mask) == pytest.approx(20.0)


def test_rigid_alignment_removes_pose():
    rng = np.random.default_rng(1)
    pts = rng.normal(0, 0.05, (200, 3))
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    moved = pts @ rot.T + [0.1, -0.2, 0.3]
    assert np.allclose(rigid_align(moved, pts), pts, atol=1e-9)
    assert mean_vertex_distance_mm(moved, pts) == pytest.approx(0, abs=1e-6)
    assert mean_vertex_distance_mm(1.1 * moved, pts, scale=True) == pytest.approx(0, abs=1e-6)
    assert mean_vertex_distance_mm(1.1 * moved, pts) > 1


def _fake_results(tmp_path: Path, dlib: bool) -> dict:
    metric = {"network": 30.0, "baseline": 25.0}
    return {
        "command": "python -m bench --quick",
        "mode": "quick",
        "machine_text": "Fake CPU, 2 cores",
        "date": "2026-01-01 00:00 UTC",
        "elapsed_s": 60.0,
        "plots_dir": tmp_path / "plots",
        "notes": ["a note"],
        "photos": {
            "source": "fake",
            "dlib": dlib,
            "resolution": 512,
            "fit_steps": 80,
            "lpips": "not available offline",
            "rows": [
                {
                    "photo": "a.jpg",
                    "status": "ok",
                    "psnr": 25.0,
                    "ssim": 0.8,
                    "mask_px": 9,
                    "fit_psnr_before": 20.0,
                    "fit_psnr_after": 24.0,
                    "colour_shift": 0.8,
                    "colour_shift_skin_prior": 4.25,
                    **({"nme": 0.03, "identity": 0.4} if dlib else {}),
                },
                {"photo": "b.jpg", "status": "failed: NoFaceFoundError"},
            ],  # fmt: skip
        },
        "reflectance": {
            "faces": 2,
            "resolution": 64,
            "test": {k: metric for k in report.REFLECTANCE_LABELS},
            "ood": {k: metric for k in report.REFLECTANCE_LABELS},
        },
        "geometry": {
            "size": 256,
            "fit_steps": 80,
            "rows": [
                {
                    "pose": "0, 0, 0",
                    "init_rigid_mm": 1.0,
                    "rigid_mm": 0.5,
                    "similarity_mm": 0.4,
                    "psnr_before": 20.0,
                    "psnr_after": 30.0,
                }
            ],
        },  # fmt: skip
        "resolution_scale": [
            {
                "resolution": r,
                "repeats": 1,
                "stages_median_s": {"fit": 1.0, "render": 0.1},
                "total_median_s": 1.2,
                "export_median_s": 0.3,
                "peak_rss_increase_mb": r / 10,
            }
            for r in (512, 1024)
        ],  # fmt: skip
        "photo_scale": [
            {
                "photos": n,
                "resolution": 1024,
                "names": ["x.jpg"] * n,
                "stages_s": {"fit": float(n)},
                "total_s": n + 0.5,
                "peak_rss_increase_mb": 100.0,
            }
            for n in (1, 2)
        ],  # fmt: skip
    }


def test_results_writer_without_dlib(tmp_path):
    text = report.write_results(_fake_results(tmp_path, False), tmp_path / "R.md").read_text()
    assert "not run (needs --with-dlib)" in text
    assert text.count("Reproduce: `python -m bench --quick`") == 5
    assert "| a.jpg |" in text and "failed: NoFaceFoundError" in text
    assert "| 20.00 → 24.00 | 0.8 / 4.2 | 9 |" in text  # colour shift: default / skin prior
    assert "| 1024 | 1.00 | 0.10 | 1.20 | 0.30 | 102 |" in text
    assert "LPIPS: not available offline" in text and "- a note" in text
    assert "plots/" not in text  # no plot files were made


def test_results_writer_with_dlib_and_plots(tmp_path):
    results = _fake_results(tmp_path, True)
    plots = tmp_path / "plots"
    plots.mkdir()
    report.plot_resolution(results["resolution_scale"], plots / "resolution.png")
    report.plot_photo_scale(results["photo_scale"], plots / "photos_scale.png")
    report.plot_reflectance(results["reflectance"], plots / "reflectance.png")
    text = report.write_results(results, tmp_path / "R.md").read_text()
    assert "| a.jpg | 3.00 | 0.400 |" in text
    assert "NME ≤ 3.5 % → PASS; identity ≤ 0.5 → PASS" in text
    for name in ("resolution", "photos_scale", "reflectance"):
        assert f"(plots/{name}.png)" in text
        assert (plots / f"{name}.png").stat().st_size > 1000


def test_annotation_files_parse_into_our_pixel_convention():
    from bench.photos import parse_annotation

    xy = np.stack([np.arange(68) * 2.0 + 10, np.arange(68) + 100.0], 1)  # 0-based centres
    pts_text = "version: 1\nn_points:  68\n{\n"
    pts_text += "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in xy) + "}\n"  # 1-based
    ljson = {"groups": {"LJSON": {"landmarks": {"points": xy[:, ::-1].tolist()}}}}  # (y, x)
    for name, text in (("a.pts", pts_text), ("a.ljson", json.dumps(ljson))):
        assert np.allclose(parse_annotation(name, text), xy + 0.5)  # centres at +0.5
    with pytest.raises(ValueError, match="68 finite points"):
        parse_annotation("b.pts", "{\n1 2\n3 4\n}")


def test_results_writer_keeps_the_demo_load_section(tmp_path):
    path = tmp_path / "R.md"
    begin, end = report.KEPT_SECTIONS[0]
    path.write_text(f"# old\n\n{begin}\n## Demo under load\n\n| 8 users |\n{end}\n")
    text = report.write_results(_fake_results(tmp_path, False), path).read_text()
    assert "# old" not in text and "| a.jpg |" in text
    assert text.count("## Demo under load") == 1 and text.rstrip().endswith(end)
    # and again: still once
    text = report.write_results(_fake_results(tmp_path, False), path).read_text()
    assert text.count("## Demo under load") == 1


def test_annotated_section_reports_ours_and_dlib_against_people(tmp_path):
    results = _fake_results(tmp_path, True)
    regions = {k: 0.05 for k in ("jaw", "brows", "eyes", "all")}
    results["annotated"] = {
        "resolution": 512,
        "dlib": True,
        "rows": [
            {"photo": "lenna.png", "status": "ok", "iod_px": 80.0, "nme_regions": regions,
             "dlib_nme_regions": {**regions, "all": 0.03}, "ours_vs_dlib": 0.04},
            {"photo": "x.png", "status": "failed: NoFaceFoundError"},
        ],
    }  # fmt: skip
    text = report.write_results(results, tmp_path / "R.md").read_text()
    assert "## Landmarks against human annotations" in text
    assert (
        "| lenna.png | 80 | 5.00 | 5.00 | 5.00 | 5.00 | 3.00 | 5.00 | 5.00 | 5.00 | 4.00 |" in text
    )
    assert "| **mean of 1** | | 5.00 |" in text and "failed: NoFaceFoundError" in text


def test_region_errors_and_report_table():
    from bench.metrics import REGIONS, region_errors

    ref = _points()
    pred = ref.copy()
    pred[list(REGIONS["jaw"])] += (0.0, 4.0)  # jaw 4 px = 10 % of the inter-ocular distance
    errs = region_errors(pred, ref)
    assert errs["jaw"] == pytest.approx(0.1) and errs["eyes"] == 0.0
    assert errs["all"] == pytest.approx(nme(pred, ref))
    lines = report.nme_region_lines([{"photo": "a.png", "nme_regions": errs}])
    assert any(line.startswith("| a.png | 10.00 |") for line in lines)


def test_dlib_reference_picks_the_face_holding_our_points():
    from bench.dlib_metrics import DlibReference

    class Rect:  # dlib.rectangle's interface
        def __init__(self, left, top, right, bottom):
            self.box = (left, top, right, bottom)

        def left(self):
            return self.box[0]

        def top(self):
            return self.box[1]

        def right(self):
            return self.box[2]

        def bottom(self):
            return self.box[3]

    big, small = Rect(0, 0, 300, 300), Rect(400, 100, 460, 160)
    ref = DlibReference.__new__(DlibReference)  # no dlib needed: a stand-in detector
    ref.detector = lambda image, upsample: [big, small]
    image = np.zeros((320, 480, 3), np.uint8)
    ours = np.array([[420.0, 120.0], [440.0, 140.0], [430.0, 150.0]])  # in the small face
    assert ref.face_near(image, ours) is small  # not the largest detection
    assert ref.face_near(image, np.array([[470.0, 310.0]])) is None  # no detection holds it


def test_dlib_points_are_moved_into_our_pixel_convention():
    from types import SimpleNamespace

    from bench.dlib_metrics import DlibReference

    ref = DlibReference.__new__(DlibReference)
    parts = [SimpleNamespace(x=10 + i, y=20) for i in range(68)]  # dlib: centres at integers
    ref._shape = lambda image, rect: SimpleNamespace(parts=lambda: parts)
    pts = ref.landmarks(np.zeros((8, 8, 3), np.uint8), rect="face")
    np.testing.assert_array_equal(pts[0], [10.5, 20.5])  # ours: pixel (0, 0) centred at 0.5
    assert pts.shape == (68, 2)


def test_colour_shift_ignores_lightness_and_sees_a_cast():
    rng = np.random.default_rng(0)
    skin = np.clip(np.array([0.75, 0.58, 0.48]) + 0.03 * rng.standard_normal((32, 32, 3)), 0, 1)
    where = np.zeros((32, 32), bool)
    where[4:28, 4:28] = True
    skin_lab = lab(mean_linear(skin, where))
    assert 60 < skin_lab[0] < 80 and skin_lab[1] > 5 and skin_lab[2] > 10  # reddish, yellowish
    darker = linear_to_srgb(srgb_to_linear(skin) * 0.6)  # another exposure, the same colour
    assert colour_shift(darker, skin, where) < 0.05
    cast = linear_to_srgb(srgb_to_linear(skin) * [0.92, 1.0, 0.92])  # less red and blue
    assert colour_shift(cast, skin, where) > 3
    outside = skin.copy()
    outside[~where] = [0, 0, 1]  # texels outside `where` do not count
    assert colour_shift(outside, skin, where) == pytest.approx(0, abs=1e-9)


def test_results_writer_keeps_the_batch_section_written_by_its_bench(tmp_path):
    path = tmp_path / "R.md"
    markers = report.KEPT_SECTIONS[1]
    report.write_kept_section("## Batch throughput\n\n| 1 | 2 |", path, markers)
    report.write_kept_section("## Batch throughput\n\n| 3 | 4 |", path, markers)  # replaced
    text = report.write_results(_fake_results(tmp_path, False), path).read_text()
    assert (
        text.count("## Batch throughput") == 1 and "| 3 | 4 |" in text and "| 1 | 2 |" not in text
    )
    assert "| a.jpg |" in text and text.rstrip().endswith(markers[1])


def test_the_linear_oracle_recovers_a_height_that_is_a_filter_of_the_luminance():
    """`bench.normals_limits.wiener_height`: where the height is a directional derivative of
    the log-luminance (shading under a side light, inverted), the oracle finds it; where the
    two are independent, it finds next to nothing (the bound is meaningful both ways)."""
    import cv2

    from bench.normals_limits import wiener_height

    rng = np.random.default_rng(3)
    luma = cv2.GaussianBlur(rng.normal(size=(128, 128)), (0, 0), 2)
    height = np.roll(luma, 2, axis=1) - np.roll(luma, -2, axis=1)
    mask = np.zeros((128, 128), bool)
    mask[8:-8, 8:-8] = True
    found = wiener_height(luma, height, mask)
    assert np.corrcoef(found[mask], height[mask])[0, 1] > 0.9
    other = cv2.GaussianBlur(rng.normal(size=(128, 128)), (0, 0), 2)
    noise = wiener_height(luma, other, mask)
    assert abs(np.corrcoef(noise[mask], other[mask])[0, 1]) < 0.5


def test_fairness_intervals_cover_a_known_bias_and_show_the_noise_floor():
    from bench.bench_fairness import bootstrap_intervals, summarise

    rng = np.random.default_rng(1)
    # a method with no bias: every type's errors drawn from one distribution (s.d. 6 degrees)
    fair = rng.normal(0, 6, size=(6, 40))
    s = summarise(fair)
    lo, hi = s["intervals"]["mean"]
    assert lo < s["mean"] < hi and hi - lo < 1.5
    # with few faces, noise alone makes the largest-less-smallest type error look like a bias
    assert summarise(fair[:, :5])["bias"] > 2.0
    # one type 6 degrees worse: the interval of the bias holds it, and excludes zero
    biased = fair.copy()
    biased[5] = np.abs(biased[5]) + 6
    b_lo, b_hi = bootstrap_intervals(biased)["bias"]
    true_bias = 6 + np.abs(fair[5]).mean() - np.abs(fair[:5]).mean(1).min()
    assert b_lo < true_bias < b_hi and b_lo > 3
    # identical errors in every type: no bias, and no interval around it
    same = np.tile(rng.normal(0, 6, size=40), (6, 1))
    assert bootstrap_intervals(same)["mean"][1] - bootstrap_intervals(same)["mean"][0] > 0
    assert summarise(same)["bias"] == 0.0


def test_light_colours_refitted_to_their_sh_and_the_highlight_level_of_a_pair():
    """`lights_fitted_to_sh` recovers the colours of lights whose SH (plus an ambient term) it
    is given; under the true lights the highlights give a face's specular level."""
    from bench.specular_limits import highlight_levels, lights_fitted_to_sh
    from rendering.lights import DirectionalLight, sh_from_directional
    from rendering.sh import uniform_white
    from training.render_pairs import make_training_pair, seeds, uv_geometry

    up, side = np.array([0.0, 0.6, 0.8]), np.array([0.8, 0.0, 0.6])
    lights = [DirectionalLight(up, np.array([2.0, 1.5, 1.0])),
              DirectionalLight(side, np.array([0.3, 0.4, 0.5]))]  # fmt: skip
    sh = sh_from_directional(lights) + 0.2 * uniform_white()
    fitted = lights_fitted_to_sh([DirectionalLight(up, np.ones(3)),
                                  DirectionalLight(side, np.ones(3))], sh)  # fmt: skip
    for light, truth in zip(fitted, lights, strict=True):
        np.testing.assert_allclose(light.color, truth.color, atol=1e-6)

    pair = make_training_pair(seeds("test", 2)[1], resolution=128)
    truth = float(pair["specular_albedo"][pair["mask"][..., 0] > 0.5].mean())
    level = highlight_levels(pair, uv_geometry(128))["true_lights"]
    assert level == pytest.approx(truth, rel=0.3)
