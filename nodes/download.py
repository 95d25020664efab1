"""MOVA Download Models: fetch the released MOVA files into ComfyUI's `models/mova/<variant>/`.

Downloads only when the user runs this node with `confirm` on; otherwise it reports what it would
fetch and where. All logic (resume, verification, path guard) lives in runtime/hub.py.
"""
from __future__ import annotations

from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..runtime import hub
from . import model_files
from .types import CATEGORY, check_inputs

COMPONENT_SETS = {
    "all": None,
    "generator (video_dit, video_dit_2, audio_dit, dual_tower_bridge)":
        ("model_index", "scheduler", "video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"),
    "text encoder (text_encoder, tokenizer)": ("text_encoder", "tokenizer"),
    "vaes (video_vae, audio_vae)": ("video_vae", "audio_vae"),
    "configs only (no weights)": ("model_index", "scheduler"),
}


def download_roots() -> list[Path]:
    """The `mova` model folders a download may write into (not the pack's embedded folder)."""
    model_files.register_folders()
    return [Path(p) for p in folder_paths.get_folder_paths(model_files.FOLDER)
            if Path(p).resolve() != model_files.EMBEDDED_DIR.resolve()]


def _interrupted() -> bool:
    """ComfyUI's Cancel, checked by the download between files and chunks (raises when pressed)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


class MovaDownloadModels(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVADownloadModels", display_name="MOVA Download Models", category=f"{CATEGORY}/loaders",
            description="Downloads the released MOVA weights from Hugging Face (OpenMOSS-Team) into "
                        "models/mova/<variant>/, resuming partial files and verifying sizes and hashes. "
                        "Nothing is downloaded unless 'confirm' is on; without it the node lists what "
                        "it would fetch. The full model is ~80 GB.",
            inputs=[
                io.Combo.Input("variant", options=list(hub.REPOS), default="MOVA-360p",
                               tooltip="Which release: MOVA-360p (640×352) or MOVA-720p (1280×720)."),
                io.Combo.Input("components", options=list(COMPONENT_SETS), default="all",
                               tooltip="Which parts to fetch. The text encoder can be replaced by ComfyUI's "
                                       "umt5_xxl file, the video VAE by wan_2.1_vae."),
                io.Boolean.Input("confirm", default=False,
                                 tooltip="Off: only list the files, their sizes (asked from the Hub) and the "
                                         "target folder. On: download "
                                         "(tens of GB; needs internet access to huggingface.co)."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="What was (or, with confirm off, would be) downloaded: one line per file with its size and check.")],
            is_output_node=True, not_idempotent=True)

    @classmethod
    def validate_inputs(cls, variant=None, components=None):
        return check_inputs(cls, {"variant": variant, "components": components})

    @classmethod
    def execute(cls, variant, components, confirm) -> io.NodeOutput:
        roots = download_roots()
        if not roots:
            raise hub.DownloadError("ComfyUI has no models/mova folder configured; add one in "
                                    "extra_model_paths.yaml (key: mova) or create ComfyUI/models/mova/.")
        target = roots[0] / variant
        wanted = COMPONENT_SETS[components]
        if not confirm:
            # Sizes and a total from the Hub (one short request, no download); offline the plan
            # still lists the files and says why the sizes are missing.
            try:
                text = hub.plan(variant, target, roots, wanted, sizes=hub.hub_sizes(variant, wanted))
            except hub.DownloadError as err:
                text = hub.plan(variant, target, roots, wanted, sizes_unavailable=str(err))
        else:
            bar = comfy.utils.ProgressBar(len(hub.manifest(variant, wanted)))
            report = hub.download(variant, target, roots, confirm=True, components=wanted,
                                  on_file=lambda i, n, path: bar.update_absolute(i, n),
                                  should_stop=_interrupted)
            bar.update_absolute(len(report.files))
            text = report.summary()
        return io.NodeOutput(text, ui=ui.PreviewText(text))


NODES = [MovaDownloadModels]
