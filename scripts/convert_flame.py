"""Convert a user's FLAME model once into the plain `.npz` the pipeline loads.

    python -m scripts.convert_flame generic_model.pkl flame.npz \\
        --uvs head_template.obj --landmarks landmark_embedding.npy

FLAME's `generic_model.pkl` (2020 and 2023 releases) is a Python 2 pickle that references
chumpy, and unpickling runs whatever the file names. It is read here with a restricted
unpickler (`RestrictedUnpickler`): the only globals it resolves are numpy's array
reconstruction, dtype and scalar (and `_codecs.encode` for latin1, how Python 3 writes bytes
at protocol 2), scipy's CSC/CSR sparse matrices, chumpy's `Ch` (mapped to a stand-in that
keeps only the array, the state's `x`) and the set in that state; any other global refuses
the file with `UnsafePickleError` naming it, before anything in the file is called. The landmark
embedding (`landmark_embedding.npy`, a pickled dict, or FLAME_PyTorch's
`flame_static_embedding.pkl`) is read the same way; the UV layout from `head_template.obj`
(`vt`/`f` lines) or FLAME's texture-space `.npz` (`vt`, `ft`; read with `allow_pickle=False`).

The converter then builds the MediaPipe correspondence once, in seconds
(`modeling.reconstruction.flame_correspondence.build_mediapipe_correspondence`), and writes
everything with `modeling.face_model.flame.save_flame`. Nothing of FLAME is ever shipped with
the project: the `.npz` stays with the user, under FLAME's licence.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from modeling.face_model.flame import FlameModel, FlameModelError, flame_from_arrays, save_flame

# MediaPipe-free iBUG numbering of FLAME's embeddings: the static one has 51 points (17..67),
# the full one 68.
_STATIC_IBUG = np.arange(17, 68)


class UnsafePickleError(FlameModelError):
    """A pickle names a global the restricted unpickler does not allow."""


class ChArray:
    """Stand-in for chumpy's `Ch`: keeps the array its pickled state holds under `x`."""

    def __init__(self, *args):
        self.x = np.asarray(args[0]) if args else None

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict state, slots state)
            state = state[0] or {}
        if not isinstance(state, dict) or "x" not in state:
            raise FlameModelError("a chumpy object without an array ('x') in its state")
        self.x = state["x"]

    def array(self) -> np.ndarray:
        return np.asarray(plain(self.x))


class _SparseState:
    """Stand-in for a pickled scipy CSC/CSR matrix: keeps its state, rebuilt by `matrix`."""

    kind = "csc"

    def __init__(self, *args):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else state[0]

    def matrix(self):
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        build = sp.csc_matrix if self.kind == "csc" else sp.csr_matrix
        data = [np.asarray(s[k]) for k in ("data", "indices", "indptr")]
        return build(tuple(data), shape=tuple(int(n) for n in shape))


class CscState(_SparseState):
    kind = "csc"


class CsrState(_SparseState):
    kind = "csr"


