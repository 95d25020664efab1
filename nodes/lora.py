"""MOVA LoRA: appends a LoRA to the model handle's stack (chain several nodes), with one strength per
part of MOVA. The weights are shared; the handle is copied, so ComfyUI's cache of the loader stays valid.

The stack is applied to the generator here (for the report and an early, readable error) and again by
the sampler before every run (models/lora/stack.py restores what an earlier graph applied: removing the node
gives the base weights back exactly; a strength change re-applies from the kept originals, nothing is
read from disk again).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..models.lora.stack import LoraEntry, LoraStack, LoraStrengths, lora_report
from ..models.lora.formats import is_lora_folder, read_lora
from .options import LORA_EXPERTS, LORA_MODES
from .types import CATEGORY, MovaModel, check_inputs

log = logging.getLogger("mova")
FOLDER = "loras"
# The pack's own demo LoRAs (fit the embedded toy models; used by workflows/lora_bridge_guidance.json).
# Listed by MOVA LoRA only: not registered as a ComfyUI `loras` path (core Load LoRA and the model
# library would offer toy files to every model) and outside embedded/ (a `mova` path the library lists).
DEMO_DIR = Path(__file__).resolve().parents[1] / "demo_loras"
EXPERTS, MODES = LORA_EXPERTS, LORA_MODES
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()   # (path, mtime, size) -> LoraFile
_CACHE_SIZE = 8

LORA_TIP = ("A LoRA from ComfyUI's models/loras folder: a file (.safetensors preferred; .pt/.pth are "
            "loaded tensors-only) or a LoRA folder, shown with a trailing '/': MOVA's trainer output "
            "(lora_weights.pt + lora_config.pt), VideoX-Fun per-component folders (transformer/, "
            "transformer_2/, transformer_audio/, dual_tower_bridge/) or a peft adapter folder.")
STRENGTH_TIP = "Strength on the {p}. 0 = this LoRA leaves it untouched; negative values subtract the LoRA."
EXPERT_TIP = ("Where a LoRA WITHOUT MOVA component names goes (community Wan2.2 I2V-A14B LoRAs, which are "
              "made for one expert): auto = the file name / metadata says high_noise or low_noise, else "
              "both experts (the info text says which); both / high / low = force it; audio = the audio "
              "tower. MOVA's own LoRAs name their components and ignore this.")
MODE_TIP = ("merge = add the LoRA into the float weights (no extra compute; the untouched originals are "
            "kept in host RAM to restore them). alongside = compute the LoRA next to each weight on every "
            "forward (~1 % slower, no copy of the originals). Quantized or streamed (offload) weights "
            "always get it alongside. If any LoRA node of a chain says alongside, the chain does.")
HINT = "Put the LoRA into ComfyUI/models/loras/ and refresh the node list (R)."


def demo_loras() -> list[str]:
    """The pack's demo LoRA files (names as MOVA LoRA lists them)."""
    if not DEMO_DIR.is_dir():
        return []
    return sorted(p.name for p in DEMO_DIR.iterdir() if p.is_file() and p.suffix == ".safetensors")


def _roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(FOLDER) if os.path.isdir(p)]


def _lora_folders() -> list[str]:
    """LoRA folders (relative, '/'-terminated) under every loras path; not descended into."""
    found = []
    for root in _roots():
        for here, dirs, _files in os.walk(root, followlinks=True):
            keep = []
            for d in sorted(dirs):
                path = Path(here) / d
                if is_lora_folder(path):
                    found.append(path.relative_to(root).as_posix() + "/")
                elif not d.startswith("."):
                    keep.append(d)
            dirs[:] = keep
    return found


def lora_choices() -> list[str]:
    folders = _lora_folders()
    files = [f for f in folder_paths.get_filename_list(FOLDER)
             if not any(f.replace(os.sep, "/").startswith(d) for d in folders)]
    return sorted(set(files) | set(folders) | set(demo_loras()), key=str.lower)


