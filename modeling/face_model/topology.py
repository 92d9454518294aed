"""Our face topology: MediaPipe's 468 landmarks as a mesh, a UV layout, symmetry, a dense mesh.

The data file `assets/topology.npz` is generated once by `scripts/build_topology.py` (see its
docstring for how each part is derived). Vertex sets:

- *landmark* vertices: MediaPipe face-mesh points 0..467;
- *base* vertices: the 468 landmarks + 3 centre vertices closing the eye and mouth holes (471);
- *dense* vertices: the base mesh after two levels of Loop subdivision (7,305). Dense vertex `i`
  for `i < 471` sits exactly on base vertex `i`, so `dense[:468]` are the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ASSET = Path(__file__).resolve().parent / "assets" / "topology.npz"
NUM_LANDMARKS = 468


@dataclass(frozen=True, eq=False)  # hashed by identity (used as a cache key)
class Topology:
    """The face topology (all arrays read-only numpy).

    Attributes:
        landmark_faces (`(852, 3)` int32): MediaPipe's triangulation (open at eyes and mouth).
        base_faces (`(904, 3)` int32): closed base mesh over 471 vertices, CCW seen from outside.
        base_uvs (`(471, 2)` float64): UVs of the base vertices.
        base_symmetry (`(471,)` int32): mirror partner of each base vertex.
        frontal_shape (`(471, 3)` float64): mean symmetric frontal shape, metres, object space.
        dense_faces (`(14464, 3)` int32), dense_uvs (`(7305, 2)`), dense_symmetry (`(7305,)`).
        dense_from_landmarks (`(7305, 468)` float32): linear operator: dense vertex positions
            from landmark positions (interpolating Loop subdivision).
        skin_exclusion (`list` of int arrays): base-vertex loops around eyes, brows, lips.
    """

    landmark_faces: np.ndarray
    base_faces: np.ndarray
    base_uvs: np.ndarray
    base_symmetry: np.ndarray
    frontal_shape: np.ndarray
    dense_faces: np.ndarray
    dense_uvs: np.ndarray
    dense_symmetry: np.ndarray
    dense_from_landmarks: np.ndarray
    skin_exclusion: tuple[np.ndarray, ...]

    @property
    def num_dense(self) -> int:
        return len(self.dense_uvs)

    def lift(self, landmarks: np.ndarray | torch.Tensor):
        """Dense mesh vertices from landmark positions.

        Args:
            landmarks (`(468, C)` numpy array or `(..., 468, C)` torch tensor): any per-landmark
                attribute (positions, usually).
        Returns:
            `(7305, C)` (or `(..., 7305, C)`) of the same kind; rows 0..467 equal the input.
        """
        if isinstance(landmarks, torch.Tensor):
            op = torch.as_tensor(
                self.dense_from_landmarks, dtype=landmarks.dtype, device=landmarks.device
            )
            return op @ landmarks
        return self.dense_from_landmarks.astype(np.float64) @ landmarks


def _interpolating_operator(data) -> np.ndarray:
    """`S @ inv(S[:B]) @ C`: Loop subdivision made interpolating, so that dense vertex i < B
    lands exactly on base vertex i (Loop alone would shrink the surface off the landmarks)."""
    n_base = len(data["base_uvs"])
    subdiv = sp.csr_matrix(
        (data["subdiv_vals"], (data["subdiv_rows"], data["subdiv_cols"])),
        shape=tuple(data["subdiv_shape"]),
    )
    closing = sp.csr_matrix(
        (data["closing_vals"], (data["closing_rows"], data["closing_cols"])),
        shape=(n_base, NUM_LANDMARKS),
    )
    inv_limit = np.linalg.inv(subdiv[:n_base].toarray())
    return np.asarray(subdiv @ (inv_limit @ closing.toarray()), dtype=np.float32)


@lru_cache(maxsize=1)
def load_topology(path: str | Path = ASSET) -> Topology:
    """Load (once per process) the topology asset."""
    with np.load(path) as data:
        offsets = data["skin_exclusion_offsets"]
        loops = data["skin_exclusion_vertices"]
        arrays = {
            k: data[k]
            for k in (
                "landmark_faces",
                "base_faces",
                "base_uvs",
                "base_symmetry",
                "frontal_shape",
                "dense_faces",
                "dense_uvs",
                "dense_symmetry",
            )
        }
        arrays["dense_from_landmarks"] = _interpolating_operator(data)
    for a in arrays.values():
        a.setflags(write=False)
    skin = tuple(loops[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))
    return Topology(**arrays, skin_exclusion=skin)


# MediaPipe face-mesh index of each of the 68 iBUG / dlib / 300-W landmarks (0-16 jaw from the
# subject's right to left, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 lips). The list widely
# published with MediaPipe face-mesh code, e.g. ByteDance's LatentSync (Apache-2.0, its
# `landmark_points_68` of the face-mesh utilities) and many face-mesh projects on GitHub, except
# the brows' outer ends (17, 26): 70 and 300, the outer ends of MediaPipe's upper brow contours
# (70-63-105-66-107), not the list's 71 and 301, which lie off the brow, on the temple. The jaw
# entries are face-oval vertices, not silhouette points: `bench.landmarks68` places the jaw
# on the projected mesh's outline instead.
IBUG68_FROM_MEDIAPIPE = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    70, 63, 105, 66, 107,  # right brow (17-21)
    336, 296, 334, 293, 300,  # left brow (22-26)
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge (27-30), nostrils (31-35)
    33, 160, 158, 133, 153, 144,  # right eye (36-41)
    362, 385, 387, 263, 373, 380,  # left eye (42-47)
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips (48-59)
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips (60-67)
)  # fmt: skip
