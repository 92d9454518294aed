import numpy as np
import pytest
import torch

from modeling.face_model.topology import load_topology
from rendering.antialias import antialias, antialias_construct_topology_hash
from rendering.camera import uv_to_clip
from rendering.differentiable import (
    barycentrics,
    interpolate,
    interpolate_covered,
    rasterize_any,
    texture,
)
from rendering.rasterize import coverage_mask, rasterize
from rendering.rasterize import interpolate as interpolate_fixed


def random_mesh(rng: np.random.Generator, n_tri: int = 25):
    """Random clip-space triangles (as in test_rasterize): shared vertices, some partly outside
    the view or the depth range, w in [0.5, 3]."""
    n_verts = 2 * n_tri
    w = rng.uniform(0.5, 3.0, n_verts)
    ndc = rng.uniform([-1.3, -1.3, -1.2], [1.3, 1.3, 1.2], (n_verts, 3))
    pos = np.concatenate([ndc * w[:, None], w[:, None]], axis=1).astype(np.float32)
    tri = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_tri)])
    return pos, tri


def clip_from_pixels(pixels, size: int, w=None, z=None) -> torch.Tensor:
    """Pixel coordinates `(V, 2)` (top-left origin) of a `size` x `size` image -> `[1, V, 4]`
    float64 clip positions with the given w (1 by default) and NDC depth z (0 by default)."""
    pixels = np.asarray(pixels, np.float64)
    n = len(pixels)
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    z = np.zeros(n) if z is None else np.asarray(z, np.float64)
    ndc = np.stack([pixels[:, 0] / size * 2 - 1, 1 - pixels[:, 1] / size * 2, z], axis=1)
    return torch.tensor(np.concatenate([ndc * w[:, None], w[:, None]], axis=1)[None])


# A tiny scene for gradcheck, 8 x 8 pixels, vertices well away from pixel centres: a fan of two
# triangles sharing an interior edge, and a third, nearer triangle partly in front of them.
TINY_PIXELS = [[0.8, 1.2], [6.7, 0.6], [7.3, 6.9], [1.1, 7.2], [3.3, 2.2], [7.6, 3.3], [4.3, 7.7]]
TINY_W = [1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0]
TINY_Z = [0.1, 0.2, 0.3, 0.2, -0.5, -0.4, -0.45]
TINY_TRI = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]], dtype=torch.int32)


