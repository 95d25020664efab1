"""Leaf helpers every layer may import: errors and safetensors file reading. Imports nothing of the pack."""
