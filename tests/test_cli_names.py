"""The CLI's output folders: named safely from the photos, unique, always inside the output
folder, and an unusable output folder refused before any work."""

import os
import shutil
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.cli import (
    FALLBACK_NAME,
    MAX_NAME_BYTES,
    check_writable,
    face_folder_name,
    folder_inside,
    output_names,
    safe_name,
)

ROOT = Path(__file__).resolve().parents[1]


def folders(photos, max_faces=1, n_faces=None) -> list[str]:
    """Every folder the CLI may write for `photos`, each with `n_faces` faces (default: any
    number up to `max_faces`), case-folded; a photo's folders listed once."""
    counts = range(1, max_faces + 1) if n_faces is None else [n_faces]
    return [
        folder
        for name in output_names([Path(p) for p in photos], max_faces)
        for folder in {face_folder_name(name, f, n).casefold() for n in counts for f in range(n)}
    ]


def assert_one_safe_component_inside(out: Path, name: str):
    assert name and name not in (".", "..") and not name.startswith(".")
    assert "/" not in name and "\\" not in name and name == name.strip()
    assert len(name.encode("utf-8")) < 255
    assert (out / name).resolve().parent == out.resolve()
    assert folder_inside(out, name) == out / name


def test_ordinary_names_are_the_photos_stems():
    photos = ["astronaut.jpg", "group.png", "my photo.jpeg", "Zoë 李.webp", "a.b.c.png"]
    assert output_names([Path(p) for p in photos]) == [
        "astronaut",
        "group",
        "my photo",
        "Zoë 李",
        "a.b.c",
    ]
    assert face_folder_name("group", 1, 2) == "group_face1"
    assert face_folder_name("group", 0, 1) == "group"


@pytest.mark.parametrize("photo", ["...jpg", "..jpg", ".jpg", "....png", ". .jpg", " .. .jpg"])
def test_dot_names_never_leave_or_become_the_output_folder(tmp_path, photo):
    # "...jpg" has the stem "..", "..jpg" the stem ".": once OUT/.. and OUT itself
    (name,) = output_names([Path(photo)])
    assert_one_safe_component_inside(tmp_path, name)
    assert name in (FALLBACK_NAME, "jpg")


def test_empty_names_fall_back_to_photo():
    assert safe_name("") == safe_name("   ") == safe_name("..") == safe_name(".") == FALLBACK_NAME
    assert safe_name(".hidden") == "hidden"  # no hidden output folder
    assert safe_name("trailing. ") == "trailing"  # Windows drops a trailing dot or space


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("a/b", "a_b"),
        ("../../etc", "_.._etc"),
        ("a\\..\\b", "a_.._b"),
        ("a\x00b\tc\x7fd", "a_b_c_d"),
        ('x<>:"|?*y', "x_______y"),
        ("café au lait", "café au lait"),
        ("cafe\u0301", "café"),  # decomposed (macOS) and composed accents give one name
        ("con", "con_"),
        ("NUL.x", "NUL_.x"),
        ("com1", "com1_"),
        ("console", "console"),
    ],
)
def test_unsafe_characters_are_replaced(tmp_path, stem, expected):
    assert safe_name(stem) == expected
    assert_one_safe_component_inside(tmp_path, safe_name(stem))


def test_a_very_long_name_is_cut_to_whole_characters(tmp_path):
    long = "é" * 200 + "x"
    name = safe_name(long)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES and name == "é" * (MAX_NAME_BYTES // 2)
    assert_one_safe_component_inside(tmp_path, name)
    # two long names that agree in their first MAX_NAME_BYTES bytes still get two folders
    names = folders([f"{'a' * 300}1.jpg", f"{'a' * 300}2.jpg"], max_faces=3)
    assert len(set(names)) == len(names)
    for n in names:
        assert_one_safe_component_inside(tmp_path, n)


def test_same_stem_photos_get_their_extension():
    photos = [Path("x.jpg"), Path("x.png"), Path("y.jpg")]
    assert output_names(photos) == ["x_jpg", "x_png", "y"]
    # "...jpg" and "..png" both fall back to "photo"
    assert output_names([Path("...jpg"), Path("..png")]) == ["photo_jpg", "photo_png"]


def test_names_that_differ_only_in_case_are_kept_apart():
    # X.jpg and x.jpg would be one folder on macOS and Windows
    assert output_names([Path("X.jpg"), Path("x.jpg")]) == ["X_jpg", "x_jpg-2"]
    assert output_names([Path("Anna.jpg"), Path("anna.png")]) == ["Anna_jpg", "anna_png"]


def test_remaining_clashes_are_numbered_in_order():
    photos = [Path("x.jpg"), Path("x.JPG"), Path("x_jpg-2.png")]
    assert output_names(photos) == ["x_jpg", "x_JPG-2", "x_jpg-2-2"]


@pytest.mark.parametrize("max_faces", [1, 2, 3, 12])
def test_face_folders_never_collide_with_another_photos(max_faces):
    photos = ["g.png", "g_face0.png", "g_face1.jpg", "G_FACE0.jpg", "g_face10.png", "g_face.png"]
    photos += ["h_face0.png", "h.png", "g.jpg", "g-2.png", "...jpg", "photo.jpg"]
    for n_faces in [None, *range(1, max_faces + 1)]:
        names = folders(photos, max_faces, n_faces)
        assert len(set(names)) == len(names), names
    # ordinary names are unchanged, whatever --max-faces is
    assert output_names([Path("a.jpg"), Path("b.png")], max_faces) == ["a", "b"]


def test_a_folder_that_leads_outside_is_refused(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    (out / "astronaut").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="outside"):
        folder_inside(out, "astronaut")


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b"
    check_writable(out)
    assert out.is_dir() and list(out.iterdir()) == []


def unwritable_outputs(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    yield tmp_path / "file"  # OUT is a regular file
    yield tmp_path / "file" / "sub"  # inside a regular file
    if os.geteuid() != 0:  # root may write anywhere
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        yield read_only
        yield read_only / "sub"


def test_an_unwritable_output_folder_is_refused(tmp_path):
    for out in unwritable_outputs(tmp_path):
        with pytest.raises(OSError, match=f"cannot write to {out}"):
            check_writable(out)


def test_cli_refuses_an_unwritable_output_folder_before_loading(tmp_path, monkeypatch, capsys):
    from pipelines.avatar_pipeline import AvatarPipeline

    def do_not_load(*args, **kwargs):
        pytest.fail("the pipeline was loaded for an output folder it cannot write to")

    monkeypatch.setattr(AvatarPipeline, "from_pretrained", do_not_load)
    photo = ROOT / "examples" / "astronaut.jpg"
    for out in unwritable_outputs(tmp_path):
        assert cli.main([str(photo), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write to {out}: ") and len(err.splitlines()) == 1
    assert (tmp_path / "file").read_text() == "not a folder"


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_cli_writes_dot_named_photos_inside_the_output_folder(tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("...jpg", "..jpg"):  # stems ".." and "."
        shutil.copy(ROOT / "examples" / "astronaut.jpg", photos / name)
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    before = tree(tmp_path)
    args = [str(photos), "-o", str(out), "--resolution", "64", "--fit-steps", "0"]
    assert cli.main(args) == 0
    after = tree(tmp_path)
    assert [p for p in after if p not in before and not p.startswith("work/out/")] == ["work/out"]
    assert sorted(p.name for p in out.iterdir()) == ["photo_jpg", "photo_jpg-2"]
    for folder in out.iterdir():
        assert (folder / "face.glb").is_file()
