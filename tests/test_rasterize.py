import numpy as np
import pytest
import torch

from rendering.camera import PinholeCamera
from rendering.rasterize import coverage_mask, interpolate, rasterize


def reference_rasterize(pos: np.ndarray, tri: np.ndarray, height: int, width: int):
    """Slow, obviously-correct rasterizer for one image: for every triangle and pixel centre, solve
    the 2D system for the screen-space barycentrics, then correct them for perspective with 1/w.

    Returns (ids, u, v, depth, ambiguous): `ids` is triangle_id + 1 (0 = empty), `ambiguous` marks
    pixels whose triangle legitimately depends on rounding (centre within 1e-6 of a triangle's edge
    in barycentric terms, or two fragments within 1e-6 in depth).
    """
    ids = np.zeros((height, width), np.int64)
    u = np.zeros((height, width))
    v = np.zeros((height, width))
    depth = np.full((height, width), np.inf)
    ambiguous = np.zeros((height, width), bool)
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    ndc_x = (jj + 0.5) / width * 2 - 1
    ndc_y = 1 - (ii + 0.5) / height * 2
    for f, (a, b, c) in enumerate(tri):
        w = pos[[a, b, c], 3]
        if np.any(w <= 0):
            continue
        x, y, z = (pos[[a, b, c], :3] / w[:, None]).T
        m = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
        if np.linalg.det(m) == 0:
            continue
        rhs = np.stack([ndc_x - x[0], ndc_y - y[0]], axis=-1)[..., None]
        l12 = (np.linalg.inv(m) @ rhs)[..., 0]
        bary = np.stack([1 - l12[..., 0] - l12[..., 1], l12[..., 0], l12[..., 1]], axis=-1)
        frag_depth = bary @ z
        inside = np.all(bary >= 0, axis=-1) & (frag_depth >= -1) & (frag_depth <= 1)
        ambiguous |= np.abs(bary).min(axis=-1) < 1e-6
        ambiguous |= inside & (np.abs(frag_depth - depth) < 1e-6)
        wins = inside & (frag_depth < depth)
        persp = bary / w
        persp /= persp.sum(axis=-1, keepdims=True)
        ids[wins] = f + 1
        u[wins], v[wins] = persp[wins, 0], persp[wins, 1]
        depth[wins] = frag_depth[wins]
    depth[ids == 0] = 0
    return ids, u, v, depth, ambiguous


def random_mesh(rng: np.random.Generator, n_tri: int = 25):
    """Random triangles in clip space, some sharing vertices, some partly outside the view or the
    depth range, with w in [0.5, 3]."""
    n_verts = 2 * n_tri
    w = rng.uniform(0.5, 3.0, n_verts)
    ndc = np.stack(
        [
            rng.uniform(-1.3, 1.3, n_verts),
            rng.uniform(-1.3, 1.3, n_verts),
            rng.uniform(-1.2, 1.2, n_verts),
        ],
        axis=-1,
    )
    pos = np.concatenate([ndc * w[:, None], w[:, None]], axis=1).astype(np.float32)
    tri = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_tri)])
    return pos, tri


def grid_mesh(n: int, lo: float = -1.0, hi: float = 1.0, w: float = 1.0):
    """An n x n grid of quads (two triangles each) over [lo, hi]^2 at NDC depth 0, plus each
    triangle's colour class: triangles of one class share no vertex (so cannot legitimately
    cover the same pixel)."""
    s = np.linspace(lo, hi, n + 1)
    x, y = np.meshgrid(s, s)
    pos = np.stack([x, y, np.zeros_like(x), np.ones_like(x)], -1).reshape(-1, 4) * w
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tri = np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )
    qi, qj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cls = ((qi % 3) * 3 + qj % 3).reshape(-1)
    return pos.astype(np.float32), tri, np.concatenate([cls, cls + 9])


