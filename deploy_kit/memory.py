"""Memory fit per device: weights / TP + KV cache + a stated runtime reserve vs HBM x utilisation.

KV cache is sized for the worst case the card admits: max_num_seqs sequences, each at
max_model_len tokens, so an admitted request never needs preemption. Per token and device:
2 (K and V) x layers x kv_heads_per_device x head_dim x bytes. vLLM replicates KV heads when
TP > num_kv_heads, so each device holds max(1, kv_heads // tp) heads. Layers with a sliding
window keep at most `window` tokens per sequence (vLLM allocates sliding-window layers' blocks for
the window only), so a windowed model needs less than layers x max_model_len.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .cards import DTYPE_BYTES, Card

GIB = 1024**3


class MemoryEstimate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights_gib: float              # per device
    kv_cache_gib: float             # per device, max_num_seqs x max_model_len tokens
    kv_bytes_per_token: int         # per device
    reserve_gib: float              # activations, workspace, graphs (target profile)
    need_per_device_gib: float
    available_per_device_gib: float  # device memory x gpu_memory_utilization
    device_memory_gib: float
    fits: bool
    max_full_length_seqs: int        # how many max_model_len sequences the leftover holds
    formula: str


def weight_bytes(card: Card) -> float:
    m = card.model
    if m.weight_bits:
        return m.params_b * 1e9 * m.weight_bits / 8
    dtype = card.serve.dtype or m.dtype
    return m.params_b * 1e9 * DTYPE_BYTES[dtype]


def kv_heads_per_device(kv_heads: int, tp: int) -> int:
    return max(1, kv_heads // tp)


def kv_tokens_per_seq(num_layers: int, max_model_len: int, sliding_window: int | None,
                      sliding_layers: int | None) -> float:
    """Average tokens held per layer for one full-length sequence (sliding layers hold <= window)."""
    if not sliding_window:
        return float(max_model_len)
    windowed = num_layers if sliding_layers is None else min(sliding_layers, num_layers)
    held = windowed * min(sliding_window, max_model_len) + (num_layers - windowed) * max_model_len
    return held / num_layers


def estimate(card: Card, *, tp: int, device_memory_gib: float, reserve_gib: float,
             weights_in_device_memory: bool = True, utilization: float | None = None,
             sliding_window: int | None = None, sliding_layers: int | None = None) -> MemoryEstimate:
    s, c = card.serve, card.model.config
    assert s.max_model_len is not None and s.max_num_seqs is not None and c.head_dim is not None
    dtype = s.dtype or card.model.dtype
    kv_dtype_bytes = DTYPE_BYTES[dtype]
    per_tok = 2 * c.num_layers * kv_heads_per_device(c.num_kv_heads, tp) * c.head_dim * kv_dtype_bytes
    seq_tokens = kv_tokens_per_seq(c.num_layers, s.max_model_len, sliding_window, sliding_layers)
    kv = per_tok * seq_tokens * s.max_num_seqs / GIB
    weights = weight_bytes(card) / tp / GIB if weights_in_device_memory else 0.0
    util = utilization if utilization is not None else (s.gpu_memory_utilization or 0.9)
    available = device_memory_gib * util
    need = weights + kv + reserve_gib
    leftover = available - weights - reserve_gib
    max_seqs = int(max(0.0, leftover) * GIB // (per_tok * seq_tokens)) if per_tok else 0
    formula = (
        f"weights {weights:.2f} GiB (params {card.model.params_b}B x "
        f"{card.model.weight_bits or kv_dtype_bytes * 8} bit / TP {tp})"
        f" + KV {kv:.2f} GiB ({s.max_num_seqs} seqs x {s.max_model_len} tokens x {per_tok} B"
        + (f", window {sliding_window}" if sliding_window else "") + ")"
        f" + reserve {reserve_gib:.2f} GiB = {need:.2f} GiB"
        f" vs {device_memory_gib:g} GiB x {util:g} = {available:.2f} GiB"
    )
    return MemoryEstimate(
        weights_gib=round(weights, 3), kv_cache_gib=round(kv, 3), kv_bytes_per_token=per_tok,
        reserve_gib=reserve_gib, need_per_device_gib=round(need, 3),
        available_per_device_gib=round(available, 3), device_memory_gib=device_memory_gib,
        fits=need <= available, max_full_length_seqs=max_seqs, formula=formula,
    )
