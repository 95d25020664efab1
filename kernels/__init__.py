"""Speed and memory engines behind small interfaces: attention dispatch, quantized linears, offload."""
