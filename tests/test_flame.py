"""Bring your own FLAME, tested without FLAME: a synthetic model written in FLAME's own file
format (a Python 2 style protocol-2 pickle, the same keys and dtypes, chumpy `Ch` objects whose
state holds the array under 'x', a scipy CSC joint regressor under its old module path), on a
face-like mesh: the project's base face mesh (471 vertices) plus two UV-sphere eyeballs, with
FLAME's 5 joints (root, neck, jaw, left eye, right eye), random smooth shape (300), expression
(100) and pose-corrective (36) blend shapes.
"""

from __future__ import annotations

import copyreg
import io
import json
import os
import pickle
import struct
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modeling.face_model.flame import (
    FlameModelError,
    lbs,
    load_flame,
    rodrigues,
    save_flame,
    surface_points,
)
from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, NUM_LANDMARKS, load_topology
from modeling.reconstruction.flame_correspondence import closest_points_on_mesh
from modeling.reconstruction.flame_fit import fit_flame, flame_geometry
from rendering.camera import PinholeCamera
from scripts.convert_flame import (
    RestrictedUnpickler,
    UnsafePickleError,
    convert,
    load_pickle,
    read_uvs,
)
from scripts.convert_flame import main as convert_main

ROOT = Path(__file__).resolve().parents[1]
NUM_SHAPE, NUM_EXPR = 300, 100
EYE_RADIUS = 0.012
# FLAME's frame differs from the project's object space: origin near the head's centre and a
# small tilt, so the converter's alignment has something to find.
FRAME_TILT = 0.08  # radians about x
FRAME_OFFSET = np.array([0.0, 0.03, 0.09])


