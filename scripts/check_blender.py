"""Open the exported head in Blender (bpy) and render it: a manual check, not part of CI.

Imports `face.glb` with Blender's own glTF importer and prints what Blender made of it: the
objects, each mesh's material slots (with the Principled BSDF's IOR, specular level and tint and
which inputs are driven by textures), and its shape keys (names and count). Renders the head
with Cycles on the CPU from the front and at 90 degrees of yaw (the head's left side), with all
shape keys at 0 and with `jawOpen` at 1: front.png, profile.png, front_jawOpen.png,
profile_jawOpen.png. Then imports the OBJ (`obj/face.obj` next to the GLB) into an empty scene,
prints its objects and materials and renders it from the front (obj_front.png). Ends with one
JSON line of everything it printed.

bpy is a large wheel (800 MB installed) that pins its Python (3.11 for bpy 4.5), so it lives
in a venv of its own, not in the project's .venv::

    python3.11 -m venv /tmp/bpyenv && /tmp/bpyenv/bin/pip install "bpy>=4.5,<4.6"
    .venv/bin/python -m pipelines.cli examples/astronaut.jpg -o /tmp/glbcheck \\
        --resolution 256 --fit-steps 0 -q
    /tmp/bpyenv/bin/python scripts/check_blender.py /tmp/glbcheck/astronaut/face.glb \\
        -o /tmp/blendercheck

About 15 s on two CPU cores at the default 256 px and 16 samples (80 s at --size 512
--samples 32).
"""

import argparse
import json
import math
from pathlib import Path

import bpy
from mathutils import Vector


def describe_materials(obj: bpy.types.Object) -> list[dict]:
    """Each material slot: name and the Principled BSDF's inputs that matter for skin."""
    slots = []
    for slot in obj.material_slots:
        mat = slot.material
        entry = {"name": mat.name if mat else None}
        if mat and mat.use_nodes:
            bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
            if bsdf is not None:
                for key in ("IOR", "Specular IOR Level", "Roughness", "Metallic"):
                    socket = bsdf.inputs[key]
                    entry[key] = "texture" if socket.is_linked else round(socket.default_value, 4)
                tint = bsdf.inputs["Specular Tint"]
                entry["Specular Tint"] = (
                    "texture" if tint.is_linked else [round(v, 4) for v in tint.default_value[:3]]
                )
                entry["linked"] = sorted(s.name for s in bsdf.inputs if s.is_linked)
            entry["images"] = sorted(
                n.image.name for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image
            )
        slots.append(entry)
    return slots


def describe_scene() -> dict:
    objects = []
    for obj in bpy.context.scene.objects:
        entry = {"name": obj.name, "type": obj.type}
        if obj.type == "MESH":
            mesh = obj.data
            entry["vertices"] = len(mesh.vertices)
            entry["polygons"] = len(mesh.polygons)
            entry["materials"] = describe_materials(obj)
            keys = mesh.shape_keys.key_blocks if mesh.shape_keys else []
            entry["shape_keys"] = [k.name for k in keys]
            entry["shape_key_count"] = len(keys)
        objects.append(entry)
    return {"objects": objects, "materials": sorted(m.name for m in bpy.data.materials)}


def head_bounds(meshes: list[bpy.types.Object]) -> tuple[Vector, float]:
    """Centre and half the largest side of the meshes' world-space box."""
    corners = [o.matrix_world @ Vector(c) for o in meshes for c in o.bound_box]
    low = Vector([min(c[i] for c in corners) for i in range(3)])
    high = Vector([max(c[i] for c in corners) for i in range(3)])
    return (low + high) / 2, max(high - low) / 2


def setup_render(size: int, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    world = bpy.data.worlds.new("grey") if scene.world is None else scene.world
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.5, 0.5, 0.5, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6


def add_camera_and_light(center: Vector, radius: float) -> bpy.types.Object:
    camera = bpy.data.objects.new("check camera", bpy.data.cameras.new("check camera"))
    camera.data.angle = math.radians(30)
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    sun = bpy.data.objects.new("key", bpy.data.lights.new("key", "SUN"))
    sun.data.energy = 3.0
    bpy.context.scene.collection.objects.link(sun)
    camera["center"], camera["radius"] = list(center), radius
    return camera


def shoot(camera: bpy.types.Object, yaw_deg: float, path: Path) -> None:
    """Render from `yaw_deg` around Blender's z (up); 0 is the glTF front (Blender's -y)."""
    center, radius = Vector(camera["center"]), camera["radius"]
    yaw = math.radians(yaw_deg)
    direction = Vector((math.sin(yaw), -math.cos(yaw), 0.0))
    camera.location = center + direction * (radius / 0.85 / math.tan(math.radians(15)))
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    sun = bpy.data.objects["key"]
    # from above and to the camera's right, as in tests/browser/render_glb.mjs
    up = Vector((0, 0, 1))
    toward_light = direction + up.cross(direction) + up
    sun.rotation_euler = (-toward_light).to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("glb", type=Path, help="the exported face.glb")
    parser.add_argument("-o", "--out", type=Path, default=Path("blender_check"))
    parser.add_argument("--size", type=int, default=256, help="render size in pixels")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"blender": bpy.app.version_string}

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(args.glb))
    report["glb"] = describe_scene()
    print(json.dumps(report["glb"], indent=1))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    setup_render(args.size, args.samples)
    camera = add_camera_and_light(*head_bounds(meshes))
    for name, weight in (("", 0.0), ("_jawOpen", 1.0)):
        for obj in meshes:
            keys = obj.data.shape_keys
            if keys and "jawOpen" in keys.key_blocks:
                keys.key_blocks["jawOpen"].value = weight
        shoot(camera, 0, args.out / f"front{name}.png")
        shoot(camera, 90, args.out / f"profile{name}.png")

    obj_path = args.glb.parent / "obj" / "face.obj"
    if obj_path.is_file():
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.wm.obj_import(filepath=str(obj_path))
        report["obj"] = describe_scene()
        print(json.dumps(report["obj"], indent=1))
        setup_render(args.size, args.samples)
        meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
        shoot(add_camera_and_light(*head_bounds(meshes)), 0, args.out / "obj_front.png")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