def coverage_count(pos, tri, classes, resolution):
    """Per pixel, how many triangles cover it (each colour class rendered on its own)."""
    count = torch.zeros(resolution, dtype=torch.int64)
    for k in np.unique(classes):
        count += coverage_mask(rasterize(pos[None], tri[classes == k], resolution))[0]
    return count


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    height, width = 37, 29
    pos_a, tri = random_mesh(rng)
    pos_b, _ = random_mesh(rng)
    rast = rasterize(
        torch.from_numpy(np.stack([pos_a, pos_b])), torch.from_numpy(tri), (height, width)
    )
    assert rast.shape == (2, height, width, 4) and rast.dtype == torch.float32

    for b, pos in enumerate([pos_a, pos_b]):
        ids, u, v, depth, ambiguous = reference_rasterize(
            pos.astype(np.float64), tri, height, width
        )
        got = rast[b].numpy().astype(np.float64)
        assert ambiguous.mean() < 0.02
        assert (ids > 0).sum() > 100  # the test sees real coverage
        ok = ~ambiguous
        np.testing.assert_array_equal(got[..., 3][ok], ids[ok])
        same = ok & (ids > 0)
        np.testing.assert_allclose(got[..., 0][same], u[same], atol=1e-4)
        np.testing.assert_allclose(got[..., 1][same], v[same], atol=1e-4)
        np.testing.assert_allclose(got[..., 2][same], depth[same], atol=1e-4)
        assert np.all(got[got[..., 3] == 0] == 0)


@pytest.mark.parametrize("resolution", [(16, 16), (15, 17), (1, 1)])
@pytest.mark.parametrize("flip_second", [False, True])
def test_quad_covers_every_pixel_once(resolution, flip_second):
    # A square image puts pixel centres exactly on the diagonal shared by the two triangles.
    pos = np.array([[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]], np.float32)
    for tri in (np.array([[0, 1, 2], [0, 2, 3]]), np.array([[0, 1, 3], [1, 2, 3]])):
        if flip_second:  # the other winding: no backface culling, same tie-break
            tri = tri.copy()
            tri[1] = tri[1, ::-1]
        alone = [coverage_mask(rasterize(pos[None], tri[[k]], resolution))[0] for k in range(2)]
        assert torch.all(alone[0].int() + alone[1].int() == 1)
        ids = rasterize(pos[None], tri, resolution)[0, ..., 3]
        assert torch.all(ids == torch.where(alone[0], 1.0, 2.0))


def test_fine_grid_has_no_holes_and_no_double_coverage():
    pos, tri, classes = grid_mesh(50)
    assert torch.all(coverage_mask(rasterize(pos[None], tri, (256, 256))))
    assert torch.all(coverage_count(pos, tri, classes, (256, 256)) == 1)


@pytest.mark.parametrize("w", [1.0, 2.5])
def test_grid_with_vertices_on_pixel_centres(w):
    # Vertices every 4 pixels, exactly on pixel centres: every vertical, horizontal and diagonal
    # edge passes through pixel centres, and vertices coincide with them.
    size = 64
    n = 20
    lo = (0.5 - 8) * 2 / size - 1
    pos, tri, classes = grid_mesh(n, lo, lo + n * 4 * 2 / size, w)
    assert torch.all(coverage_count(pos, tri, classes, (size, size)) == 1)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_nearer_triangle_wins(order):
    near = [[-0.9, -0.9, -0.5, 1], [0.9, -0.9, -0.5, 1], [0.0, 0.9, -0.5, 1]]
    far = [[-0.9, 0.9, 0.5, 2], [1.8, 1.8, 1.0, 2], [1.8, -1.8, 1.0, 2]]  # z/w = 0.25, 0.5, 0.5
    clip_far = [[0.0, 0.0, 3.0, 2], [1.8, 0.0, 3.0, 2], [0.0, 1.8, 3.0, 2]]  # z/w = 1.5: clipped
    tris = [near, far]
    pos = np.array([tris[order[0]] + tris[order[1]] + clip_far], np.float32)
    tri = np.arange(9).reshape(3, 3)
    rast = rasterize(pos, tri, (32, 32))[0]
    near_id = order.index(0) + 1
    near_alone = coverage_mask(rasterize(pos, tri[[near_id - 1]], (32, 32)))[0]
    far_alone = coverage_mask(rasterize(pos, tri[[2 - near_id]], (32, 32)))[0]
    both = near_alone & far_alone
    assert both.sum() > 20
    assert torch.all(rast[..., 3][near_alone] == near_id)
    assert torch.all(rast[..., 3][far_alone & ~near_alone] == 3 - near_id)
    assert torch.allclose(rast[..., 2][near_alone], torch.tensor(-0.5))
    assert not torch.any(rast[..., 3] == 3)


