"""The reflectance networks (AvatarMe's chain), each a diffusers `ModelMixin, ConfigMixin`
component stored in `weights_config/<name>/`: `delighting.DelightingNet`,
`specular.SpecularAlbedoNet`, `normals.DetailNormalsNet`; `tiling` runs them by sliding window.

The module paths are part of the on-disk format (`model_index.json`). Folders written before the
networks moved here name them `modeling.<name>`: `LEGACY_MODULES` maps those to today's.
"""

LEGACY_MODULES = {
    "modeling.delighting": "modeling.networks.delighting",
    "modeling.specular": "modeling.networks.specular",
    "modeling.normals": "modeling.networks.normals",
}
