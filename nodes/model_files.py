"""Where model files come from: ComfyUI's model folders plus a `mova` folder this pack registers.

`models/mova/` (under ComfyUI's models dir) holds MOVA diffusers-style folders (MOVA-360p, ...).
The pack's own `embedded/` folder is registered as a second `mova` path: it holds the embedded default
model, listed first so a new graph runs without downloading anything.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..common.errors import CheckpointError

PACK_DIR = Path(__file__).resolve().parents[1]
EMBEDDED_DIR = PACK_DIR / "embedded"
# Preference order for the default choice: the trained toy (committed), then the random stand-in
# that scripts/make_embedded.py writes at set-up until the toy exists.
EMBEDDED_NAMES = ("mova-toy", "mova-toy-random")
FOLDER = "mova"
SINGLE_FILE_EXTENSIONS = {".safetensors", ".sft"}


def register_folders() -> None:
    """Add the `mova` model folder (idempotent) and the pack's embedded folder as a second path."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], {"folder"})
    paths = folder_paths.folder_names_and_paths[FOLDER][0]
    if str(EMBEDDED_DIR) not in paths:
        paths.append(str(EMBEDDED_DIR))


def _is_mova_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "video_dit" / "config.json").is_file()


def mova_folders() -> list[str]:
    """Names of MOVA folders in every `mova` path; the embedded default first."""
    embedded, found = [], []
    for root in folder_paths.get_folder_paths(FOLDER):
        root = Path(root)
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.is_dir() and _is_mova_folder(child) and child.name not in found:
                (embedded if root == EMBEDDED_DIR else found).append(child.name)
    embedded.sort(key=lambda n: EMBEDDED_NAMES.index(n) if n in EMBEDDED_NAMES else len(EMBEDDED_NAMES))
    return embedded + found or [EMBEDDED_NAMES[-1]]


def mova_folder_path(name: str) -> Path:
    for root in folder_paths.get_folder_paths(FOLDER):
        path = Path(root) / name
        if path.is_dir() and _is_mova_folder(path):
            return path
    raise CheckpointError(
        f"MOVA folder {name!r} not found in {folder_paths.get_folder_paths(FOLDER)}. Expected a folder "
        "with model_index.json, video_dit/, video_dit_2/, audio_dit/, dual_tower_bridge/ … (as "
        "downloaded from OpenMOSS-Team/MOVA-360p); put it in ComfyUI/models/mova/.")


def has_component(name: str, component: str) -> bool:
    """Whether the MOVA folder `name` has a `component/` folder (e.g. audio_vae/)."""
    try:
        return (mova_folder_path(name) / component).is_dir()
    except CheckpointError:
        return False


def files(folder: str) -> list[str]:
    """Weight files in a ComfyUI model folder (`diffusion_models`, `vae`, `text_encoders`)."""
    return [f for f in folder_paths.get_filename_list(folder)
            if os.path.splitext(f)[1].lower() in SINGLE_FILE_EXTENSIONS]


def file_path(folder: str, name: str) -> Path:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise CheckpointError(f"{name!r} not found in ComfyUI's {folder} folder(s) "
                              f"{folder_paths.get_folder_paths(folder)}; put the file there.")
    return Path(path)