def test_skips_triangles_behind_camera_and_degenerate():
    pos = np.array(
        [
            [
                [-1, -1, 0, 1],
                [1, -1, 0, 1],
                [0, 1, 0, -1],
                [-1, -1, 0, 1],
                [1, 1, 0, 1],
                [0, 0, 0, 1],
            ]
        ],
        np.float32,
    )
    tri = np.array([[0, 1, 2], [3, 4, 5]])  # w < 0 at vertex 2; 3, 4, 5 are collinear
    rast = rasterize(pos, tri, (16, 16))
    assert torch.all(rast == 0)


def test_perspective_correct_on_slanted_quad():
    cam = PinholeCamera.from_fov(48, 40, fov_degrees=50.0)
    # A plane strongly slanted in depth, in camera space (the camera looks down -z).
    corners = np.array([[-1.0, -0.8, -1.2], [1.0, -0.8, -4.0], [1.0, 0.8, -4.0], [-1.0, 0.8, -1.2]])
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    pos = torch.tensor(cam.camera_to_clip(corners)[None], dtype=torch.float32)
    rast = rasterize(pos, tri, (cam.height, cam.width))
    points = interpolate(torch.tensor(corners), rast, tri)[0]  # attribute linear in 3D: position
    mask = coverage_mask(rast)[0]
    assert mask.float().mean() > 0.3

    i, j = np.nonzero(mask.numpy())
    rays = cam.unproject(np.stack([j + 0.5, i + 0.5], axis=-1), np.ones(len(i)))
    normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
    t = (corners[0] @ normal) / (rays @ normal)
    truth = rays * t[:, None]
    np.testing.assert_allclose(points[mask].numpy(), truth, atol=1e-4)

    # Screen-space (affine) weights, b_k proportional to u_k * w_k, would be visibly wrong here,
    # so the test has teeth.
    u, v = rast[0][mask][:, 0].double(), rast[0][mask][:, 1].double()
    persp = torch.stack([u, v, 1 - u - v], dim=1)
    w = pos[0, :, 3].double()[torch.as_tensor(tri)[rast[0][mask][:, 3].long() - 1]]
    affine = persp * w
    affine = affine / affine.sum(dim=1, keepdim=True)
    affine_rast = rast.clone()
    affine_rast[0][mask] = torch.stack([affine[:, 0], affine[:, 1], u, u], 1).float()
    affine_rast[..., 3] = rast[..., 3]
    affine_points = interpolate(torch.tensor(corners), affine_rast, tri)[0]
    assert np.abs(affine_points[mask].numpy() - truth).max() > 0.05


def test_interpolate_gradcheck_and_batch():
    pos = np.array(
        [[[-0.9, -0.8, 0.1, 1], [0.8, -0.9, 0.2, 1.5], [0.2, 0.9, -0.3, 0.7], [0.9, 0.9, 0, 1]]],
        np.float32,
    )
    tri = torch.tensor([[0, 1, 2], [1, 3, 2]], dtype=torch.int32)
    rast = rasterize(pos, tri, (6, 5))
    assert 0 < coverage_mask(rast).sum() < 30
    attr = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, rast, tri), (attr,))

    rast2 = torch.cat([rast, rasterize(pos[:, [1, 0, 3, 2]], tri, (6, 5))])
    attr2 = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, rast2, tri), (attr2,))
    out = interpolate(attr2, rast2, tri)
    assert out.shape == (2, 6, 5, 3) and out.dtype == torch.float64
    for b in range(2):
        torch.testing.assert_close(out[b : b + 1], interpolate(attr2[b], rast2[b : b + 1], tri))
    assert torch.all(out[~coverage_mask(rast2)] == 0)


