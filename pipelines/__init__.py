"""`AvatarPipeline` and its outputs, imported on first use (PEP 562): `import pipelines` and
`python -m pipelines.cli --help` load neither torch nor diffusers.

Importing the package before torch also sets `OMP_WAIT_POLICY=PASSIVE` unless it is set: the
OpenMP threads of torch and numba then sleep at the end of a parallel region instead of
spinning. On a machine whose cores other processes use too (a shared 2-vCPU host, a busy
laptop), spinning threads wait for a descheduled peer at every operator: measured on 2 shared
cores (load 6-8), a 256 px call's reflectance stage took 6.9 s spinning and 0.24 s passive,
a 256^2 rasterization 30-90 ms and 3-10 ms (issue 17). OpenMP reads the variable once, when
torch loads it.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
