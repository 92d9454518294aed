"""`DelightingNet` for `DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`.

It is `modeling.networks.delighting.DelightingNet` from the installed openavatar package;
this file only names it, so diffusers and `AvatarPipeline.from_pretrained(repo)` build the
same objects.
"""

import importlib

try:
    module = importlib.import_module("modeling.networks.delighting")
except ImportError as err:
    raise ImportError(
        "this repository needs the openavatar package (pip install the OpenAvatar project)"
    ) from err

DelightingNet = module.DelightingNet
