"""ComfyUI entry point of the MOVA node pack (joint video + audio generation).

ComfyUI imports this folder under a name derived from its path: everything inside uses relative
imports. Nothing heavy happens at import time; the node modules load when ComfyUI asks for them.
Tests and scripts import the pack as `mova_pack` without running this file (tests/conftest.py).
"""
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import MovaExtension
    return MovaExtension()
