"""MOVA Multi-GPU: sample with several GPUs (or CPU processes) — this ComfyUI process is rank 0, the
other ranks are worker processes started at the first run (runtime/multigpu.py)."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ..common.errors import InputError
from ..runtime import multigpu
from ..runtime.parallel_plan import STRATEGIES
from .types import CATEGORY, MovaModel, check_inputs
from .validation import fail

DEVICES_TIP = ("Devices of this machine, one rank each, ComfyUI's own device first: '0,1' (CUDA indices) or "
               "'cpu,cpu' (CPU processes, for testing). Every rank holds the whole model.")
STRATEGY_TIP = ("sequence: the video tokens of each forward are split across the GPUs (needs the 40 video heads "
                "divisible: 2, 4, 5, 8 GPUs); guidance: the 2-3 guidance passes of a step run on different "
                "GPUs; both: groups of GPUs, a pass per group, tokens split inside; auto: the fastest split for "
                "this run's passes.")
PORT_TIP = "Rendezvous port for the ranks; 0 = any free port (set one when other machines join)."
REMOTE_TIP = ("Ranks on other machines, started by hand with scripts/mova_worker.py (see README, Multi-GPU); "
              "0 = this machine only.")
ADDR_TIP = "The address other machines reach this one at (remote ranks only)."


class MovaMultiGPU(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MOVAMultiGPU", display_name="MOVA Multi-GPU", category=f"{CATEGORY}/loaders",
            description="Sample on several GPUs: sequence parallel (tokens split) and/or guidance passes in "
                        "parallel. Workers start at the first run, load the same model files with the same "
                        "options, and stop when ComfyUI frees the model.",
            inputs=[MovaModel.Input("model", tooltip="From a MOVA loader (or MOVA LoRA / MOVA Speed)."),
                    io.String.Input("devices", default="0,1", tooltip=DEVICES_TIP),
                    io.Combo.Input("strategy", options=list(STRATEGIES), default="auto", tooltip=STRATEGY_TIP),
                    io.Int.Input("port", default=0, min=0, max=65535, tooltip=PORT_TIP),
                    io.Int.Input("remote_ranks", default=0, min=0, max=63, tooltip=REMOTE_TIP, optional=True),
                    io.String.Input("master_addr", default="127.0.0.1", tooltip=ADDR_TIP, optional=True)],
            outputs=[MovaModel.Output(display_name="model",
                                      tooltip="The same model, sampled on these devices by MOVA Sampler.")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, devices=None, strategy=None, port=None, remote_ranks=None):
        checked = check_inputs(cls, {"strategy": strategy, "port": port, "remote_ranks": remote_ranks})
        if checked is not True or devices is None:
            return checked
        try:
            multigpu.device_names(devices)
        except InputError as exc:
            return fail(cls, f"devices: {exc}")
        return True

    @classmethod
    def execute(cls, model, devices, strategy, port, remote_ranks=0, master_addr="127.0.0.1") -> io.NodeOutput:
        settings = multigpu.MultiGPUSettings(devices=multigpu.device_names(devices), strategy=strategy,
                                             port=int(port), remote_ranks=int(remote_ranks),
                                             master_addr=str(master_addr).strip() or "127.0.0.1")
        multigpu.check_first_device(settings, model.device)
        text = (f"{settings.world} ranks: {', '.join(settings.devices)}"
                + (f" + {settings.remote_ranks} remote" if settings.remote_ranks else "")
                + f" · {strategy} (the layout is chosen per run from its guidance passes)")
        from server import PromptServer
        if PromptServer.instance is not None and cls.hidden.unique_id is not None:
            PromptServer.instance.send_progress_text(text, cls.hidden.unique_id)
        return io.NodeOutput(dataclasses.replace(model, parallel=settings))


NODES = [MovaMultiGPU]
