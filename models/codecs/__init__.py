"""Codecs around the generator: Wan 2.1 video VAE, DAC audio VAE, umT5 text encoder."""
