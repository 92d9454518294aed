"""`AvatarPipeline` and its outputs, imported on first use (PEP 562): `import pipelines` and
`python -m pipelines.cli --help` load neither torch nor diffusers. Importing the package
imports `modeling` first, which sets the OpenMP threads' wait policy before torch loads (see
`modeling`'s docstring)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import modeling  # noqa: F401  (the OpenMP wait policy, before anything loads torch)

_EXPORTS = {
    "AvatarPipeline": "pipelines.avatar_pipeline",
    "View": "pipelines.avatar_pipeline",
    "AvatarPipelineOutput": "pipelines.pipeline_output",
    "FaceMesh": "pipelines.pipeline_output",
    "ViewOutput": "pipelines.pipeline_output",
}

__all__ = ["AvatarPipeline", "AvatarPipelineOutput", "FaceMesh", "View", "ViewOutput"]

if TYPE_CHECKING:
    from pipelines.avatar_pipeline import AvatarPipeline, View
    from pipelines.pipeline_output import AvatarPipelineOutput, FaceMesh, ViewOutput


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
