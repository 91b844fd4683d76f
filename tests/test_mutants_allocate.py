"""Exact-message tests for deploy_kit/stack/allocate.py that kill the mutants the unit tier let
survive (mutation run, docs/measurements/mutation/): the boundaries of a pinned device's range,
the aligned-before-unaligned order, non-contiguous groups, and every refusal's wording."""

from __future__ import annotations

import pytest

from deploy_kit.stack.allocate import Request, _aligned_blocks, allocate

pytestmark = pytest.mark.unit


def test_aligned_blocks_come_before_unaligned_ones():
    assert _aligned_blocks([[0, 1, 2, 3]], 2) == [[0, 1], [2, 3], [1, 2]]
    assert _aligned_blocks([[1, 2, 3, 4, 5]], 2) == [[2, 3], [4, 5], [1, 2], [3, 4]]
    assert _aligned_blocks([[0, 1, 2]], 1) == [[0], [1], [2]]


def test_non_contiguous_ids_are_skipped_not_the_end():
    # 0,1,3,4: the pair 1-3 is not contiguous; 3-4 after it still counts
    assert _aligned_blocks([[0, 1, 3, 4]], 2) == [[0, 1], [3, 4]]
    assert _aligned_blocks([[4, 3, 1, 0]], 2) == [[0, 1], [3, 4]]  # groups are sorted first


def test_unpinned_request_skips_a_busy_aligned_block():
    a = allocate(8, [Request("a", 2)], busy={0: "pid 7"})
    assert a.devices == {"a": [2, 3]} and a.ok


@pytest.mark.parametrize(("pin", "msg"), [
    ((-1,), "p: device -1 out of range 0..7"),
    ((8,), "p: device 8 out of range 0..7"),
])
def test_pinned_device_out_of_range(pin, msg):
    assert allocate(8, [Request("p", 1, pin)]).reasons == [msg]


@pytest.mark.parametrize("pin", [(0,), (7,)])
def test_pinned_device_at_the_range_ends_is_fine(pin):
    a = allocate(8, [Request("p", 1, pin)])
    assert a.ok and a.devices == {"p": list(pin)}


def test_pinned_twice_and_busy_and_taken_reasons():
    a = allocate(8, [Request("p", 2, (3, 3))])
    assert a.reasons == ["p: a device is pinned twice in [3, 3]"] and a.devices == {}
    b = allocate(8, [Request("p", 1, (2,))], busy={2: "process python3 (pid 9)"})
    assert b.reasons == ["p: device 2 is held by process python3 (pid 9)"]
    c = allocate(8, [Request("x", 1, (5,)), Request("y", 1, (5,))])
    assert c.reasons == ["y: device 5 is also pinned by x"] and c.devices == {"x": [5]}


def test_pinned_count_must_match_tp():
    assert allocate(8, [Request("p", 2, (1,))]).reasons == ["p: 1 pinned device(s) for tensor_parallel_size 2"]


def test_pinned_tp1_never_spans_groups_but_tp2_can():
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert allocate(8, [Request("one", 1, (3,))], groups=groups).ok
    assert allocate(8, [Request("two", 2, (3, 4))], groups=groups).reasons == [
        "two: pinned devices [3, 4] span interconnect groups"]
    exact = allocate(4, [Request("all", 4, (0, 1, 2, 3))], groups=[[0, 1, 2, 3]])
    assert exact.ok and exact.devices == {"all": [0, 1, 2, 3]}  # a pin equal to its whole group


def test_no_block_reason_lists_free_and_held_devices():
    a = allocate(4, [Request("big", 4)], busy={1: "pid 5"})
    assert a.reasons == ["big: no contiguous block of 4 free device(s) in one interconnect group "
                         "(3 free: [0, 2, 3]; held: 1: pid 5)"]
    b = allocate(4, [Request("x", 2, (0, 1)), Request("y", 4)])
    assert b.reasons == ["y: no contiguous block of 4 free device(s) in one interconnect group "
                         "(2 free: [2, 3]; held: 0: x, 1: x)"]
    c = allocate(4, [Request("z", 2)], groups=[[0, 2], [1, 3]])
    assert c.reasons == ["z: no contiguous block of 2 free device(s) in one interconnect group "
                         "(4 free: [0, 1, 2, 3]; held: none)"]


def test_tp_bounds():
    assert allocate(8, [Request("z", 0)]).reasons == ["z: tensor_parallel_size must be >= 1, got 0"]
    assert allocate(8, [Request("z", 16)]).reasons == ["z: tensor_parallel_size 16 exceeds the 8 devices"]


def test_duplicate_names_listed_once_each():
    a = allocate(8, [Request("a", 1), Request("a", 1), Request("b", 1), Request("a", 1), Request("b", 1)])
    assert a.reasons[:2] == ["deployment name 'a' is used twice", "deployment name 'b' is used twice"]
    assert allocate(8, [Request("a", 1), Request("b", 1)]).ok


def test_bigger_tp_first_then_file_order():
    a = allocate(8, [Request("s1", 1), Request("b4", 4), Request("s2", 1), Request("m2", 2)])
    assert a.devices == {"b4": [0, 1, 2, 3], "m2": [4, 5], "s1": [6], "s2": [7]}
