"""MOVA Bridge Guidance: dual CFG (text guidance + guidance against a "Bridge off" pass) for the sampler.

The node only builds the settings (models/sampling/guidance.py does the planning and the math); the sampler
consumes the MOVA_GUIDANCE output instead of its own two cfg values and shows the forwards per step.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..models.sampling.guidance import GuidanceSettings, make_guidance
from .options import BRIDGE_OFF as BRIDGE_OFF_CHOICES, GUIDANCE_FORMS
from .types import CATEGORY, MovaConditioning, MovaGuidance, check_inputs
from .validation import fail

log = logging.getLogger("mova")
FORMS, BRIDGE_OFF = GUIDANCE_FORMS, BRIDGE_OFF_CHOICES

TEXT_TIP = ("Text guidance scale for the {m} (classifier-free guidance against the negative prompt). "
            "MOVA released: 5.0. 1 = no text guidance, and the negative pass is skipped when the other "
            "terms do not need it.")
BRIDGE_TIP = ("Bridge guidance scale of the {m} velocity: guidance along the {d} conditioning of the "
              "Bridge, against a pass with the Bridge switched off (condition scale 0). Higher = stronger "
              "audio-video coupling (lip sync, impacts on time), at some cost in naturalness. Neutral "
              "(no extra pass, released behaviour): 1.0 for the nested form, 0.0 for independent.")
FORM_TIP = ("nested (InstructPix2Pix, the paper's dual CFG; default): v = A + s_B·(B − A) + s_T·(C − B) with "
            "A = negative text / Bridge off, B = negative text / Bridge on, C = prompt / Bridge on; s_B = 1 is "
            "the released text CFG. independent: v = B + s_T·(C − B) + s_B·(C − N), N = prompt / Bridge off; "
            "s_B = 0 is the released text CFG.")
OFF_TIP = ("How the Bridge-off pass is made. both = one pass with both directions off serves video and "
           "audio (cheapest); separate = the video's pass turns off only audio→video, the audio's only "
           "video→audio (up to one more forward per step).")
START_TIP = ("Bridge guidance starts at this fraction of the steps (0 = first step). Outside the range the "
             "step is plain text CFG and the Bridge-off pass is not run.")
END_TIP = "Bridge guidance ends before this fraction of the steps (1 = through the last step)."
NEG_TIP = ("Optional negative prompt for the audio only (e.g. 'muffled, noise, music' when the video "
           "negative is about image quality). Costs one more forward per step while audio text "
           "guidance is on. Without it the audio uses the sampler's negative.")
BATCH_TIP = ("Run the passes that share a Bridge setting as one batched forward: fewer, larger model calls "
             "(faster on a GPU with memory to spare, same result up to float rounding). Off = one forward per "
             "pass, least memory.")


class MovaBridgeGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVABridgeGuidance", display_name="MOVA Bridge Guidance", category=f"{CATEGORY}/sampling",
            description="Dual classifier-free guidance for MOVA: separate text guidance for video and audio, "
                        "plus Bridge guidance (audio→video and video→audio) against a pass with the "
                        "cross-modal Bridge off. Connect to the sampler's guidance input; passes a scale "
                        "makes redundant are skipped, the sampler shows the forwards per step.",
            inputs=[
                io.Float.Input("video_text_scale", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip=TEXT_TIP.format(m="video")),
                io.Float.Input("audio_text_scale", default=5.0, min=0.0, max=30.0, step=0.1,
                               tooltip=TEXT_TIP.format(m="audio")),
                io.Float.Input("a2v_bridge_scale", default=2.0, min=-10.0, max=30.0, step=0.1,
                               tooltip=BRIDGE_TIP.format(m="video", d="audio→video")),
                io.Float.Input("v2a_bridge_scale", default=2.0, min=-10.0, max=30.0, step=0.1,
                               tooltip=BRIDGE_TIP.format(m="audio", d="video→audio")),
                io.Combo.Input("form", options=FORMS, default="nested", tooltip=FORM_TIP),
                io.Combo.Input("bridge_off", options=BRIDGE_OFF, default="both", tooltip=OFF_TIP),
                io.Float.Input("bridge_start", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=START_TIP),
                io.Float.Input("bridge_end", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=END_TIP),
                io.Boolean.Input("batch_passes", default=False, tooltip=BATCH_TIP),
                MovaConditioning.Input("audio_negative", optional=True, tooltip=NEG_TIP),
            ],
            outputs=[MovaGuidance.Output(display_name="guidance", tooltip="The guidance settings, for MOVA Sampler's (or Extend's) guidance input; they replace its cfg values.")])

    @classmethod
    def validate_inputs(cls, video_text_scale=None, audio_text_scale=None, a2v_bridge_scale=None,
                        v2a_bridge_scale=None, form=None, bridge_off=None, bridge_start=None, bridge_end=None,
                        batch_passes=None):
        checked = check_inputs(cls, dict(
            video_text_scale=video_text_scale, audio_text_scale=audio_text_scale, a2v_bridge_scale=a2v_bridge_scale,
            v2a_bridge_scale=v2a_bridge_scale, form=form, bridge_off=bridge_off, bridge_start=bridge_start,
            bridge_end=bridge_end))
        if checked is not True:
            return checked
        if bridge_start is not None and bridge_end is not None and bridge_start > bridge_end:
            return fail(cls, f"bridge_start ({bridge_start}) is after bridge_end ({bridge_end}): the Bridge "
                             "guidance range would be empty. Set start ≤ end (0 and 1 = every step).")
        return True

    @classmethod
    def execute(cls, video_text_scale, audio_text_scale, a2v_bridge_scale, v2a_bridge_scale, form, bridge_off,
                bridge_start, bridge_end, batch_passes, audio_negative=None) -> io.NodeOutput:
        settings = GuidanceSettings.from_widgets(dict(
            video_text_scale=video_text_scale, audio_text_scale=audio_text_scale, a2v_bridge_scale=a2v_bridge_scale,
            v2a_bridge_scale=v2a_bridge_scale, form=form, bridge_off=bridge_off, bridge_start=bridge_start,
            bridge_end=bridge_end, batch_passes=batch_passes))
        context = None if audio_negative is None else audio_negative.context
        guidance = make_guidance(settings, audio_negative=context)
        log.info("MOVA guidance: %s (e.g. at 25 steps: %s)", settings, guidance.summary(25))
        return io.NodeOutput(guidance)


NODES = [MovaBridgeGuidance]
