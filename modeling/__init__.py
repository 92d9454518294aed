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
"""
