"""Write an `AvatarPipelineOutput` to a folder: GLB, OBJ + MTL + PNG maps, camera/lighting JSON,
the render over the photo, and a zip of everything."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from modeling.export import (
    export_glb,
    export_obj,
    in_threads,
    save_camera_json,
    save_maps,
    to_uint8,
    write_png,
    write_zip,
)
from pipelines.pipeline_output import AvatarPipelineOutput


def _as_array(map_or_image) -> np.ndarray:
    if isinstance(map_or_image, Image.Image):
        return np.asarray(map_or_image)
    return map_or_image


def save_outputs(output: AvatarPipelineOutput, folder, name: str = "face") -> dict[str, Path]:
    """Write every file of one reconstruction into `folder`; returns `{kind: path}`.

    Files: `<name>.glb`, `obj/<name>.obj` (+ `.mtl` and the textures it names:
    `<name>_BaseColor.png`, `_Normal`, `_Specular`, `_ORM`), `maps/<map>.png`, `camera.json`
    (intrinsics, pose, SH lighting), `render.png`, `input.png`, `skin_mask.png` (the photo's
    skin mask, `ViewOutput.skin_mask`, 8-bit grey), `<name>.zip`. With
    `output.head`, the GLB and OBJ hold the whole head (skin, eyes, mouth; the GLB with the 52
    ARKit morph targets), the OBJ's textures include `<name>_Eye.png` and the maps
    `maps/eye_texture.png`. With `output.flame` (a FLAME head), `flame_params.npz` and
    `flame_params.json`: FLAME's fitted parameters and each photo's camera in FLAME's frame
    (`FlameParameters.save`).

    The files are written in threads (`in_threads`: the PNG encoders run on every core).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    maps = {k: _as_array(v) for k, v in output.maps.items()}
    mesh, head = output.mesh, output.head
    paths: dict[str, Path] = {}
    glb = partial(
        export_glb,
        folder / f"{name}.glb",
        mesh.vertices,
        mesh.faces,
        mesh.uvs,
        base_color=maps["diffuse_albedo"],
        normal_map=maps.get("specular_normals", maps["shape_normals_tangent"]),
        specular_albedo=maps.get("specular_albedo"),
        vertex_normals=mesh.normals,
        occlusion=maps.get("ambient_occlusion"),
        camera=output.camera,
        head=head,
    )
    all_maps = dict(maps)
    if head is not None and head.eye_texture is not None:
        all_maps["eye_texture"] = head.eye_texture  # in the eyes' UV layout, not the maps'

    def maps_then_obj() -> tuple[dict[str, Path], Path]:  # the OBJ copies some maps' PNGs
        map_paths = save_maps(all_maps, folder / "maps")
        obj = export_obj(folder / "obj", name, mesh.vertices, mesh.faces, mesh.uvs, maps,
                         mesh.normals, head=head, map_files=map_paths)  # fmt: skip
        return map_paths, obj

    images = {"render": to_uint8(_as_array(output.render)), "input": output.image}
    if output.skin_mask is not None:
        images["skin_mask"] = to_uint8(output.skin_mask)
    paths.update({kind: folder / f"{kind}.png" for kind in images})
    paths["glb"], (map_paths, paths["obj"]), *_ = in_threads([
        glb,
        maps_then_obj,
        *(partial(write_png, paths[kind], pixels) for kind, pixels in images.items()),
    ])  # fmt: skip
    lighting = {
        "convention": "SH (3 x 9, linear RGB, camera space); shading = (1/pi) sum_j A_j c_j Y_j(n)",
        "sh_coefficients": np.asarray(output.lighting).tolist(),
    }
    paths["camera"] = save_camera_json(output.camera.to_dict(), lighting, folder / "camera.json")
    if output.flame is not None:  # for other FLAME tools, with each photo's camera
        paths.update(output.flame.save(folder, [v.camera for v in output.views]))
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".zip"]
    paths["zip"] = write_zip(sorted(files), folder / f"{name}.zip", root=folder)
    paths.update({f"map:{k}": p for k, p in map_paths.items()})
    return paths