def tiny_scene():
    pos = clip_from_pixels(TINY_PIXELS, 8, TINY_W, TINY_Z)
    rast = rasterize(pos, TINY_TRI, (8, 8))
    ids = rast[0, ..., 3]
    assert set(ids.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    return pos, rast


@pytest.mark.parametrize("seed", range(4))
def test_barycentrics_match_rasterizer(seed):
    rng = np.random.default_rng(seed)
    pos_a, tri = random_mesh(rng)
    pos_b, _ = random_mesh(rng)
    pos = torch.from_numpy(np.stack([pos_a, pos_b]))
    rast = rasterize(pos, tri, (37, 29))
    bary = barycentrics(pos, tri, rast)
    assert bary.shape == (2, 37, 29, 3) and bary.dtype == torch.float32
    covered = coverage_mask(rast)
    assert covered.sum() > 500
    expected = torch.stack([rast[..., 0], rast[..., 1], 1 - rast[..., 0] - rast[..., 1]], -1)
    torch.testing.assert_close(bary[covered], expected[covered], atol=1e-5, rtol=0)
    assert torch.all(bary[~covered] == 0)
    # A batch of one position set broadcasts over the images.
    torch.testing.assert_close(
        barycentrics(pos[:1], tri, rast[:1].expand(2, -1, -1, -1))[1], bary[0]
    )


def test_interpolate_with_pos_matches_fixed_weights():
    rng = np.random.default_rng(5)
    pos_np, tri = random_mesh(rng)
    pos = torch.from_numpy(pos_np)[None]
    rast = rasterize(pos, tri, (24, 20))
    attr = torch.randn(len(pos_np), 3)
    torch.testing.assert_close(
        interpolate(attr, rast, tri, pos=pos), interpolate_fixed(attr, rast, tri), atol=1e-5, rtol=0
    )
    assert torch.equal(interpolate(attr, rast, tri), interpolate_fixed(attr, rast, tri))
    attr_b = torch.randn(2, len(pos_np), 2)
    rast_b = torch.cat([rast, rast])
    out = interpolate(attr_b, rast_b, tri, pos=pos)
    torch.testing.assert_close(out[1:], interpolate_fixed(attr_b[1], rast, tri), atol=1e-5, rtol=0)


def test_interpolate_covered_is_the_full_image_at_its_covered_pixels():
    rng = np.random.default_rng(6)
    pos_np, tri = random_mesh(rng)
    pos = torch.from_numpy(pos_np)[None]
    rast = torch.cat([rasterize(pos, tri, (24, 20))] * 2)
    attr = torch.randn(2, len(pos_np), 3, dtype=torch.float64)
    pix, values = interpolate_covered(attr, rast, tri, pos)
    full = interpolate(attr, rast, tri, pos=pos).reshape(-1, 3)
    covered = coverage_mask(rast).reshape(-1)
    assert torch.equal(pix, torch.nonzero(covered).squeeze(1))
    assert torch.equal(values, full[pix]) and not full[~covered].any()


def test_interpolate_gradcheck_pos_and_attr():
    pos, rast = tiny_scene()
    attr = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    pos = pos.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, p: interpolate(a, rast, TINY_TRI, pos=p), (attr, pos))
    # The weights of a moved vertex really change (so the test has teeth).
    grad = torch.autograd.grad(interpolate(attr, rast, TINY_TRI, pos=pos).sum(), pos)[0]
    assert grad[0, :, :2].abs().sum() > 0.1


def test_texture_orientation_and_clamp():
    tex = torch.arange(12.0).reshape(3, 4, 1)  # row 0 is the top of the map: v close to 1
    i, j = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    uv = torch.stack([(j + 0.5) / 4, 1 - (i + 0.5) / 3], -1)[None]
    for mode in ("bilinear", "nearest"):
        torch.testing.assert_close(texture(tex, uv, filter_mode=mode)[0], tex)
    corners = torch.tensor([[[[-0.5, 2.0], [3.0, -1.0], [0.25, 1 - 0.5 / 3]]]])
    # Top-left, bottom-right, halfway between the centres of texels (0, 0) and (0, 1).
    torch.testing.assert_close(texture(tex, corners)[0, 0, :, 0], torch.tensor([0.0, 11.0, 0.5]))
    with pytest.raises(ValueError, match="filter_mode"):
        texture(tex, uv, filter_mode="cubic")


