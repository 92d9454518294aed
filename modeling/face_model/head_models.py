"""Which head the pipeline builds: the bundled open head (default) or a user's FLAME.

Both give the pipeline the same things: a mesh with faces and UVs that the map stages take
where they take a `Topology` (`dense_faces`, `dense_uvs`, `base_uvs`, `skin_exclusion`:
`HeadModel` and `FlameLayout`), the landmark correspondence (the bundled head contains the
dense face, whose first 468 vertices are MediaPipe's landmarks; FLAME's points under them are
`FlameModel.mediapipe_faces` / `mediapipe_bary`), and eye and jaw joints (the bundled head's
eyeballs are placed behind the eye openings and aimed by the irises, its jaw opens through the
ARKit `jawOpen` action; FLAME's are its joints 2..4, posed by `lbs`).

They differ in what drives them: the bundled head follows the fitted dense face
(`head_mesh(face_vertices)`), FLAME has its own parameters (shape, expression, pose ->
vertices: `modeling.face_model.flame.lbs`), fitted to that face
(`modeling.reconstruction.flame_fit.fit_flame`).
"""

from __future__ import annotations

from pathlib import Path

from modeling.face_model.flame import FlameModel, FlameModelError, load_flame

HEAD_MODELS = ("bundled", "flame")


def load_head_choice(head_model: str = "bundled",
                     flame_model_path: str | Path | None = None) -> FlameModel | None:  # fmt: skip
    """Check the head-model choice and load FLAME where it is chosen.

    Args:
        head_model (`str`): "bundled" (the open head shipped with the project) or "flame".
        flame_model_path (`str` or `Path`, *optional*): with "flame", the user's model as
            converted by `python -m scripts.convert_flame` (with its UV layout).
    Returns:
        the `FlameModel` (its UV layout checked), or `None` for the bundled head.
    Raises:
        `ValueError` for an unknown choice or a path without "flame"; `FlameModelError` (a
        `ValueError`) when the FLAME file is missing, unconverted, not FLAME or has no UVs.
    """
    if head_model not in HEAD_MODELS:
        raise ValueError(f"head_model must be one of {HEAD_MODELS}, got {head_model!r}")
    if head_model == "bundled":
        if flame_model_path is not None:
            raise ValueError("flame_model_path is given but head_model is 'bundled': pass "
                             "head_model='flame' to use it")  # fmt: skip
        return None
    if flame_model_path is None:
        raise FlameModelError(
            "head_model='flame' needs flame_model_path: FLAME is never shipped with the "
            "project; convert your licensed generic_model.pkl with python -m "
            "scripts.convert_flame and pass the .npz"
        )
    model = load_flame(flame_model_path)
    _ = model.layout  # refuses a model without UVs or correspondence now, not after the fit
    return model
