"""deploy_kit/memory.py to the byte: each estimate's fields computed by hand from the formula
(2 x layers x kv heads per device x head_dim x dtype bytes per token; weights / TP), so a changed
operator, constant or rounding is caught (the mutation run: docs/measurements/mutation/)."""

from __future__ import annotations

import pytest

from deploy_kit.cardload import load_card, resolve
from deploy_kit.memory import estimate, kv_heads_per_device, kv_tokens_per_seq, weight_bytes

pytestmark = pytest.mark.unit


def _llama(*sets: str):
    """Llama-3.1-8B: 8.03B params, 32 layers, 8 KV heads, head_dim 128, bf16."""
    base = ["serve.max_model_len=8192", "serve.max_num_seqs=4", "serve.dtype=bfloat16"]
    return resolve(load_card("llama-3.1-8b-instruct"), "cuda", {}, {}, [*base, *sets]).card


def test_tp2_bf16_by_hand():
    e = estimate(_llama(), tp=2, device_memory_gib=64, reserve_gib=3.0, utilization=0.9)
    # per token: 2 x 32 layers x (8 // 2) heads x 128 x 2 B = 65536 B; KV 65536 x 8192 x 4 / 2^30 = 2 GiB
    # weights 8.03e9 x 2 B / 2 / 2^30 = 7.4785 GiB; leftover 57.6 - 7.4785 - 3 = 47.12 GiB / 0.5 GiB per seq
    assert e.model_dump() == {
        "weights_gib": 7.479, "kv_cache_gib": 2.0, "kv_bytes_per_token": 65536, "reserve_gib": 3.0,
        "need_per_device_gib": 12.479, "available_per_device_gib": 57.6, "device_memory_gib": 64.0,
        "fits": True, "max_full_length_seqs": 94,
        "formula": "weights 7.48 GiB (params 8.03B x 16 bit / TP 2) + KV 2.00 GiB (4 seqs x 8192 tokens x "
                   "65536 B) + reserve 3.00 GiB = 12.48 GiB vs 64 GiB x 0.9 = 57.60 GiB"}


def test_half_the_layers_windowed_by_hand():
    e = estimate(_llama(), tp=1, device_memory_gib=24, reserve_gib=2.0, utilization=0.9,
                 sliding_window=4096, sliding_layers=16)
    # tokens per layer: (16 x 4096 + 16 x 8192) / 32 = 6144; KV 131072 B x 6144 x 4 / 2^30 = 3 GiB
    assert (e.kv_bytes_per_token, e.kv_cache_gib, e.weights_gib, e.need_per_device_gib) == (131072, 3.0, 14.957, 19.957)
    assert e.max_full_length_seqs == 6  # (21.6 - 14.957 - 2) GiB / 0.75 GiB per sequence = 6.19
    assert e.formula.endswith("(4 seqs x 8192 tokens x 131072 B, window 4096) + reserve 2.00 GiB = 19.96 GiB "
                              "vs 24 GiB x 0.9 = 21.60 GiB")


def test_need_equal_to_available_fits_and_more_does_not():
    card = _llama()
    fit = estimate(card, tp=1, device_memory_gib=100, reserve_gib=0.0, utilization=1.0)
    exact = fit.weights_gib + fit.kv_cache_gib
    raw_need = weight_bytes(card) / 2**30 + 131072 * 8192 * 4 / 2**30
    assert estimate(card, tp=1, device_memory_gib=raw_need, reserve_gib=0.0, utilization=1.0).fits is True
    tight = estimate(card, tp=1, device_memory_gib=raw_need - 0.001, reserve_gib=0.0, utilization=1.0)
    assert tight.fits is False and round(exact, 3) == round(raw_need, 3)


def test_nothing_left_means_zero_full_length_sequences():
    e = estimate(_llama(), tp=1, device_memory_gib=8, reserve_gib=2.0, utilization=0.9)
    assert e.fits is False and e.max_full_length_seqs == 0  # 7.2 - 14.96 - 2 < 0


def test_weights_outside_device_memory_count_zero():
    e = estimate(_llama(), tp=1, device_memory_gib=8, reserve_gib=0.5, utilization=0.5,
                 weights_in_device_memory=False)
    assert (e.weights_gib, e.need_per_device_gib, e.available_per_device_gib) == (0.0, 4.5, 4.0)


def test_utilization_defaults_to_the_cards_then_0_9():
    card = _llama("serve.gpu_memory_utilization=0.5")
    assert estimate(card, tp=1, device_memory_gib=64, reserve_gib=0).available_per_device_gib == 32.0
    card.serve.gpu_memory_utilization = None
    assert estimate(card, tp=1, device_memory_gib=64, reserve_gib=0).available_per_device_gib == 57.6


@pytest.mark.parametrize(("kv_heads", "tp", "per_device"), [(8, 1, 8), (8, 2, 4), (8, 3, 2), (8, 8, 1), (8, 16, 1),
                                                            (1, 4, 1)])
def test_kv_heads_are_replicated_when_tp_exceeds_them(kv_heads, tp, per_device):
    assert kv_heads_per_device(kv_heads, tp) == per_device


@pytest.mark.parametrize(("window", "layers", "expected"), [
    (None, None, 8192.0), (0, 16, 8192.0),
    (4096, None, 4096.0),             # every layer windowed
    (4096, 16, 6144.0),               # half of 32
    (4096, 64, 4096.0),               # more windowed layers than layers: all 32
    (16384, 16, 8192.0),              # a window longer than the context holds the context
])
def test_tokens_held_per_layer(window, layers, expected):
    assert kv_tokens_per_seq(32, 8192, window, layers) == expected


def test_weight_bytes_follow_quantisation_then_serve_dtype():
    card = _llama()
    assert weight_bytes(card) == pytest.approx(16.06e9, rel=1e-12)
    card.serve.dtype = "float32"
    assert weight_bytes(card) == pytest.approx(32.12e9, rel=1e-12)
    card.model.weight_bits = 4
    assert weight_bytes(card) == pytest.approx(4.015e9, rel=1e-12)
