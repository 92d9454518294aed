"""What a batch has to do: its input (a folder, a list of paths, a CSV or JSONL manifest) read
into rows, and the rows planned into avatars (`Item`s) with unique output names, each photo
read once for its SHA-256 (duplicates, files that change or vanish). Used by `pipelines.batch`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.cli import IMAGE_SUFFIXES, output_names, safe_name, unique_names

RESULTS_NAME = "results.jsonl"  # the manifest in the output folder; no avatar gets this name
MANIFEST_COLUMNS = ("path", "face_index", "group", "resolution", "fit_steps", "name")
MANIFEST_SUFFIXES = {".csv", ".jsonl", ".ndjson"}
HASH_CHUNK = 1 << 20


@dataclass
class Row:
    """One photo of the input and its options.

    Attributes:
        path (`str`): the photo, absolute.
        line (`int`): where it comes from: the line (text list, JSONL) or row (CSV, header not
            counted) from 1; the photo's place in the sorted folder from 1.
        face_index (`int`): which face, from the largest (0).
        resolution (`int`): UV map size.
        fit_steps (`int` or None): photometric fitting steps (None: the pipeline's default).
        group (`str` or None): same-person group id (rows sharing it make one avatar).
        name (`str` or None): the output folder asked for (else one from the path).
        stem_path (`str`): the path whose stem names the output folder (a folder's photos:
            their path inside it with `_` for its separators, so `a/x.jpg` -> `a_x`).
        error (`str` or None): why the row cannot be used (a bad option value).
    """

    path: str
    line: int
    face_index: int = 0
    resolution: int = 1024
    fit_steps: int | None = None
    group: str | None = None
    name: str | None = None
    stem_path: str = ""
    error: str | None = None


@dataclass
class Item:
    """One unit of work: one avatar, from one photo or from a same-person group of photos.

    Attributes:
        name (`str`): its folder inside the output folder.
        photos (`list[str]`): its photos, absolute paths.
        sha256 (`list[str]`): their contents' SHA-256 when the batch was planned ("" if unread).
        face_index, resolution, fit_steps, group: as in `Row`.
        lines (`list[int]`): the input lines it comes from.
        error (`str` or None): why it fails before any work (unreadable, duplicate, ...).
    """

    name: str
    photos: list[str]
    sha256: list[str]
    face_index: int = 0
    resolution: int = 1024
    fit_steps: int | None = None
    group: str | None = None
    lines: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def input(self) -> str | list[str]:
        """The manifest's `input`: the photo, or the group's photos."""
        return self.photos if self.group is not None else self.photos[0]


# -- reading the input ---------------------------------------------------------------------


def read_input(source: Path, defaults: dict, skip: Path | None = None) -> list[Row]:
    """The rows of `source`: a folder (its photos, recursively, sorted; hidden files and
    folders and `skip`, the output folder, left out), a photo, a CSV or JSONL manifest, or a
    text file of paths. `defaults` holds `face_index`, `resolution` and `fit_steps` for the
    rows that do not give them. Raises `FileNotFoundError` or `ValueError` for an input that
    cannot be read at all; a bad row becomes a `Row` with an `error`.
    """
    if source.is_dir():
        return _folder_rows(source, defaults, skip)
    if not source.is_file():
        raise FileNotFoundError(f"no such file or folder: {source}")
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [Row(os.path.abspath(source), 1, stem_path=source.name, **defaults)]
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {source} as a list of photos: {e}") from e
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        records = [(reader.line_num, r) for r in reader]  # line_num: the row's last line
    elif suffix in (".jsonl", ".ndjson"):
        records = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    records.append((i, {"_error": f"not a JSON object ({e.msg})"}))
    else:
        records = [
            (i, {"path": line.strip()})
            for i, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if suffix in MANIFEST_SUFFIXES:
        columns = {k for _, r in records if isinstance(r, dict) for k in r if k is not None}
        if records and "path" not in columns:
            raise ValueError(f"{source}: a manifest needs a 'path' column")
        unknown = sorted(columns - set(MANIFEST_COLUMNS) - {"_error"})
        if unknown:
            log(
                f"note: {source}: columns {', '.join(unknown)} are not used "
                f"(known: {', '.join(MANIFEST_COLUMNS)})"
            )
    rows = [_manifest_row(r, i, source, defaults) for i, r in records]
    if not rows:
        raise ValueError(f"no photos listed in {source}")
    return rows


def _folder_rows(folder: Path, defaults: dict, skip: Path | None) -> list[Row]:
    skip = skip.resolve() if skip is not None else None
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        found += [
            (here / f).relative_to(folder)
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    if not found:
        raise FileNotFoundError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    found.sort(key=lambda p: p.as_posix())
    return [
        Row(os.path.abspath(folder / rel), i, stem_path="_".join(rel.parts), **defaults)
        for i, rel in enumerate(found, start=1)
    ]


def _manifest_row(record, line: int, source: Path, defaults: dict) -> Row:
    """One `Row` from line `line` of the manifest or list `source` (`record`, a dict), its
    errors kept in the row."""
    where = f"{source}, line {line}"
    if not isinstance(record, dict) or "_error" in record:
        why = record.get("_error") if isinstance(record, dict) else "not a JSON object"
        return Row("", line, error=f"{where}: {why}", **defaults)
    path = str(record.get("path") or "").strip()
    absolute = os.path.abspath(source.parent / path) if path else ""
    row = Row(absolute, line, stem_path=Path(path).name, **defaults)
    try:
        if not path:
            raise ValueError("no path")
        for key, minimum in (("face_index", 0), ("resolution", 1), ("fit_steps", 0)):
            value = record.get(key)
            if value not in (None, ""):
                setattr(row, key, _integer(key, value, minimum))
        row.group = _text(record.get("group"))
        row.name = _text(record.get("name"))
    except ValueError as e:
        row.error = f"{where}: {e}"
    return row


def _text(value) -> str | None:
    """A manifest's text cell, None when empty."""
    return str(value).strip() or None if value is not None else None


def _integer(key: str, value, minimum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < minimum or isinstance(value, float | bool):
        raise ValueError(f"{key} must be a whole number from {minimum}, not {value!r}")
    return number


# -- planning ------------------------------------------------------------------------------


def plan_items(rows: Sequence[Row]) -> list[Item]:
    """The avatars to make from `rows`, in input order: one per row, or one per group (at its
    first row). Each gets a unique output name (`pipelines.cli`'s safe names: the photo's stem,
    `_face<i>` for face `i > 0`, the group id, or the row's `name`; never `results.jsonl`).
    Photos are read once here, for their SHA-256: a missing or unreadable photo, a row with a
    bad option, a group whose rows disagree, and a later duplicate of an earlier avatar (the
    same photos' contents with the same options) get an `error` and no work.
    """
    digests = {row.path: sha256_of(row.path) for row in rows if row.path and not row.error}
    units: dict[object, list[Row]] = {}
    for row in rows:
        units.setdefault(("group", row.group) if row.group else ("row", row.line), []).append(row)
    items = [_item(members, digests) for members in units.values()]
    _name_items(items, list(units.values()))
    first: dict[tuple, Item] = {}
    for item in items:
        if item.error:
            continue
        key = (tuple(item.sha256), item.face_index, item.resolution, item.fit_steps)
        if key in first:
            earlier = first[key]
            item.error = (
                f"duplicate of {describe(earlier)} (the same photo contents and "
                f"options): made once, in {earlier.name}/"
            )
        else:
            first[key] = item
    return items


def _item(members: list[Row], digests: dict[str, tuple[str, str | None]]) -> Item:
    head = members[0]
    item = Item(
        name="",
        photos=[r.path for r in members],
        sha256=[digests.get(r.path, ("", None))[0] for r in members],
        face_index=head.face_index,
        resolution=head.resolution,
        fit_steps=head.fit_steps,
        group=head.group,
        lines=[r.line for r in members],
    )
    errors = [r.error or digests[r.path][1] for r in members if r.error or digests[r.path][1]]
    label = f"group {head.group!r}: " if head.group else ""
    if errors:
        item.error = label + "; ".join(errors)
        return item
    for key in ("face_index", "resolution", "fit_steps", "name"):
        values = {getattr(r, key) for r in members if key != "name" or r.name}
        if len(values) > 1:
            item.error = f"{label}its rows disagree on {key} ({', '.join(map(str, values))})"
            return item
    seen: dict[str, str] = {}
    for row, digest in zip(members, item.sha256, strict=True):
        if digest in seen:
            item.error = f"{label}{row.path} is the same photo as {seen[digest]}"
            return item
        seen[digest] = row.path
    return item


def _name_items(items: list[Item], units: list[list[Row]]) -> None:
    """Give every item its unique output name (see `plan_items`)."""
    from_stems = [i for i, rows in enumerate(units) if not rows[0].group and not rows[0].name]
    # One name per photo, however many of its faces are asked for: `output_names` would take
    # the same photo twice for two photos whose names clash.
    photos = {units[i][0].path: Path(units[i][0].stem_path or units[i][0].path) for i in from_stems}
    stem_of = dict(zip(photos, output_names(list(photos.values())), strict=True))
    names = [
        safe_name(next((r.name for r in rows if r.name), None) or rows[0].group or "")
        for rows in units
    ]
    for i in from_stems:
        stem, face = stem_of[units[i][0].path], items[i].face_index
        names[i] = stem if face == 0 else f"{stem}_face{face}"
    for item, name in zip(items, unique_names([RESULTS_NAME, *names])[1:], strict=True):
        item.name = name


def sha256_of(path: str) -> tuple[str, str | None]:
    """(hex digest, None), or ("", the reason the file cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return "", f"{path}: no such file"
    except IsADirectoryError:
        return "", f"{path}: a folder, not a photo"
    except OSError as e:
        return "", f"{path}: cannot read it ({e.strerror or e})"
    return digest.hexdigest(), None


def describe(item: Item) -> str:
    return f"group {item.group!r}" if item.group else item.photos[0]


def log(text: str) -> None:
    """One line for the user on stderr, above the progress bar when there is one."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
