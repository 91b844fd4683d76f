"""Boundary tests for PYTORCH_NPU_ALLOC_CONF's option grammar (deploy_kit/envcheck.py), killing the
mutants the unit tier let survive (docs/measurements/mutation/): each option's lowest legal value,
the first illegal one, and the exact message."""

from __future__ import annotations

import pytest

from deploy_kit.envcheck import check_npu_alloc_conf

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("conf", "problem"), [
    ("max_split_size_mb:21", None),
    ("max_split_size_mb:20", "max_split_size_mb must be an integer > 20 (got '20')"),
    ("max_split_size_mb:x", "max_split_size_mb must be an integer > 20 (got 'x')"),
    ("max_split_size_mb:-30", "max_split_size_mb must be an integer > 20 (got '-30')"),
    ("segment_size_mb:1", None),
    ("segment_size_mb:0", "segment_size_mb must be an integer > 0 (got '0')"),
    ("garbage_collection_threshold:0.6", None),
    ("garbage_collection_threshold:0", "garbage_collection_threshold must be in (0, 1) (got '0')"),
    ("garbage_collection_threshold:1", "garbage_collection_threshold must be in (0, 1) (got '1')"),
    ("garbage_collection_threshold:half", "garbage_collection_threshold must be a number in (0, 1) (got 'half')"),
    ("base_addr_aligned_kb:0", None),
    ("base_addr_aligned_kb:16", None),
    ("base_addr_aligned_kb:17", "base_addr_aligned_kb must be an integer 0..16 (got '17')"),
    ("page_size:1g", None),
    ("page_size:1GB", None),
    ("page_size:2m", "page_size only 1g is supported (got '2m')"),
    ("expandable_segments:True", None),
    ("expandable_segments:true", "expandable_segments must be True or False (got 'true')"),
    ("expandable_segments:True,max_split_size_mb:64",
     "expandable_segments:True cannot be combined with max_split_size_mb or garbage_collection_threshold"),
    ("expandable_segments:False,max_split_size_mb:64", None),
    ("page_size", "option 'page_size' has no ':value'"),
    ("page_size:1g,page_size:1g", "option 'page_size' given twice"),
])
def test_npu_alloc_conf_boundaries(conf, problem):
    assert check_npu_alloc_conf(conf) == problem


def test_an_option_value_with_a_colon_belongs_to_its_option():
    # split at the first ':' (the value keeps the rest): the message names page_size, not 'page_size:1g'
    assert check_npu_alloc_conf("page_size:1g:x") == "page_size only 1g is supported (got '1g:x')"


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("PYTORCH_NPU_ALLOC_CONF", "page_size:2m", "page_size only 1g is supported (got '2m')"),
    ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True", None),
    ("HCCL_OP_EXPANSION_MODE", "AIV", None),
    ("HCCL_OP_EXPANSION_MODE", "aiv", "must be one of AIV, AI_CPU, HOST, HOST_TS (got 'aiv')"),
    ("TASK_QUEUE_ENABLE", "3", "must be one of 0, 1, 2 (got '3')"),
    ("HCCL_BUFFSIZE", "1", None),
    ("HCCL_BUFFSIZE", "0", "must be a positive integer (got '0')"),
    ("HCCL_CONNECT_TIMEOUT", "-5", "must be a positive integer (got '-5')"),
    ("OMP_NUM_THREADS", "two", "must be a positive integer (got 'two')"),
    ("ASCEND_RT_VISIBLE_DEVICES", "0,1", None),
    ("ASCEND_RT_VISIBLE_DEVICES", "0, 1", "must be a comma-separated list of device ids (got '0, 1')"),
    ("ASCEND_VISIBLE_DEVICES", "3", None),
    ("ASCEND_VISIBLE_DEVICES", "3,", "must be a comma-separated list of device ids (got '3,')"),
    ("ASCEND_VISIBLE_DEVICES", "a", "must be a comma-separated list of device ids (got 'a')"),
    ("VLLM_LOGGING_LEVEL", "anything", None),
])
def test_check_value_routes_each_key_to_its_rule(key, value, problem):
    from deploy_kit.envcheck import check_value

    assert check_value(key, value) == problem


@pytest.mark.parametrize("key", ["lower", "1ABC", "A-B", "A B", "A;B", "", "X" * 129])
def test_env_key_problem_names_the_rule(key):
    from deploy_kit.envcheck import env_key_problem

    assert env_key_problem(key) == (f"env key {key!r} is not a variable name: upper-case letters, digits and '_', "
                                    "not starting with a digit (^[A-Z_][A-Z0-9_]*$)")


@pytest.mark.parametrize("key", ["A", "_", "HF_HUB_OFFLINE", "A1", "X" * 128])
def test_env_key_problem_accepts_names(key):
    from deploy_kit.envcheck import env_key_problem

    assert env_key_problem(key) is None


def test_env_key_problem_refuses_a_non_string():
    from deploy_kit.envcheck import env_key_problem

    assert env_key_problem(12).startswith("env key 12 is not a variable name")  # type: ignore[arg-type]