def test_interpolate_reproduces_vertex_values_and_constants():
    pos, tri, _ = grid_mesh(4)
    rast = rasterize(torch.from_numpy(pos)[None], tri, (20, 20))
    ones = interpolate(torch.ones(len(pos), 1), rast, tri)
    assert torch.allclose(ones, torch.ones_like(ones))
    xy = interpolate(torch.from_numpy(pos[:, :2]), rast, tri)[0]
    centres = (torch.arange(20) + 0.5) / 20 * 2 - 1
    torch.testing.assert_close(xy[..., 0], centres.expand(20, 20), atol=1e-5, rtol=0)
    torch.testing.assert_close(xy[..., 1], -centres[:, None].expand(20, 20), atol=1e-5, rtol=0)


def test_inputs_not_modified():
    rng = np.random.default_rng(7)
    pos_np, tri_np = random_mesh(rng)
    pos, tri = torch.from_numpy(pos_np.copy())[None], torch.from_numpy(tri_np.copy())
    pos_before, tri_before, pos_np_before = pos.clone(), tri.clone(), pos_np.copy()
    rast = rasterize(pos, tri, (20, 24))
    rasterize(pos_np[None], tri_np, (20, 24))
    attr = torch.randn(len(pos_np), 3)
    attr_before, rast_before = attr.clone(), rast.clone()
    interpolate(attr, rast, tri)
    assert torch.equal(pos, pos_before) and torch.equal(tri, tri_before)
    assert np.array_equal(pos_np, pos_np_before)
    assert torch.equal(attr, attr_before) and torch.equal(rast, rast_before)


def test_bad_inputs_raise():
    pos = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match="pos"):
        rasterize(pos[0], torch.tensor([[0, 1, 2]]), (4, 4))
    with pytest.raises(ValueError, match="tri"):
        rasterize(pos, torch.tensor([[0, 1, 3]]), (4, 4))
    with pytest.raises(ValueError, match="resolution"):
        rasterize(pos, torch.tensor([[0, 1, 2]]), (4, 0))
    with pytest.raises(ValueError, match="attr"):
        interpolate(torch.zeros(2, 3, 1), torch.zeros(1, 4, 4, 4), torch.tensor([[0, 1, 2]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_barycentric_interpolate_is_numpys_weighted_sum(dtype):
    """The compiled pass gives numpy's `w0 a0 + w1 a1 + (1 - w0 - w1) a2` bit for bit, in the
    attribute's precision, and refuses face ids outside the mesh."""
    from rendering.render import barycentric_interpolate

    rng = np.random.default_rng(0)
    attr = (rng.normal(size=(50, 4)) * 100).astype(dtype)
    faces = rng.integers(0, 50, size=(30, 3))
    face_ids = rng.integers(0, 30, size=1000)
    w = rng.random((1000, 2)).astype(np.float32) * 0.5
    tri = faces[face_ids]
    w0, w1 = w[:, 0:1], w[:, 1:2]
    expected = attr[tri[:, 0]] * w0
    expected = expected + attr[tri[:, 1]] * w1
    expected = (expected + attr[tri[:, 2]] * (1 - w0 - w1)).astype(np.float32)
    got = barycentric_interpolate(attr, faces, face_ids, w)
    assert got.dtype == np.float32 and got.shape == (1000, 4)
    assert np.array_equal(got, expected)
    with pytest.raises(IndexError, match="face ids"):
        barycentric_interpolate(attr, faces, np.array([30]), w[:1])
