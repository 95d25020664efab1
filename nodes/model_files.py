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
from ..common.files import clean
from ..runtime import hub

PACK_DIR = Path(__file__).resolve().parents[1]
EMBEDDED_DIR = PACK_DIR / "embedded"
# The embedded models the loaders offer: the trained toy (committed).
EMBEDDED_NAMES = ("mova-toy",)
# Embedded folders kept out of the dropdowns: the seeded random stand-in scripts/make_embedded.py writes
# at set-up makes noise, so it is for tests only. A saved graph that selects it still loads and runs
# (the loaders accept it), and MOVA_LIST_TEST_MODELS=1 lists it for whoever works on the pack.
TEST_ONLY_NAMES = ("mova-toy-random",)
LIST_TEST_MODELS_ENV = "MOVA_LIST_TEST_MODELS"
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


def _listing_test_models() -> bool:
    return os.environ.get(LIST_TEST_MODELS_ENV, "").strip().lower() in ("1", "true", "yes")


def mova_folders(include_test_models: bool | None = None) -> list[str]:
    """Names of MOVA folders in every `mova` path; the embedded default first. Test-only embedded
    folders only with `include_test_models` (default: the MOVA_LIST_TEST_MODELS environment variable)."""
    if include_test_models is None:
        include_test_models = _listing_test_models()
    order = EMBEDDED_NAMES + TEST_ONLY_NAMES
    embedded, found = [], []
    for root in folder_paths.get_folder_paths(FOLDER):
        root = Path(root)
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if not (child.is_dir() and _is_mova_folder(child)) or child.name in found + embedded:
                continue
            if root == EMBEDDED_DIR:
                if child.name in TEST_ONLY_NAMES and not include_test_models:
                    continue
                embedded.append(child.name)
            else:
                found.append(child.name)
    embedded.sort(key=lambda n: order.index(n) if n in order else len(order))
    return embedded + found or [EMBEDDED_NAMES[0]]


def is_test_only_folder(name) -> bool:
    """A hidden embedded folder (the random stand-in) that is on disk: loaders accept it from saved graphs."""
    return (name in TEST_ONLY_NAMES and (EMBEDDED_DIR / name).is_dir()
            and _is_mova_folder(EMBEDDED_DIR / name))


def mova_folder_path(name: str) -> Path:
    for root in folder_paths.get_folder_paths(FOLDER):
        path = Path(root) / name
        if path.is_dir() and _is_mova_folder(path):
            return path
    raise CheckpointError(missing_folder_hint(name))


def _folder_exists(name: str) -> bool:
    """A plain folder name present in a mova model folder (never a path, never an OSError: graphs may
    carry any string)."""
    if not name or len(name) > 255 or name in (".", "..") or any(c in name for c in "/\\\0"):
        return False
    try:
        return any((Path(root) / name).is_dir() for root in folder_paths.get_folder_paths(FOLDER))
    except OSError:
        return False


def missing_folder_hint(name: str, component: str | None = None) -> str:
    """What is missing and what to do, for a MOVA folder (or one of its components) a graph selects but
    this ComfyUI lacks: names the folder under ComfyUI/models/mova, MOVA Download Models and the
    Hugging Face page. Plain text: the frontend's error dialog shows Markdown marks literally."""
    name = str(name)
    release = name if name in hub.REPOS else None
    page = f"https://huggingface.co/{hub.REPOS[release or hub.WORKFLOW_VARIANT]}"
    refresh = "then press R in ComfyUI to refresh the lists."
    here = _folder_exists(name)
    if component and here:
        what = (f"The folder ComfyUI/models/mova/{name}/ has no {component}/ folder (an incomplete download, "
                f"or a download of other components).")
        if release:
            return (f"{what} Run the MOVA Download Models node (variant {release}, components with "
                    f"{component}, confirm on; files already there are kept), or download {component}/ "
                    f"from {page}/tree/main/{component} into it; {refresh}")
        return f"{what} Copy the {component}/ folder of the MOVA release ({page}) into it; {refresh}"
    if release:
        return (f"The {release} folder is missing: expected ComfyUI/models/mova/{release}/ (with "
                f"model_index.json, video_dit/, audio_dit/, …). Run the MOVA Download Models node (variant "
                f"{release}, confirm on) or download {page} into that folder; {refresh}")
    return (f"No MOVA folder {clean(repr(name), 60)} in ComfyUI/models/mova/ (looked in: "
            f"{', '.join(folder_paths.get_folder_paths(FOLDER))}). Put a MOVA folder there as downloaded "
            f"from {page} (the MOVA Download Models node fetches it), or pick one of the listed entries; "
            f"{refresh}")


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
