"""The upstream data deploykit pins: release table, support table, target provenance, env grammar,
HBM figures and the KV estimate with sliding windows."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO

pytestmark = pytest.mark.unit

UPSTREAM = re.compile(r"https://(github\.com/vllm-project/vllm-ascend/(blob|issues)/|docs\.vllm\.ai/)")


def test_every_catalog_architecture_has_an_upstream_status_with_a_source():
    from deploy_kit.targets import load_support

    table = load_support()
    archs = {yaml.safe_load(p.read_text())["model"]["architecture"] for p in (REPO / "models").glob("*.yaml")}
    assert archs <= set(table.architectures), archs - set(table.architectures)
    for arch, entry in table.architectures.items():
        for e in entry.statuses:
            assert UPSTREAM.match(e.source), (arch, e.source)
        assert entry.statuses == sorted(entry.statuses, key=lambda e: _key(e.since)), arch
    assert table.architectures["InternVLChatModel"].issue == "https://github.com/vllm-project/vllm-ascend/issues/2064"
    assert table.architectures["HunYuanMoEV1ForCausalLM"].first_release == "v0.19.1rc1"
    alt = table.architectures["InternVLChatModel"].alternative
    assert (REPO / "models" / f"{alt}.yaml").is_file()


def _key(tag: str):
    from deploy_kit.doctor.compat import version_key

    return version_key(tag)


def test_vllm_table_one_vllm_release_per_target():
    from deploy_kit.targets import vllm_table

    rows = {r[0]: r for r in vllm_table()}
    assert rows["ascend-a2"] == ("ascend-a2", "quay.io/ascend/vllm-ascend:v0.23.0", "v0.23.0", "0.23.0")
    assert rows["ascend-a3"] == ("ascend-a3", "quay.io/ascend/vllm-ascend:v0.23.0-a3", "v0.23.0", "0.23.0")
    assert rows["cuda"] == ("cuda", "vllm/vllm-openai:v0.23.0", "-", "0.23.0")
    # the Ascend pin and its compatibility row agree on the vLLM release
    from deploy_kit.doctor.compat import load_compat

    row = load_compat().row("v0.23.0")
    assert row is not None and (row.vllm, row.cann, row.torch_npu) == ("0.23.0", "9.1.0", "2.10.0.post4")


@pytest.mark.parametrize("target", ["ascend-a2", "ascend-a3", "ascend-a2-910b4"])
def test_target_files_cite_public_sources_only(target):
    from deploy_kit.targets import load_target

    text = (REPO / "targets" / f"{target}.yaml").read_text()
    assert "../shared" not in text and "/work/" not in text
    prof = load_target(target)
    for key in [f"env:{k}" for k in {**prof.env, **prof.env_tp}] + [f"mount:{m.target}" for m in prof.mounts]:
        assert key in prof.provenance, key
    assert prof.device_memory_source and "8621" in prof.device_memory_source


def test_hbm_figures_per_variant():
    from deploy_kit.targets import load_target

    a2, b4, a3 = (load_target(n) for n in ("ascend-a2", "ascend-a2-910b4", "ascend-a3"))
    assert (a2.device_memory_gib, a2.device_memory_nominal_gib) == (60.96, 64)
    assert (b4.device_memory_gib, b4.device_memory_nominal_gib) == (30.48, 32)
    assert (a3.min_devices, a2.min_devices) == (2, 1)


# --------------------------------------------------------------- PYTORCH_NPU_ALLOC_CONF grammar

@pytest.mark.parametrize("value", [
    "expandable_segments:True", "expandable_segments:False", "max_split_size_mb:256",
    "max_split_size_mb:32,garbage_collection_threshold:0.6",          # torch_npu example 1
    "expandable_segments:True,base_addr_aligned_kb:16",               # torch_npu example 2
    "expandable_segments:True,page_size:1g", "expandable_segments:True,segment_size_mb:40",
    "expandable_segments:False,max_split_size_mb:64",
])
def test_alloc_conf_accepts_every_documented_option(value):
    from deploy_kit.envcheck import check_npu_alloc_conf

    assert check_npu_alloc_conf(value) is None


@pytest.mark.parametrize("value,problem", [
    ("max_split_size_mb:20", "max_split_size_mb must be an integer > 20 (got '20')"),
    ("garbage_collection_threshold:1", "garbage_collection_threshold must be in (0, 1) (got '1')"),
    ("base_addr_aligned_kb:17", "base_addr_aligned_kb must be an integer 0..16 (got '17')"),
    ("page_size:2g", "page_size only 1g is supported (got '2g')"),
    ("expandable_segments:true", "expandable_segments must be True or False (got 'true')"),
    ("expandable_segments:True,max_split_size_mb:64",
     "expandable_segments:True cannot be combined with max_split_size_mb or garbage_collection_threshold"),
    ("foo:1", "unknown option 'foo' (legal: max_split_size_mb, garbage_collection_threshold, "
              "expandable_segments, base_addr_aligned_kb, page_size, segment_size_mb)"),
    ("page_size", "option 'page_size' has no ':value'"),
    ("page_size:1g,page_size:1g", "option 'page_size' given twice"),
])
def test_alloc_conf_refuses_with_the_reason(value, problem):
    from deploy_kit.envcheck import check_npu_alloc_conf

    assert check_npu_alloc_conf(value) == problem


@given(st.text(max_size=60))
def test_alloc_conf_never_raises(value):
    from deploy_kit.envcheck import check_npu_alloc_conf

    result = check_npu_alloc_conf(value)
    assert result is None or isinstance(result, str)


@given(st.integers(min_value=21, max_value=10**6), st.floats(min_value=0.01, max_value=0.99))
def test_alloc_conf_numbers_in_range_pass(split, threshold):
    from deploy_kit.envcheck import check_npu_alloc_conf

    assert check_npu_alloc_conf(f"max_split_size_mb:{split},garbage_collection_threshold:{threshold}") is None


# --------------------------------------------------------------- KV estimate with sliding windows

def test_sliding_window_caps_kv_per_layer():
    from deploy_kit.cardload import load_card, resolve
    from deploy_kit.memory import GIB, estimate, kv_tokens_per_seq

    assert kv_tokens_per_seq(32, 32768, None, None) == 32768
    assert kv_tokens_per_seq(32, 32768, 4096, None) == 4096              # every layer windowed
    assert kv_tokens_per_seq(32, 32768, 4096, 16) == (16 * 4096 + 16 * 32768) / 32
    assert kv_tokens_per_seq(32, 2048, 4096, None) == 2048               # window wider than the sequence
    card = resolve(load_card("seed-x-instruct-7b"), "ascend-a2", {"gpu_memory_utilization": 0.9}, {}).card
    full = estimate(card, tp=1, device_memory_gib=60.96, reserve_gib=4)
    windowed = estimate(card, tp=1, device_memory_gib=60.96, reserve_gib=4, sliding_window=4096)
    per_tok = 2 * 32 * 8 * 128 * 2
    assert full.kv_cache_gib == round(per_tok * 8192 * 16 / GIB, 3) == 16.0
    assert windowed.kv_cache_gib == round(per_tok * 4096 * 16 / GIB, 3) == 8.0
    assert "window 4096" in windowed.formula
