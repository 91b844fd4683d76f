"""Allocator properties over random stacks on 8- and 16-NPU hosts (pure function, no I/O)."""

import pytest
from hypothesis import given, settings, strategies as st

from deploy_kit.stack.allocate import Request, allocate

pytestmark = pytest.mark.unit

TPS = st.sampled_from([1, 2, 4, 8])


@st.composite
def stacks(draw):
    n = draw(st.sampled_from([8, 16]))
    k = draw(st.integers(1, 8))
    reqs = []
    for i in range(k):
        tp = draw(TPS)
        pinned = None
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            start = draw(st.integers(0, n - 1))
            pinned = tuple(range(start, min(n, start + tp)))
        reqs.append(Request(f"d{i}", tp, pinned))
    busy = {d: "process x (pid 1)" for d in draw(st.sets(st.integers(0, n - 1), max_size=4))}
    return n, reqs, busy


@settings(max_examples=150, deadline=None)
@given(stacks())
def test_allocation_properties(case):
    n, reqs, busy = case
    a = allocate(n, reqs, busy=busy)
    used: list[int] = []
    for r in reqs:
        if r.name in a.devices:
            devs = a.devices[r.name]
            assert len(devs) == r.tp
            if r.pinned is None:
                # contiguous, in range, and aligned to the TP size when aligned space existed
                assert devs == list(range(devs[0], devs[0] + r.tp))
            else:
                assert devs == sorted(r.pinned)
            assert all(0 <= d < n and d not in busy for d in devs)
            used += devs
        else:
            # every deployment either fits or has a reason naming it
            assert any(reason.startswith(f"{r.name}:") for reason in a.reasons)
    assert len(used) == len(set(used)), "devices overlap"


@settings(max_examples=60, deadline=None)
@given(st.lists(TPS, min_size=1, max_size=8), st.sampled_from([8, 16]))
def test_unpinned_groups_are_aligned_when_they_fit(tps, n):
    # without pins or busy devices, biggest-first aligned placement is perfect packing
    reqs = [Request(f"d{i}", tp) for i, tp in enumerate(tps)]
    a = allocate(n, reqs)
    if sum(tps) <= n:
        assert a.ok, a.reasons
        for r in reqs:
            assert a.devices[r.name][0] % r.tp == 0
    else:
        assert not a.ok


def test_mixed_atlas_a2_layout():
    a = allocate(8, [Request("internlm", 2), Request("internvl", 1), Request("llama", 4)])
    assert a.devices == {"llama": [0, 1, 2, 3], "internlm": [4, 5], "internvl": [6]}


def test_pinned_first_and_every_reason_reported():
    a = allocate(8, [Request("a", 4), Request("b", 4, (2, 3, 4, 5)), Request("c", 2, (5, 6))],
                 busy={7: "deployment other"})
    assert a.devices["b"] == [2, 3, 4, 5]
    assert any("c: device 5 is also pinned by b" in r for r in a.reasons)
    assert any(r.startswith("a: no contiguous block of 4") for r in a.reasons)


def test_busy_device_names_holder():
    a = allocate(8, [Request("x", 1, (3,))], busy={3: "process python3 (pid 42)"})
    assert a.reasons == ["x: device 3 is held by process python3 (pid 42)"]


def test_groups_respected_on_a3_like_host():
    groups = [list(range(0, 8)), list(range(8, 16))]
    a = allocate(16, [Request("a", 8), Request("b", 8)], groups=groups)
    assert a.devices == {"a": list(range(8)), "b": list(range(8, 16))}
    bad = allocate(16, [Request("p", 2, (7, 8))], groups=groups)
    assert "span interconnect groups" in bad.reasons[0]