# --- writing a FLAME-format pickle ----------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: bytes and str as (SHORT_)BINSTRING, so numpy's array
    data and the dict keys read back with `encoding="latin1"` exactly as FLAME's file does."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _binstring(self, data: bytes, obj):
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._binstring(obj, obj)

    def save_str(self, obj):
        self._binstring(obj.encode("latin1"), obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _fake_class(module: str, name: str):
    """A class pickled as the global `module.name` (NEWOBJ, then BUILD with its state)."""

    def reduce_ex(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state

    return type(name, (), {"__module__": module, "__qualname__": name,
                           "__reduce_ex__": reduce_ex})  # fmt: skip


FakeCh = _fake_class("chumpy.ch", "Ch")
FakeCsc = _fake_class("scipy.sparse.csc", "csc_matrix")


def ch(array):
    obj = FakeCh()
    # chumpy's __getstate__: its __dict__ without the weak-reference caches; the value is 'x'
    obj.state = {"x": np.asarray(array), "_dirty_vars": set(), "_itr": None,
                 "_depends_on_deps": {}, "_make_dense": False, "_make_sparse": False}  # fmt: skip
    return obj


def csc(matrix):
    m = sp.csc_matrix(matrix)
    obj = FakeCsc()
    obj.state = {"_shape": m.shape, "data": m.data, "indices": m.indices.astype(np.int32),
                 "indptr": m.indptr.astype(np.int32), "maxprint": 50, "format": "csc"}  # fmt: skip
    return obj


@contextmanager
def _fake_modules():
    """`chumpy.ch` and `scipy.sparse.csc` resolvable to the fakes while pickling."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    chumpy = types.ModuleType("chumpy")
    sys.modules["chumpy"] = chumpy
    sys.modules["chumpy.ch"] = types.SimpleNamespace(Ch=FakeCh)
    sys.modules["scipy.sparse.csc"] = types.SimpleNamespace(csc_matrix=FakeCsc)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    with _fake_modules():
        _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


# --- the synthetic model ----------------------------------------------------------------------


def _uv_sphere(centre, radius, rings=6, segments=8, uv_box=(0.0, 0.0, 0.1, 0.1)):
    """Vertices `(2 + (rings - 1) segments, 3)`, faces, UVs with a seam (UV vertices
    `(rings + 1) (segments + 1)`) and UV faces; the front pole (+z) is the pupil."""
    verts = [centre + [0, 0, radius]]
    for r in range(1, rings):
        theta = np.pi * r / rings
        for s in range(segments):
            phi = 2 * np.pi * s / segments
            st = np.sin(theta)
            verts.append(centre + radius * np.array([st * np.cos(phi), st * np.sin(phi),
                                                     np.cos(theta)]))  # fmt: skip
    verts.append(centre - [0, 0, radius])
    n = len(verts)

    def vid(r, s):
        if r == 0:
            return 0
        if r == rings:
            return n - 1
        return 1 + (r - 1) * segments + s % segments

    def tid(r, s):
        return r * (segments + 1) + s

    faces, uv_faces = [], []
    for r in range(rings):
        for s in range(segments):
            quad = [(r, s), (r + 1, s), (r + 1, s + 1), (r, s + 1)]
            for tri in ((0, 1, 2), (0, 2, 3)):
                corners = [quad[i] for i in tri]
                ids = [vid(*c) for c in corners]
                if len(set(ids)) < 3:
                    continue
                faces.append(ids[::-1])  # outward
                uv_faces.append([tid(*c) for c in corners][::-1])
    u0, v0, u1, v1 = uv_box
    uvs = [[u0 + (u1 - u0) * s / segments, v1 - (v1 - v0) * r / rings]
           for r in range(rings + 1) for s in range(segments + 1)]  # fmt: skip
    return np.array(verts), np.array(faces), np.array(uvs), np.array(uv_faces)


def _smooth_fields(points, count, scale, rng, decay=10.0):
    """`(V, 3, count)` random smooth displacement fields (random Fourier features with a
    15 cm wavelength), component k of RMS about scale / (1 + k / decay)."""
    freqs = rng.normal(0, 2 * np.pi / 0.15, (24, 3))
    phase = rng.uniform(0, 2 * np.pi, 24)
    phi = np.cos(points @ freqs.T + phase)  # (V, 24)
    coef = rng.normal(0, 1, (count, 3, 24))
    fields = np.einsum("vf,kcf->vck", phi, coef)
    rms = np.sqrt((fields**2).mean(axis=(0, 1), keepdims=True))
    return fields / rms * (scale / (1 + np.arange(count) / decay))


def synthetic_flame(seed: int = 0, dense: bool = False) -> dict:
    """The synthetic model's arrays in FLAME's conventions (FLAME's frame), plus its UVs
    (`vt`, `ft`) and its landmark embedding (51 static iBUG points). `dense`: on the dense
    face (7,305 vertices, 14,464 triangles: FLAME's size, for timing) instead of the base."""
    rng = np.random.default_rng(seed)
    topo = load_topology()
    face = topo.frontal_shape.copy()
    base_faces = topo.base_faces.astype(np.int64)
    face_uvs = topo.base_uvs
    if dense:
        face = topo.lift(face[:NUM_LANDMARKS])
        base_faces, face_uvs = topo.dense_faces.astype(np.int64), topo.dense_uvs
    eyes = {}
    for side, corners, box in (("left", (362, 263), (0.55, 0.0, 0.95, 0.1)),
                               ("right", (33, 133), (0.05, 0.0, 0.45, 0.1))):  # fmt: skip
        centre = face[list(corners)].mean(0) + [0, 0, -0.011]
        eyes[side] = _uv_sphere(centre, EYE_RADIUS, uv_box=box)
    verts, faces, uvs, uv_faces = [face], [base_faces], [face_uvs], [base_faces]
    n, t = len(face), len(face_uvs)
    for side in ("left", "right"):
        v, f, uv, ft = eyes[side]
        verts.append(v), faces.append(f + n), uvs.append(uv), uv_faces.append(ft + t)
        n, t = n + len(v), t + len(uv)
    v_obj = np.concatenate(verts)
    num_v = len(v_obj)
    # FLAME's frame: object space tilted and shifted.
    c, s = np.cos(FRAME_TILT), np.sin(FRAME_TILT)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    v_template = (v_obj - FRAME_OFFSET) @ tilt.T
    n_face = len(face)
    left = np.arange(n_face, n_face + len(eyes["left"][0]))
    right = np.arange(left[-1] + 1, num_v)
    # joints: root, neck, jaw (from face vertices), eyes (their balls' means)
    y = v_obj[:n_face, 1]
    regressor = np.zeros((5, num_v))
    regressor[0, :n_face] = 1.0 / n_face
    lower = np.flatnonzero(y < np.median(y))
    regressor[1, lower] = 1.0 / len(lower)
    regressor[2, [234, 454]] = 0.5  # the jaw's hinge, level with the ears (face-oval ends)
    regressor[3, left] = 1.0 / len(left)
    regressor[4, right] = 1.0 / len(right)
    weights = np.zeros((num_v, 5))
    jaw = np.clip((face[13, 1] - 0.004 - y) / 0.02, 0, 1)  # from the lips' line downwards
    weights[:n_face, 2] = jaw
    weights[:n_face, 1] = 1 - jaw
    weights[left, 3] = 1.0
    weights[right, 4] = 1.0
    shapedirs = _smooth_fields(v_template, NUM_SHAPE, 0.004, rng)
    exprdirs = _smooth_fields(v_template, NUM_EXPR, 0.002, rng)
    exprdirs[n_face:] = 0  # expressions do not change the eyeballs
    for ball in (left, right):  # the eyeballs move rigidly with the shape
        shapedirs[ball] = shapedirs[ball].mean(0, keepdims=True)
    posedirs = _smooth_fields(v_template, 36, 0.0005, rng)
    static = np.array(IBUG68_FROM_MEDIAPIPE[17:])
    lmk_faces, lmk_bary = [], []
    for vertex in static:  # the face triangle around each landmark vertex, bary at the vertex
        f = int(np.flatnonzero((base_faces == vertex).any(1))[0])
        lmk_faces.append(f)
        lmk_bary.append((base_faces[f] == vertex).astype(np.float64))
    return {
        "v_template": v_template,
        "f": np.concatenate(faces).astype(np.uint32),
        "shapedirs": np.concatenate([shapedirs, exprdirs], -1),
        "posedirs": posedirs,
        "J_regressor": regressor,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "vt": np.concatenate(uvs),
        "ft": np.concatenate(uv_faces).astype(np.uint32),
        "lmk_faces_idx": np.array(lmk_faces),
        "lmk_bary": np.array(lmk_bary),
        "tilt": tilt,
    }


def write_synthetic_flame(folder: Path, seed: int = 0, dense: bool = False) -> dict:
    """`generic_model.pkl` (FLAME's keys and pickle structure), `head_template.obj` (v, vt,
    f v/vt) and `landmark_embedding.npy` (DECA's keys, a pickled dict) in `folder`."""
    m = synthetic_flame(seed, dense)
    model = {
        "f": m["f"],
        "J_regressor": csc(m["J_regressor"]),
        "kintree_table": m["kintree_table"],
        "J": ch(m["J_regressor"] @ m["v_template"]),
        "weights": ch(m["weights"]),
        "posedirs": m["posedirs"],
        "v_template": m["v_template"],
        "shapedirs": ch(m["shapedirs"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generic_model.pkl").write_bytes(py2_pickle(model))
    lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in m["v_template"]]
    lines += [f"vt {u:.8f} {v:.8f}" for u, v in m["vt"]]
    lines += [f"f {a + 1}/{d + 1} {b + 1}/{e + 1} {c + 1}/{g + 1}"
              for (a, b, c), (d, e, g) in zip(m["f"], m["ft"], strict=True)]  # fmt: skip
    (folder / "head_template.obj").write_text("\n".join(lines) + "\n")
    embedding = {
        "static_lmk_faces_idx": m["lmk_faces_idx"].astype(np.int64),
        "static_lmk_bary_coords": m["lmk_bary"],
        "dynamic_lmk_faces_idx": np.zeros((79, 17), np.int64),
        "dynamic_lmk_bary_coords": np.full((79, 17, 3), 1 / 3),
    }
    with open(folder / "landmark_embedding.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00")
        header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
        header = header + " " * (118 - len(header) - 1) + "\n"
        f.write(struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(py2_pickle(np.array(embedding, dtype=object)))
    return m


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    arrays = write_synthetic_flame(folder)
    return folder, arrays


@pytest.fixture(scope="module")
def converted(flame_files):
    folder, _ = flame_files
    out = folder / "flame.npz"
    convert(folder / "generic_model.pkl", out, folder / "head_template.obj",
            folder / "landmark_embedding.npy")  # fmt: skip
    return load_flame(out)


# --- the converter and the restricted unpickler ------------------------------------------


def test_the_synthetic_pickle_has_flames_structure(flame_files):
    import pickletools

    folder, _ = flame_files
    raw = (folder / "generic_model.pkl").read_bytes()
    globals_ = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert globals_ == {"chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "numpy dtype",
                        "numpy.core.multiarray _reconstruct", "numpy ndarray",
                        "__builtin__ set"}  # fmt: skip
    with pytest.raises(UnicodeDecodeError):  # Python 2 strings: only encoding="latin1" reads it
        pickle.loads(raw)  # noqa: S301 (our own file; the fakes are not importable now)


def test_the_converter_round_trips_the_model(flame_files, converted):
    _, m = flame_files
    model = converted
    np.testing.assert_array_equal(model.v_template, m["v_template"])
    np.testing.assert_array_equal(model.faces, m["f"].astype(np.int64))
    np.testing.assert_array_equal(model.shapedirs, m["shapedirs"][..., :NUM_SHAPE])
    np.testing.assert_array_equal(model.exprdirs, m["shapedirs"][..., NUM_SHAPE:])
    np.testing.assert_array_equal(model.posedirs, m["posedirs"])
    np.testing.assert_allclose(model.j_regressor, m["J_regressor"])
    np.testing.assert_array_equal(model.weights, m["weights"])
    np.testing.assert_array_equal(model.parents, [-1, 0, 1, 1, 1])
    np.testing.assert_allclose(model.uvs, m["vt"], atol=1e-8)
    np.testing.assert_array_equal(model.uv_faces, m["ft"].astype(np.int64))
    np.testing.assert_array_equal(model.landmark_faces, m["lmk_faces_idx"])
    np.testing.assert_array_equal(model.landmark_ibug, np.arange(17, 68))
    assert model.dynamic_landmark_faces.shape == (79, 17)
    assert model.mediapipe_faces.shape == (7305,) and model.mediapipe_bary.shape == (7305, 3)
    np.testing.assert_allclose(model.mediapipe_bary.sum(1), 1, atol=1e-9)
    assert model.v_template.dtype == np.float64 and model.faces.dtype == np.int64
    with np.load(model.source, allow_pickle=False) as data:  # nothing pickled in the output
        assert all(data[k].dtype != object for k in data.files)


def test_the_correspondence_finds_the_face_flame_was_made_from(flame_files, converted):
    """The synthetic template is the project's base face in a tilted, shifted frame: the
    correspondence must undo the frame and put each landmark on its own vertex."""
    _, m = flame_files
    model = converted
    topo = load_topology()
    # FLAME -> object transform: the inverse of the synthetic frame change (up to the fit)
    np.testing.assert_allclose(model.to_object_rotation, m["tilt"].T, atol=0.02)
    np.testing.assert_allclose(model.to_object_translation, FRAME_OFFSET, atol=0.003)
    obj = model.v_template @ model.to_object_rotation.T + model.to_object_translation
    points = surface_points(obj, model.faces[model.mediapipe_faces[:NUM_LANDMARKS]],
                            model.mediapipe_bary[:NUM_LANDMARKS])  # fmt: skip
    err = np.linalg.norm(points - topo.frontal_shape[:NUM_LANDMARKS], axis=1)
    assert np.median(err) < 0.001 and np.percentile(err, 95) < 0.003, err.max()
    assert (model.mediapipe_weight[:NUM_LANDMARKS] > 0.5).mean() > 0.95


def test_points_over_the_eye_openings_do_not_pull_on_the_eyeballs(converted):
    """Eyeballs pushed 6 mm forward, into the eye openings: the dense face's points there
    (the fans that close the openings) find them, but get no weight."""
    from modeling.reconstruction.flame_correspondence import build_mediapipe_correspondence

    ball = converted.weights[:, 3:].max(1) > 0.5
    forward = converted.v_template + ball[:, None] * [0.0, 0.0, 0.006]
    model = build_mediapipe_correspondence(converted.with_arrays(v_template=forward),
                                           load_topology(), rounds=2, steps=10)  # fmt: skip
    on_ball = ball[model.faces].all(1)[model.mediapipe_faces]
    assert on_ball.sum() > 10
    assert (model.mediapipe_weight[on_ball] == 0).all()


def test_the_cli_converts_and_reports(flame_files, converted, tmp_path, capsys):
    folder, _ = flame_files
    out = tmp_path / "model.npz"
    assert convert_main([str(folder / "generic_model.pkl"), str(out)]) == 0
    assert "UVs: no" in capsys.readouterr().out
    model = load_flame(out)
    assert not model.has_uvs and model.landmark_faces is None
    with pytest.raises(FlameModelError, match="no UV layout"):
        _ = model.layout

    # without the landmark embedding the alignment starts from the nose tips: each MediaPipe
    # landmark finds nearly the same point of FLAME's template as with it (the closest-point
    # fit slides a little along the surface: ~2 mm median here, vs < 1 mm with it)
    def landmarks_on_template(m):
        return surface_points(m.v_template, m.faces[m.mediapipe_faces[:NUM_LANDMARKS]],
                              m.mediapipe_bary[:NUM_LANDMARKS])  # fmt: skip

    apart = np.linalg.norm(landmarks_on_template(model) - landmarks_on_template(converted), axis=1)
    assert np.median(apart) < 0.0025 and np.percentile(apart, 95) < 0.005, apart.max()


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned_by_flame_pickle",)


def test_the_restricted_unpickler_refuses_a_malicious_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "generic_model.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _Exploit()}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refused global (posix|os|nt)\.system"):
        load_pickle(evil)
    assert convert_main([str(evil), str(tmp_path / "out.npz")]) == 1
    assert not (tmp_path / "pwned_by_flame_pickle").exists()
    assert not (tmp_path / "out.npz").exists()
    # a global smuggled through the allowed reconstructor is refused too
    smuggle = b"ccopy_reg\n_reconstructor\n(cnumpy\ndtype\nc__builtin__\nobject\nNtR."
    with pytest.raises(UnsafePickleError, match="refused reconstruction"):
        RestrictedUnpickler(io.BytesIO(smuggle)).load()


def test_missing_or_foreign_files_give_clear_errors(flame_files, tmp_path):
    folder, _ = flame_files
    with pytest.raises(FlameModelError, match="does not exist"):
        load_flame(tmp_path / "nowhere.npz")
    with pytest.raises(FlameModelError, match="is a pickle: convert"):
        load_flame(folder / "generic_model.pkl")
    not_flame = tmp_path / "other.npz"
    np.savez(not_flame, weights=np.zeros(3))
    with pytest.raises(FlameModelError, match="not a converted FLAME model"):
        load_flame(not_flame)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(FlameModelError, match="not a converted FLAME model"):
        load_flame(text)
    dict_pkl = tmp_path / "d.pkl"
    dict_pkl.write_bytes(pickle.dumps({"a": np.zeros(3)}, protocol=2))
    with pytest.raises(FlameModelError, match="not a FLAME model: no v_template"):
        convert(dict_pkl, tmp_path / "o.npz")
    with pytest.raises(FlameModelError, match="does not exist"):
        convert(tmp_path / "missing.pkl", tmp_path / "o.npz")


def test_uvs_read_from_obj_and_npz_agree(flame_files, tmp_path):
    folder, m = flame_files
    vt, ft = read_uvs(folder / "head_template.obj")
    np.savez(tmp_path / "texture.npz", vt=m["vt"], ft=m["ft"])
    vt2, ft2 = read_uvs(tmp_path / "texture.npz")
    np.testing.assert_allclose(vt, vt2, atol=1e-8)
    np.testing.assert_array_equal(ft, ft2)


def test_the_layout_knows_whether_mirroring_finds_mirror_texels(converted):
    """The maps' completion mirrors u about 0.5: FLAME's layout is checked for it (the
    synthetic one is symmetric; shifted by 0.05 in u it is not, and the pipeline warns)."""
    from pipelines.avatar_pipeline import _layout_warnings

    assert converted.layout.symmetric and converted.layout.mirror_error < 0.002
    assert _layout_warnings(converted.layout) == []
    shifted = converted.with_arrays(uvs=converted.uvs + [0.05, 0.0]).layout
    assert not shifted.symmetric and abs(shifted.mirror_error - 0.1) < 0.01
    assert "not left/right symmetric" in _layout_warnings(shifted)[0]


def test_a_uv_layout_of_another_mesh_is_refused(converted, tmp_path):
    with pytest.raises(FlameModelError, match="not this model's layout"):
        converted.with_arrays(uv_faces=converted.uv_faces[:-1])
    wrong = converted.uv_faces.copy()
    wrong[0] = wrong[1]  # the same UV corners on another triangle's vertices
    with pytest.raises(FlameModelError, match="two different model vertices"):
        converted.with_arrays(uv_faces=wrong)


# --- LBS ----------------------------------------------------------------------------------------


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def test_zero_pose_is_the_template_plus_blend_shapes(converted):
    model = converted
    tensors = model.tensors(dtype=torch.float64)
    rng = np.random.default_rng(1)
    shape, expr = rng.normal(0, 1, (2, 20)), rng.normal(0, 1, (2, 10))
    verts, joints = lbs(tensors, _t(shape), _t(expr), torch.zeros(2, 5, 3, dtype=torch.float64))
    expected = (model.v_template + np.einsum("bl,vcl->bvc", shape, model.shapedirs[..., :20])
                + np.einsum("bl,vcl->bvc", expr, model.exprdirs[..., :10]))  # fmt: skip
    np.testing.assert_allclose(verts.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(joints.numpy(), model.j_regressor @ expected, atol=1e-12)


def test_a_global_rotation_rotates_about_the_root_joint(converted):
    model = converted
    tensors = model.tensors(dtype=torch.float64)
    pose = torch.zeros(1, 5, 3, dtype=torch.float64)
    pose[0, 0] = _t([0.1, -0.3, 0.2])
    none = torch.zeros(1, 0, dtype=torch.float64)
    verts, _ = lbs(tensors, none, none, pose, _t([[0.01, 0.02, 0.03]]))
    rot = rodrigues(pose[0, 0]).numpy()
    root = model.joint_template[0]
    expected = (model.v_template - root) @ rot.T + root + [0.01, 0.02, 0.03]
    np.testing.assert_allclose(verts[0].numpy(), expected, atol=1e-12)


def test_a_jaw_rotation_moves_only_jaw_weighted_vertices(converted):
    model = converted
    tensors = model.tensors(dtype=torch.float64)
    zeros = torch.zeros(1, 0, dtype=torch.float64)
    rest, _ = lbs(tensors, zeros, zeros, torch.zeros(1, 5, 3, dtype=torch.float64))
    pose = torch.zeros(1, 5, 3, dtype=torch.float64)
    pose[0, 2, 0] = 0.3  # open the jaw
    posed, joints = lbs(tensors, zeros, zeros, pose)
    moved = (posed - rest)[0].norm(dim=-1).numpy()
    # the pose correctives move every vertex a little (0.5 mm scale): skinning moves the jaw
    jaw = model.weights[:, 2]
    assert moved[jaw == 0].max() < 0.002
    assert np.median(moved[jaw > 0.9]) > 0.005
    np.testing.assert_allclose(joints[0, :2].numpy(), model.joint_template[:2], atol=1e-12)
    # without the pose correctives, exactly the jaw-weighted vertices move
    plain = type(tensors)(**{**tensors.__dict__, "posedirs": torch.zeros_like(tensors.posedirs)})
    rest0, _ = lbs(plain, zeros, zeros, torch.zeros(1, 5, 3, dtype=torch.float64))
    posed0, _ = lbs(plain, zeros, zeros, pose)
    moved0 = (posed0 - rest0)[0].norm(dim=-1).numpy()
    assert moved0[jaw == 0].max() < 1e-12 and moved0[jaw > 0.5].min() > 1e-4


def test_lbs_gradients_are_correct(converted):
    tensors = converted.tensors(dtype=torch.float64)
    rng = np.random.default_rng(2)
    shape = _t(rng.normal(0, 1, (1, 3))).requires_grad_()
    expr = _t(rng.normal(0, 1, (1, 2))).requires_grad_()
    pose = _t(rng.normal(0, 0.2, (1, 5, 3))).requires_grad_()
    target = _t(rng.normal(0, 1, (len(converted.v_template), 3)))

    def f(shape, expr, pose):
        verts, joints = lbs(tensors, shape, expr, pose)
        return (verts[0] * target).sum() + joints.sum()

    assert torch.autograd.gradcheck(f, (shape, expr, pose), eps=1e-6, atol=1e-5)


# --- fitting ----------------------------------------------------------------------------------


def _known_parameters(model, seed=3):
    rng = np.random.default_rng(seed)
    truth = {
        "shape": rng.normal(0, 1, 10),
        "expression": rng.normal(0, 1, 5),
        "pose": np.zeros((5, 3)),
        "translation": np.array([0.002, -0.001, 0.003]),
    }
    truth["pose"][0] = [0.05, 0.1, -0.03]
    truth["pose"][2] = [0.12, 0.0, 0.0]  # mouth open
    truth["pose"][3] = truth["pose"][4] = [0.0, 0.15, 0.0]  # looking to the side
    tensors = model.tensors(dtype=torch.float64)
    verts, _ = lbs(tensors, _t(truth["shape"][None]), _t(truth["expression"][None]),
                   _t(truth["pose"][None]), _t(truth["translation"][None]))  # fmt: skip
    return truth, verts[0].numpy()


def _camera(yaw: float) -> PinholeCamera:
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    cam = PinholeCamera.from_fov(512, 512, 40.0)
    return PinholeCamera(cam.fx, cam.fy, cam.cx, cam.cy, 512, 512, rot, np.array([0, 0, -0.5]))


def test_the_fit_recovers_known_parameters_from_the_face_and_projected_landmarks(converted):
    """A FLAME head with known parameters stands in for the project's fitted face: the dense
    face is its surface at the correspondence, the landmarks and irises its projections in
    two photos. The fit must find the parameters again."""
    model = converted
    truth, verts_flame = _known_parameters(model)
    obj = verts_flame @ model.to_object_rotation.T + model.to_object_translation
    face = surface_points(obj, model.faces[model.mediapipe_faces], model.mediapipe_bary)
    cams = [_camera(-0.3), _camera(0.25)]
    landmarks = [c.project(c.object_to_camera(face[:NUM_LANDMARKS])) for c in cams]
    iris = []
    for c in cams:
        px = c.project(c.object_to_camera(obj[model.pupils[::-1]]))  # right eye first
        iris.append(np.repeat(px, 5, axis=0))  # centres (rims unused)
    params = fit_flame(model, face, cams, landmarks, iris, num_shape=10, num_expression=5)
    vert_err = np.linalg.norm(params.vertices - verts_flame, axis=1)
    assert vert_err.mean() < 1e-4, vert_err.mean()  # metres
    assert np.abs(params.shape - truth["shape"]).max() < 0.02
    assert np.abs(params.expression - truth["expression"]).max() < 0.02
    assert np.abs(params.global_pose - truth["pose"][0]).max() < 0.005
    assert np.abs(params.neck_pose).max() < 0.005
    assert np.abs(params.jaw_pose - truth["pose"][2]).max() < 0.01
    # a pupil is a point: the eyes' pitch and yaw are found, their roll is not observable
    eyes = params.eye_pose.reshape(2, 3)[:, :2]
    assert np.abs(eyes - truth["pose"][3:, :2]).max() < 0.01
    np.testing.assert_allclose(params.translation, truth["translation"], atol=2e-4)
    assert max(params.landmark_residual) < 5e-4  # of the face's size
    assert params.surface_residual_mm < 0.05
    # the exported FLAME-frame camera projects FLAME's own vertices onto the photo
    cam = params.camera_for_flame(cams[1])
    np.testing.assert_allclose(
        cam.project(cam.object_to_camera(params.vertices[model.pupils].astype(np.float64))),
        iris[1][[5, 0]], atol=1.0)  # fmt: skip


def test_flame_geometry_follows_the_layouts_seams(converted):
    model = converted
    truth, verts_flame = _known_parameters(model)
    layout = model.layout
    assert layout.num_dense > model.num_vertices  # the eyeballs' seams split vertices
    params = fit_flame(model, surface_points(
        verts_flame @ model.to_object_rotation.T + model.to_object_translation,
        model.faces[model.mediapipe_faces], model.mediapipe_bary),
        [_camera(0.0)], [np.zeros((468, 2))], weights={"landmarks": 0.0},
        max_iterations=5)  # fmt: skip
    geo = flame_geometry(params, _camera(0.0), layout)
    assert geo.vertices_object.shape == (layout.num_dense, 3)
    same = layout.split_source
    np.testing.assert_allclose(geo.vertices_object, params.vertices_object()[same])
    np.testing.assert_allclose(np.linalg.norm(geo.normals_object, axis=1), 1, atol=1e-6)


def test_closest_points_on_a_mesh_are_exact_on_a_plane():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    pts = np.array([[0.2, 0.1, 0.5], [0.9, 0.8, -1.0], [2.0, 0.5, 0.0], [-1, -1, 0.3]])
    tri, bary = closest_points_on_mesh(pts, verts, faces)
    closest = surface_points(verts, faces[tri], bary)
    np.testing.assert_allclose(closest, [[0.2, 0.1, 0], [0.9, 0.8, 0], [1, 0.5, 0], [0, 0, 0]],
                               atol=1e-12)  # fmt: skip


def test_flame_params_files_hold_the_parameters(converted, tmp_path):
    model = converted
    truth, verts_flame = _known_parameters(model)
    face = surface_points(verts_flame @ model.to_object_rotation.T + model.to_object_translation,
                          model.faces[model.mediapipe_faces], model.mediapipe_bary)  # fmt: skip
    params = fit_flame(model, face, [_camera(0.0)], [np.zeros((468, 2))],
                       weights={"landmarks": 0.0}, max_iterations=5)  # fmt: skip
    paths = params.save(tmp_path, [_camera(0.0)])
    doc = json.loads(paths["flame_json"].read_text())
    with np.load(paths["flame_npz"], allow_pickle=False) as data:
        for key in ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose",
                    "translation", "camera_rotation", "camera_intrinsics"):  # fmt: skip
            np.testing.assert_allclose(data[key], np.array(doc[key]))
        assert data["eye_pose"].shape == (6,) and data["camera_rotation"].shape == (1, 3, 3)


def test_save_flame_round_trips(converted, tmp_path):
    path = save_flame(converted, tmp_path / "again.model")
    again = load_flame(path)
    for key, value in converted.arrays().items():
        np.testing.assert_array_equal(getattr(again, key), value)


# --- the pipeline, the CLI -------------------------------------------------------------------


def test_the_pipeline_refuses_flame_without_a_usable_model(converted, flame_files, tmp_path):
    from pipelines import AvatarPipeline

    with pytest.raises(FlameModelError, match="needs flame_model_path"):
        AvatarPipeline(head_model="flame")
    with pytest.raises(FlameModelError, match="does not exist"):
        AvatarPipeline(head_model="flame", flame_model_path=tmp_path / "none.npz")
    with pytest.raises(FlameModelError, match="is a pickle: convert"):
        AvatarPipeline(head_model="flame", flame_model_path=flame_files[0] / "generic_model.pkl")
    no_uvs = save_flame(converted.with_arrays(), tmp_path / "no_uvs.npz")
    arrays = dict(np.load(no_uvs))
    del arrays["uvs"], arrays["uv_faces"]
    np.savez(no_uvs, **arrays)
    with pytest.raises(FlameModelError, match="no UV layout"):
        AvatarPipeline(head_model="flame", flame_model_path=no_uvs)
    with pytest.raises(ValueError, match="head_model must be one of"):
        AvatarPipeline(head_model="smpl")
    pipe = AvatarPipeline(head_model="flame", flame_model_path=converted.source)
    assert pipe.flame is not None
    assert "flame" not in json.dumps(dict(pipe.config), default=str).lower()  # never saved
    with pytest.raises(ValueError, match="head=False"):
        pipe(ROOT / "examples" / "astronaut.jpg", head=False)


def test_a_saved_flame_pipeline_holds_nothing_of_flame(converted, tmp_path):
    """FLAME's licence: `save_pretrained` (and so `push_to_hub`) neither copies nor names it."""
    from pipelines import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained(
        ROOT / "weights_config", head_model="flame", flame_model_path=converted.source
    )
    pipe.save_pretrained(tmp_path / "saved")
    files = [p for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    assert files and not any(b"flame" in p.read_bytes().lower() for p in files
                             if p.suffix in (".json", ".md"))  # fmt: skip
    assert not any(p.suffix == ".npz" for p in files)
    assert AvatarPipeline.from_pretrained(tmp_path / "saved").flame is None


def test_the_cli_checks_the_flame_option_before_loading(tmp_path, capsys):
    from pipelines.cli import main

    photo = str(ROOT / "examples" / "astronaut.jpg")
    out = str(tmp_path / "out")
    assert main([photo, "-o", out, "--flame-model", str(tmp_path / "none.npz")]) == 2
    assert "--flame-model: no file at" in capsys.readouterr().err
    (tmp_path / "m.npz").write_bytes(b"")
    assert main([photo, "-o", out, "--flame-model", str(tmp_path / "m.npz"), "--face-only"]) == 2
    assert "FLAME is a whole head" in capsys.readouterr().err
    assert main([photo, "-o", out, "--flame-model", str(tmp_path / "m.npz")]) == 2
    assert "not a converted FLAME model" in capsys.readouterr().err


@pytest.mark.slow
def test_several_photos_give_one_flame_head_without_the_photometric_fit(converted):
    from pipelines import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained(
        ROOT / "weights_config", head_model="flame", flame_model_path=converted.source
    )
    photos = [ROOT / "examples" / f for f in ("relit_sunny.jpg", "relit_turned_30.jpg")]
    out = pipe(photos, resolution=128, num_fit_steps=0)
    assert out.fit is None and len(out.views) == 2 and len(out.flame.landmark_residual) == 2
    assert max(out.flame.landmark_residual) < 0.03  # of the landmark box diagonal
    for view in out.views:  # one FLAME head, seen by each photo's camera
        face = converted.faces[converted.mediapipe_faces[:NUM_LANDMARKS]]
        points = surface_points(out.flame.vertices_object(), face,
                                converted.mediapipe_bary[:NUM_LANDMARKS])  # fmt: skip
        px = view.camera.project(view.camera.object_to_camera(points))
        size = np.linalg.norm(view.landmarks.box[2:] - view.landmarks.box[:2])
        assert np.linalg.norm(px - view.landmarks.points[:, :2], axis=1).mean() < 0.03 * size


@pytest.fixture(scope="module")
def flame_run(converted, tmp_path_factory):
    """The pipeline on FLAME, once: (output, the paths `save_outputs` wrote)."""
    from pipelines import AvatarPipeline
    from pipelines.outputs import save_outputs

    pipe = AvatarPipeline.from_pretrained(
        ROOT / "weights_config", head_model="flame", flame_model_path=converted.source
    )
    out = pipe(ROOT / "examples" / "astronaut.jpg", resolution=128, num_fit_steps=3)
    return out, save_outputs(out, tmp_path_factory.mktemp("flame_out"))


@pytest.mark.slow
def test_the_pipeline_builds_a_flame_head_from_a_photo(converted, flame_run):
    """End to end on the synthetic FLAME: maps in FLAME's layout, FLAME's mesh in the GLB and
    OBJ, its parameters in flame_params.npz/.json; FLAME's landmarks on the photo's."""
    from modeling.reconstruction.texture import skin_mask, uv_atlas

    out, paths = flame_run
    layout = converted.layout
    assert out.head is None and out.flame is not None
    assert out.mesh.vertices.shape == (layout.num_dense, 3)
    np.testing.assert_array_equal(out.mesh.faces, layout.dense_faces)
    np.testing.assert_allclose(out.mesh.uvs, layout.dense_uvs, atol=1e-6)
    for key in ("texture", "diffuse_albedo", "specular_albedo", "diffuse_normals",
                "specular_normals", "shape_normals"):  # fmt: skip
        assert out.maps[key].shape[:2] == (128, 128) and np.isfinite(out.maps[key]).all()
    # the photo's face lands in FLAME's UV layout: seen texels are on FLAME's face chart
    seen = out.maps["visibility"][..., 0] > 0.5
    assert seen.sum() > 0.2 * skin_mask(128, layout).sum()
    assert not (seen & ~uv_atlas(128, layout).chart).any()
    # FLAME follows the face: its MediaPipe points project onto the detected landmarks
    face = converted.faces[converted.mediapipe_faces[:NUM_LANDMARKS]]
    points = surface_points(out.flame.vertices_object(), face,
                            converted.mediapipe_bary[:NUM_LANDMARKS])  # fmt: skip
    cam = out.camera
    px = cam.project(cam.object_to_camera(points))
    size = np.linalg.norm(out.landmarks.box[2:] - out.landmarks.box[:2])
    assert np.linalg.norm(px - out.landmarks.points[:, :2], axis=1).mean() < 0.02 * size
    assert paths["glb"].stat().st_size > 0 and (paths["obj"].parent / "face.obj").exists()
    doc = json.loads(paths["flame_json"].read_text())
    assert len(doc["shape"]) == 100 and len(doc["expression"]) == 50
    assert len(doc["eye_pose"]) == 6
    # the exported FLAME-frame camera projects FLAME's vertices where the output mesh projects
    flame_cam = out.flame.camera_for_flame(out.camera)
    with np.load(paths["flame_npz"]) as data:
        np.testing.assert_allclose(data["camera_rotation"][0], flame_cam.rotation)
    mesh_px = cam.project(cam.object_to_camera(out.flame.vertices_object()))
    flame_px = flame_cam.project(flame_cam.object_to_camera(out.flame.vertices.astype(float)))
    np.testing.assert_allclose(flame_px, mesh_px, atol=1e-3)


@pytest.mark.slow
def test_the_flame_glb_passes_the_khronos_validator(flame_run, require_node_tools):
    from test_gltf_validator import assert_valid

    require_node_tools(("gltf-validator", "mikktspace"), "the glTF reference tools are")
    assert_valid(flame_run[1]["glb"])


@pytest.mark.slow
def test_the_cli_builds_a_flame_head(converted, tmp_path, capsys):
    from pipelines.cli import main

    photo = str(ROOT / "examples" / "astronaut.jpg")
    args = [photo, "-o", str(tmp_path), "--flame-model", converted.source, "--resolution", "128",
            "--fit-steps", "2", "-q"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "FLAME parameters:" in printed
    (params,) = tmp_path.rglob("flame_params.json")
    assert len(json.loads(params.read_text())["jaw_pose"]) == 3
    assert (params.parent / "face.glb").is_file()


def test_the_demo_uses_flame_only_when_the_server_configures_it(converted, monkeypatch):
    app = pytest.importorskip("app")

    monkeypatch.setattr(app, "FLAME_MODEL", None)
    app._load_pipeline.cache_clear()
    try:
        assert app._load_pipeline().flame is None
        app._load_pipeline.cache_clear()
        monkeypatch.setattr(app, "FLAME_MODEL", converted.source)
        assert app._load_pipeline().flame is not None
    finally:
        app._load_pipeline.cache_clear()  # the other tests load the default pipeline again


@pytest.mark.slow
def test_a_batch_builds_flame_heads(converted, tmp_path):
    """`python -m pipelines.batch --flame-model`: each avatar on FLAME, with its parameters."""
    import shutil
    import subprocess
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ROOT / "examples" / "astronaut.jpg", photos)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.batch", "--input", str(photos), "--output",
               str(out), "--flame-model", str(converted.source), "--resolution", "128",
               "--fit-steps", "2", "-q"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (line,) = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "done"
    (params,) = out.rglob("flame_params.json")
    assert len(json.loads(params.read_text())["expression"]) == 50
    wrong = subprocess.run([*command, "--face-only"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert wrong.returncode == 2 and "FLAME is a whole head" in wrong.stderr
