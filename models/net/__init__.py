"""The joint generator's network: DiT towers, Bridge, aligned RoPE, joint forward, generator."""
