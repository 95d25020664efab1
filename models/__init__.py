"""The MOVA joint generator as plain PyTorch (no ComfyUI imports)."""