def test_texture_gradcheck():
    gen = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 4, 5, 2, dtype=torch.float64, generator=gen).requires_grad_(True)
    uv = (0.05 + 0.9 * torch.rand(2, 3, 3, 2, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(texture, (tex, uv))


def test_antialias_gradcheck_pos_and_color():
    pos, rast = tiny_scene()
    gen = torch.Generator().manual_seed(1)
    color = torch.rand(1, 8, 8, 3, dtype=torch.float64, generator=gen).requires_grad_(True)
    pos = pos.clone().requires_grad_(True)
    out = antialias(color, rast, pos, TINY_TRI)
    assert not torch.equal(out, color)  # the silhouettes blend
    assert torch.autograd.gradcheck(lambda c, p: antialias(c, rast, p, TINY_TRI), (color, pos))
    grad = torch.autograd.grad(out.sum(), pos)[0]
    assert grad[0, :, :2].abs().sum() > 0.1


def test_antialias_batch_matches_single_images():
    pos_a, rast_a = tiny_scene()
    pos_b = pos_a[:, [1, 2, 0, 3, 5, 6, 4]].clone()  # another scene: permuted and mirrored
    pos_b[..., 0] = -pos_b[..., 0]
    rast_b = rasterize(pos_b, TINY_TRI, (8, 8))
    color = torch.rand(2, 8, 8, 3, dtype=torch.float64)
    batched = antialias(color, torch.cat([rast_a, rast_b]), torch.cat([pos_a, pos_b]), TINY_TRI)
    torch.testing.assert_close(batched[:1], antialias(color[:1], rast_a, pos_a, TINY_TRI))
    torch.testing.assert_close(batched[1:], antialias(color[1:], rast_b, pos_b, TINY_TRI))
    assert not torch.equal(batched, color)


def test_antialias_leaves_interior_edges_alone():
    # A quad of two same-facing triangles over the whole image: no silhouette inside it, so only
    # the outer border could blend and it lies outside the image.
    pos = clip_from_pixels([[-1, -1], [9, -1], [9, 9], [-1, 9]], 8)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = rasterize(pos, tri, (8, 8))
    color = torch.rand(1, 8, 8, 3, dtype=torch.float64)
    torch.testing.assert_close(antialias(color, rast, pos, tri), color, rtol=0, atol=0)
    # Folded over its diagonal, the shared edge becomes a silhouette and blends.
    folded = pos.clone()
    folded[0, 3, :2] = pos[0, 1, :2] * 0.9
    rast = rasterize(folded, tri, (8, 8))
    assert not torch.equal(antialias(color, rast, folded, tri), color)


def triangle_images(pixels, size):
    pos = clip_from_pixels(pixels, size).requires_grad_(True)
    tri = torch.tensor([[0, 1, 2]])
    rast = rasterize(pos, tri, (size, size))
    white = coverage_mask(rast)[..., None].double()
    return pos, tri, white, antialias(white, rast, pos, tri)


def shoelace(p) -> float:
    p = np.asarray(p, np.float64)
    return 0.5 * abs(np.cross(p[1] - p[0], p[2] - p[0]))


def well_shaped_triangles(rng, size, count, min_angle=25.0):
    out = []
    while len(out) < count:
        p = rng.uniform(0.05 * size, 0.95 * size, (3, 2))
        edges = [p[(k + 1) % 3] - p[k] for k in range(3)]
        cosines = [
            -(edges[k] @ edges[k - 1]) / np.linalg.norm(edges[k]) / np.linalg.norm(edges[k - 1])
            for k in range(3)
        ]
        if np.degrees(np.arccos(np.max(cosines))) >= min_angle:
            out.append(p)
    return out


def test_antialias_brightness_approximates_area():
    # White triangle on black: the aliased image counts pixel centres, the antialiased one adds
    # the analytic coverage along the silhouette, exact except near the vertices (the tips beyond
    # the last pixel centres are lost, so it is biased low by ~0.3 px per triangle). Measured at
    # 128 x 128 over 60 triangles with angles >= 25 degrees, for seeds 0..5: mean |sum - area|
    # 1.9 to 3.4 px aliased, 0.31 to 0.40 px antialiased, ratio 0.10 to 0.18 (0.15 for seed 0).
    rng = np.random.default_rng(0)
    aliased_err, aa_err = [], []
    for pixels in well_shaped_triangles(rng, 128, 60):
        _, _, white, aa = triangle_images(pixels, 128)
        area = shoelace(pixels)
        aliased_err.append(abs(white.sum().item() - area))
        aa_err.append(abs(aa.sum().item() - area))
    assert np.mean(aa_err) < 0.25 * np.mean(aliased_err)
    assert np.mean(aa_err) < 0.5


def test_antialias_per_pixel_coverage():
    # Against 16 x 16 supersampled coverage, pixel by pixel (measured: L1 34.8 aliased, 3.6
    # antialiased).
    pixels = np.array([[20.3, 6.1], [57.2, 40.7], [9.6, 51.4]])
    _, _, white, aa = triangle_images(pixels, 64)
    _, _, fine, _ = triangle_images(pixels * 16, 64 * 16)
    coverage = fine.detach()[0, ..., 0].reshape(64, 16, 64, 16).mean(dim=(1, 3))
    aliased_l1 = (white[0, ..., 0] - coverage).abs().sum()
    aa_l1 = (aa.detach()[0, ..., 0] - coverage).abs().sum()
    assert aa_l1 < 0.25 * aliased_l1


def test_antialias_silhouette_gradient_matches_finite_differences():
    pixels = np.array([[20.3, 6.1], [57.2, 40.7], [9.6, 51.4]])
    size = 64
    pos, tri, white, aa = triangle_images(pixels, size)
    (grad,) = torch.autograd.grad(aa.sum(), pos)
    # Move vertex 1 outward, away from the opposite edge's midpoint.
    direction = pixels[1] - 0.5 * (pixels[0] + pixels[2])
    direction /= np.linalg.norm(direction)
    d_clip = torch.zeros_like(pos)
    d_clip[0, 1, 0] = direction[0] * 2 / size
    d_clip[0, 1, 1] = -direction[1] * 2 / size  # pixel y points down, NDC y up
    predicted = (grad * d_clip).sum().item()  # d brightness / d (one pixel of motion)

    def brightness(step):
        p = (pos + step * d_clip).detach()
        rast = rasterize(p, tri, (size, size))
        return antialias(coverage_mask(rast)[..., None].double(), rast, p, tri).sum().item()

    # Measured: predicted 23.03, finite differences 23.03 (h = 0.1 px), 23.03 (0.4), 23.26 (1.0),
    # exact area change 23.25 per pixel.
    h = 0.4
    finite = (brightness(h) - brightness(-h)) / (2 * h)
    # The area is linear in one vertex's position.
    analytic = shoelace(pixels + np.array([[0, 0], direction, [0, 0]])) - shoelace(pixels)
    assert predicted > 0 and finite > 0
    assert abs(predicted - finite) < 0.05 * finite
    assert abs(predicted - analytic) < 0.05 * analytic


def test_antialias_does_not_modify_inputs_and_caches_topology():
    pos, rast = tiny_scene()
    color = torch.rand(1, 8, 8, 3, dtype=torch.float64)
    before = [t.clone() for t in (pos, rast, color, TINY_TRI)]
    out = antialias(color, rast, pos, TINY_TRI)
    for t, b in zip((pos, rast, color, TINY_TRI), before, strict=True):
        assert torch.equal(t, b)
    assert out.data_ptr() != color.data_ptr()
    hashed = antialias_construct_topology_hash(TINY_TRI)
    assert antialias_construct_topology_hash(TINY_TRI.numpy().copy()) is hashed
    torch.testing.assert_close(antialias(color, rast, pos, TINY_TRI, topology_hash=hashed), out)
    # Triangles 0 and 1 share the edge (0, 2): opposite vertex of each across it is the other's.
    assert hashed.opposite[0, 1] == 3 and hashed.opposite[1, 2] == 1
    assert torch.all(hashed.opposite[2] == -1)


def test_uv_space_round_trip():
    # Rasterizing in UV space and sampling a UV map at the interpolated UVs gives the map back.
    topology = load_topology()
    uvs = torch.tensor(topology.dense_uvs, dtype=torch.float32)
    faces = torch.tensor(topology.dense_faces)
    pos = uv_to_clip(uvs)[None]
    rast = rasterize_any(pos, faces, (128, 128))
    covered = coverage_mask(rast)[0]
    assert covered.float().mean() > 0.3
    uv_map = torch.rand(128, 128, 3, generator=torch.Generator().manual_seed(0))
    for uv in (interpolate(uvs, rast, faces), interpolate(uvs, rast, faces, pos=pos)):
        sampled = texture(uv_map, uv)[0]
        assert (sampled - uv_map)[covered].abs().max() < 1e-3


def test_rasterize_any_on_cpu_is_rasterize():
    rng = np.random.default_rng(9)
    pos_np, tri = random_mesh(rng)
    pos = torch.from_numpy(pos_np)[None]
    assert torch.equal(rasterize_any(pos, tri, (16, 12)), rasterize(pos, tri, (16, 12)))
