"""Synthetic training data for the reflectance networks (no facial reflectance dataset is
reachable, so we paint and render our own).

- `reflectance_data`: a face's parameters and ground-truth UV maps (`sample_face_maps`);
- `render_pairs`: the maps rendered into the backbone's texture domain (`make_training_pair`),
  the seed splits;
- `skin_color` (spectral skin model), `skin_details` (pores, wrinkles, hair, eyes ...),
  `uv_painting` (area-averaged painting primitives), `face_layout` (where things are in our UV
  layout, texel size in mm).
"""
