"""The face-specific stages of `pipelines.AvatarPipeline`, grouped by what they work on:

- `modeling.inputs`: the user's photo (`photo.load_image`) and the faces in it
  (`face_tracker.FaceTracker`);
- `modeling.face_model`: the face's topology, UV layout and landmark correspondence (a
  generated asset);
- `modeling.reconstruction`: camera and shape from the landmarks (`geometry`), the photometric
  fit (`fitting`), UV unwrapping and completion (`texture`), first-order lighting and
  de-lighting (`first_order`);
- `modeling.networks`: the reflectance networks (diffusers `ModelMixin` components stored in
  `weights_config/`) and the sliding window that runs them (`tiling`, `reflectance`);
- `modeling.export`: GLB, OBJ, PNG and JSON files; `modeling.errors`: the errors a user can
  cause.

Rendering (rasterization, shading, conventions) lives in `rendering/`, which never imports
`modeling`.

Importing `modeling` (or `pipelines`, which imports it) before torch sets
`OMP_WAIT_POLICY=PASSIVE` unless it is set: the OpenMP threads of torch and numba then sleep
at the end of a parallel region instead of spinning. On cores that other processes use too (a
shared 2-vCPU host, a busy laptop), spinning threads wait for a descheduled peer at every
operator: on 2 shared cores (load 4-8) a 1024 px call took 31.6-67.7 s spinning and 21.5 s
passive, a 256 px call's reflectance stage 6.9 s and 0.24 s (issue 17). OpenMP reads the
variable once, when torch loads it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
