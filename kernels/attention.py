"""One attention entry point for every attention in models/ (towers, text cross-attention, Bridge)."""
import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """q [B, Lq, H*D], k/v [B, Lk, H*D] -> [B, Lq, H*D]; no mask (MOVA attends text padding)."""
    b, lq, width = q.shape
    d = width // num_heads
    q = q.view(b, lq, num_heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], num_heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], num_heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, width)