def lora_path(name: str) -> Path:
    if name.endswith("/"):
        for root in _roots():
            if is_lora_folder(root / name):
                return root / name.rstrip("/")
    else:
        path = folder_paths.get_full_path(FOLDER, name)
        if path is not None:
            return Path(path)
        if name in demo_loras():      # the user's folders first: a file of the same name there wins
            return DEMO_DIR / name
    from ..common.errors import CheckpointError
    raise CheckpointError(f"LoRA {name!r} not found in {folder_paths.get_folder_paths(FOLDER)}. {HINT}")


def load_lora(name: str):
    """Read once per file version; strength changes reuse the parsed LoRA (and its identity)."""
    path = lora_path(name)
    target = path / "lora_weights.pt" if (path / "lora_weights.pt").is_file() else path
    stat = target.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = read_lora(path, name=name.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0])
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def _strength(name: str, part: str):
    return io.Float.Input(name, default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=STRENGTH_TIP.format(p=part))


class MovaLora(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVALora", display_name="MOVA LoRA", category=f"{CATEGORY}/loaders",
            description="Adds a LoRA to the MOVA model, with separate strengths for the high-noise and "
                        "low-noise video experts, the audio tower and the Bridge. Chain several. Reads MOVA's "
                        "own LoRAs and community Wan2.2 I2V-A14B LoRAs (kohya, diffusers, peft, LoKr, LoHa). "
                        "info says how many keys went where.",
            inputs=[
                MovaModel.Input("model", tooltip="From MOVA Model Loader or another MOVA LoRA node."),
                io.Combo.Input("lora", options=lora_choices(), tooltip=LORA_TIP),
                _strength("strength_video_high", "high-noise video expert (video_dit, the first steps)"),
                _strength("strength_video_low", "low-noise video expert (video_dit_2, the later steps)"),
                _strength("strength_audio", "audio tower (audio_dit)"),
                _strength("strength_bridge", "Bridge (dual_tower_bridge, the audio-video cross-attention)"),
                io.Combo.Input("video_expert", options=EXPERTS, default="auto", tooltip=EXPERT_TIP),
                io.Combo.Input("apply", options=MODES, default="merge", tooltip=MODE_TIP),
            ],
            outputs=[MovaModel.Output(display_name="model", tooltip="The same model with this LoRA added to its stack (applied by the sampler): chain another MOVA LoRA or feed MOVA Sampler."),
                     io.String.Output(display_name="info", tooltip="What was applied where, and warnings.")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, lora=None, strength_video_high=None, strength_video_low=None, strength_audio=None,
                        strength_bridge=None, video_expert=None, apply=None):
        return check_inputs(cls, dict(lora=lora, strength_video_high=strength_video_high,
                                      strength_video_low=strength_video_low, strength_audio=strength_audio,
                                      strength_bridge=strength_bridge, video_expert=video_expert, apply=apply),
                            {"lora": HINT})

    @classmethod
    def execute(cls, model, lora, strength_video_high, strength_video_low, strength_audio, strength_bridge,
                video_expert, apply) -> io.NodeOutput:
        lora_file = load_lora(lora)
        entry = LoraEntry(lora_file, LoraStrengths(video_high=strength_video_high, video_low=strength_video_low,
                                                   audio=strength_audio, bridge=strength_bridge), video_expert)
        stack = (model.lora or LoraStack()).add(entry)
        unmerged = bool(getattr(model, "lora_unmerged", False)) or apply == "alongside"
        handle = dataclasses.replace(model, lora=stack, lora_unmerged=unmerged)
        # The report only (a LoRA that fits nothing fails here, on this node): shared weights stay as
        # they are; the sampler applies the stack once, before sampling.
        report = lora_report(handle.generator, stack, unmerged=unmerged)
        log.info("MOVA LoRA: %s | %s", lora_file.summary(), report)
        info = "\n".join([lora_file.summary(), str(report)])
        _progress_text(info, cls.hidden.unique_id)
        return io.NodeOutput(handle, info)


def _progress_text(text: str, node_id) -> None:
    from server import PromptServer
    if PromptServer.instance is not None and node_id is not None:
        PromptServer.instance.send_progress_text(text, node_id)


NODES = [MovaLora]