def _safe_reconstructor(cls, base, state):
    """Python 2's `copy_reg._reconstructor` (protocols 0 and 1), for the stand-ins only."""
    if cls not in (ChArray, CscState, CsrState) or base is not object:
        raise UnsafePickleError(f"refused reconstruction of {cls!r} from {base!r}")
    return cls()


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2 (`latin1` only)."""
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own, whatever its module
_SCALAR = np.float64(0).__reduce__()[0]
ALLOWED = {
    **{(m, "_reconstruct"): _RECONSTRUCT for m in ("numpy.core.multiarray",
                                                     "numpy._core.multiarray")},
    **{(m, "scalar"): _SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("chumpy.ch", "Ch"): ChArray,
    ("scipy.sparse.csc", "csc_matrix"): CscState,
    ("scipy.sparse._csc", "csc_matrix"): CscState,
    ("scipy.sparse.csr", "csr_matrix"): CsrState,
    ("scipy.sparse._csr", "csr_matrix"): CsrState,
    ("_codecs", "encode"): _latin1_bytes,
    ("copy_reg", "_reconstructor"): _safe_reconstructor,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    # chumpy's pickled state holds a set (`_dirty_vars`) beside the array
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
}  # fmt: skip


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals in `ALLOWED`."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global {module}.{name}: a FLAME file holds only numpy arrays, scipy "
                "sparse matrices and chumpy arrays, so this file is not one (nothing in it ran)"
            ) from None


def plain(value):
    """Stand-ins replaced by numpy / scipy objects, through dicts, lists and object arrays."""
    if isinstance(value, ChArray):
        return value.array()
    if isinstance(value, _SparseState):
        return value.matrix()
    if isinstance(value, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): plain(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        if value.ndim == 0:
            return plain(value[()])
        return np.array([plain(v) for v in value.ravel()], dtype=object).reshape(value.shape)
    return value


def load_pickle(data: bytes | Path | str):
    """Unpickle bytes or a file with `RestrictedUnpickler` (`encoding="latin1"`: FLAME's files
    were written by Python 2), stand-ins replaced (`plain`)."""
    raw = Path(data).read_bytes() if isinstance(data, Path | str) else data
    try:
        loaded = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as err:  # a truncated or foreign file: say so, in one line
        raise FlameModelError(f"not a readable pickle ({type(err).__name__}: {err})") from err
    return plain(loaded)


def load_npy(path: Path):
    """A `.npy` file; an object array (a pickled dict, as FLAME's landmark embedding) through
    `RestrictedUnpickler`, never numpy's own unpickling."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if read_header is None:
            raise FlameModelError(f"{path}: unsupported .npy version {version}")
        shape, fortran, dtype = read_header(f)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        return load_pickle(f.read())


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x)


def flame_arrays_from_pickle(raw: dict, num_shape: int = 300) -> dict[str, np.ndarray]:
    """The converted model's arrays from an unpickled `generic_model.pkl` dict (FLAME's keys:
    v_template, f, shapedirs (shape then expression directions), posedirs, J_regressor,
    kintree_table, weights; others such as J, bs_style, bs_type are not needed)."""
    if not isinstance(raw, dict):
        raise FlameModelError(f"a FLAME pickle holds a dict, this one a {type(raw).__name__}")
    need = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
    missing = [k for k in need if k not in raw]
    if missing:
        raise FlameModelError(f"not a FLAME model: no {', '.join(missing)} in the pickle")
    dirs = _dense(raw["shapedirs"]).astype(np.float64)
    if dirs.ndim != 3 or dirs.shape[-1] <= num_shape:
        raise FlameModelError(
            f"shapedirs has shape {dirs.shape}: FLAME's hold {num_shape} shape then the "
            "expression directions (pass --num-shape for another split)"
        )
    parents = _dense(raw["kintree_table"])[0].astype(np.int64)
    parents[parents > len(parents)] = -1  # the root's parent: 2**32 - 1 in SMPL-family files
    parents[0] = -1
    return {
        "v_template": _dense(raw["v_template"]).astype(np.float64),
        "faces": _dense(raw["f"]).astype(np.int64),
        "shapedirs": dirs[..., :num_shape],
        "exprdirs": dirs[..., num_shape:],
        "posedirs": _dense(raw["posedirs"]).astype(np.float64),
        "j_regressor": _dense(raw["J_regressor"]).astype(np.float64),
        "parents": parents,
        "weights": _dense(raw["weights"]).astype(np.float64),
    }


def read_uvs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`(vt (T, 2), ft (F, 3))` from FLAME's `head_template.obj` or texture-space `.npz`."""
    path = Path(path)
    if not path.is_file():
        raise FlameModelError(f"no UV file at {path}")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "vt" not in data.files or "ft" not in data.files:
                raise FlameModelError(f"{path} has no vt/ft arrays (FLAME's texture space)")
            return data["vt"].astype(np.float64), data["ft"].astype(np.int64)
    vt, ft = [], []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "vt":
            vt.append([float(parts[1]), float(parts[2])])
        elif parts[0] == "f":
            corners = [p.split("/") for p in parts[1:]]
            if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                raise FlameModelError(f"{path}: faces must be triangles with UVs (v/vt)")
            ft.append([int(c[1]) - 1 for c in corners])
    if not vt or not ft:
        raise FlameModelError(f"{path} has no texture coordinates (vt) or faces")
    return np.array(vt), np.array(ft, np.int64)


