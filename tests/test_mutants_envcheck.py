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
