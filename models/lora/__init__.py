"""LoRA: file formats, detection, the stack and how it is applied."""