def read_landmark_embedding(path: Path) -> dict[str, np.ndarray]:
    """FLAME's landmark embedding -> `landmark_faces`, `landmark_bary`, `landmark_ibug` (and
    the dynamic contour where the file has one). Reads DECA's `landmark_embedding.npy`
    (static_lmk_faces_idx, static_lmk_bary_coords, dynamic_lmk_*, full_lmk_*) and
    FLAME_PyTorch's `flame_static_embedding.pkl` (lmk_face_idx, lmk_b_coords)."""
    path = Path(path)
    if not path.is_file():
        raise FlameModelError(f"no landmark embedding at {path}")
    raw = load_npy(path) if path.suffix.lower() == ".npy" else load_pickle(path)
    if not isinstance(raw, dict):
        raise FlameModelError(f"{path}: a landmark embedding is a dict, this is a {type(raw)}")
    out = {}
    for faces, bary in (("full_lmk_faces_idx", "full_lmk_bary_coords"),
                        ("static_lmk_faces_idx", "static_lmk_bary_coords"),
                        ("lmk_face_idx", "lmk_b_coords")):  # fmt: skip
        if faces in raw and bary in raw:
            f = np.asarray(raw[faces]).reshape(-1).astype(np.int64)
            b = np.asarray(raw[bary], np.float64).reshape(-1, 3)
            out["landmark_faces"], out["landmark_bary"] = f, b
            out["landmark_ibug"] = np.arange(68) if len(f) == 68 else _STATIC_IBUG[: len(f)]
            if len(f) not in (51, 68):
                raise FlameModelError(f"{path}: {len(f)} landmarks; FLAME's have 51 or 68")
            break
    else:
        raise FlameModelError(f"{path}: no landmark faces/barycentric coordinates in it")
    if "dynamic_lmk_faces_idx" in raw and "dynamic_lmk_bary_coords" in raw:
        out["dynamic_landmark_faces"] = np.asarray(raw["dynamic_lmk_faces_idx"], np.int64)
        out["dynamic_landmark_bary"] = np.asarray(raw["dynamic_lmk_bary_coords"], np.float64)
    return out


def convert(
    pkl: Path | str,
    out: Path | str,
    uvs: Path | str | None = None,
    landmarks: Path | str | None = None,
    num_shape: int = 300,
    correspondence: bool = True,
) -> FlameModel:
    """Read FLAME's pickle (and the optional UV layout and landmark embedding), build the
    MediaPipe correspondence, write the `.npz`; returns the converted model."""
    from modeling.face_model.topology import load_topology
    from modeling.reconstruction.flame_correspondence import build_mediapipe_correspondence

    pkl = Path(pkl)
    if not pkl.is_file():
        raise FlameModelError(f"no FLAME model at {pkl} (the path does not exist)")
    arrays = flame_arrays_from_pickle(load_pickle(pkl), num_shape)
    if uvs is not None:
        arrays["uvs"], arrays["uv_faces"] = read_uvs(Path(uvs))
    if landmarks is not None:
        arrays.update(read_landmark_embedding(Path(landmarks)))
    model = flame_from_arrays(arrays, str(pkl))
    if correspondence:
        model = build_mediapipe_correspondence(model, load_topology())
    save_flame(model, out)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.convert_flame",
        description="Convert FLAME's generic_model.pkl (safely) into the .npz the pipeline "
        "loads (--flame-model).",
    )
    parser.add_argument("pkl", type=Path, help="FLAME's generic_model.pkl")
    parser.add_argument("out", type=Path, help="the converted model to write (.npz)")
    parser.add_argument("--uvs", type=Path, help="head_template.obj or FLAME's texture .npz")
    parser.add_argument("--landmarks", type=Path, help="landmark_embedding.npy / .pkl")
    parser.add_argument(
        "--num-shape", type=int, default=300,
        help="shape components before the expression ones (FLAME: 300)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        model = convert(args.pkl, args.out, args.uvs, args.landmarks, args.num_shape)
    except FlameModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    weight = model.mediapipe_weight
    print(
        f"wrote {args.out}: {model.num_vertices} vertices, {len(model.faces)} triangles, "
        f"{model.num_shape} shape + {model.num_expression} expression components, "
        f"UVs: {'yes' if model.has_uvs else 'no (no maps: --uvs)'}, landmark embedding: "
        f"{'yes' if model.landmark_faces is not None else 'no'}, MediaPipe correspondence: "
        f"{int((weight > 0.5).sum())} of {len(weight)} dense face points on FLAME's surface"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
