"""npu-smi parsing and the pinned compatibility table."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_kit.doctor import compat
from deploy_kit.doctor.npusmi import chip_family, parse_npu_smi_info

pytestmark = pytest.mark.unit

NPU = Path(__file__).parent / "fixtures" / "npu"


def test_parse_idle_a2():
    info = parse_npu_smi_info((NPU / "a2_idle.txt").read_text())
    assert info.version == "24.1.rc2"
    assert info.npu_ids() == list(range(8))
    c = info.chips[0]
    assert (c.name, c.health, c.bus_id, c.hbm_used_mb, c.hbm_total_mb, c.aicore_pct) == (
        "910B3", "OK", "0000:C1:00.0", 3378, 65536, 0)
    assert c.power_w == 90.0 and c.temp_c == 36
    assert not any(ch.processes for ch in info.chips)


def test_parse_busy_and_warning():
    info = parse_npu_smi_info((NPU / "a2_busy_warning.txt").read_text())
    n0 = info.chips_of(0)[0]
    assert n0.hbm_used_mb == 61234 and n0.aicore_pct == 87  # "61234/ 65536": no space before '/'
    assert [(p.pid, p.name, p.memory_mb) for p in n0.processes] == [(412876, "python3.10", 57856)]
    assert info.chips_of(3)[0].health == "Warning"
    assert sum(len(c.processes) for c in info.chips) == 1


def test_parse_a3_dual_die():
    info = parse_npu_smi_info((NPU / "a3_dual.txt").read_text())
    assert info.npu_ids() == [0, 1]
    assert [(c.npu, c.chip, c.phy_id) for c in info.chips] == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert chip_family(info.chips[0].name) == "910C"
    assert info.chips_of(0)[1].power_w is None  # second die prints "-"
    assert info.chips_of(1)[0].processes[0].pid == 77123


def test_parse_real_pasted_issue_excerpt():
    # Verbatim shape from a vLLM-Ascend issue (trailing spaces, 910B2C, "20701/ 65536").
    text = "".join(f"{ln} \n" for ln in """\
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B2C              | OK            | 88.6        51                0    / 0             |
| 0                         | 0000:5A:00.0  | 0           0    / 0          20701/ 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| 0       0                 | 124528        | python3.8                | 17400                   |
+---------------------------+---------------+----------------------------------------------------+
""".splitlines())  # npu-smi pads every line with a trailing space
    info = parse_npu_smi_info(text)
    assert len(info.chips) == 1 and info.chips[0].hbm_used_mb == 20701
    assert info.chips[0].processes[0].memory_mb == 17400
    assert chip_family("910B2C") == "910B"


def test_parse_garbage_is_empty():
    assert parse_npu_smi_info((NPU / "device_used_error.txt").read_text()).chips == []


@pytest.mark.parametrize("name,fam", [("910B4", "910B"), ("Ascend910", "910C"), ("310P3", "310P"),
                                      ("910ProB", "910"), ("910A", "910")])
def test_chip_family(name, fam):
    assert chip_family(name) == fam


def test_compat_table_rows_have_sources_and_known_chips():
    table = compat.load_compat()
    assert len(table.rows) >= 8
    for row in table.rows:
        assert row.sources and all(s.startswith("https://") for s in row.sources), row.tag
        assert set(row.chips) <= {"910B", "910C", "310P"}
        assert row.vllm and row.cann and row.torch_npu


@pytest.mark.parametrize("a,b", [("24.1.rc1", "23.0.3"), ("24.1.0", "24.1.rc3"), ("24.1.rc3", "24.1.rc2"),
                                 ("25.0.RC1", "24.1.0"), ("26.0.rc1", "26.0.RC1")])
def test_version_order(a, b):
    assert compat.version_ge(a, b)


def test_version_order_strict():
    assert not compat.version_ge("23.0.3", "24.1.rc1")
    assert not compat.version_ge("24.1.rc3", "24.1.0")


def test_split_image_tag():
    assert compat.split_image_tag("quay.io/ascend/vllm-ascend:v0.13.0-a3") == ("v0.13.0", "a3")
    assert compat.split_image_tag("m.daocloud.io/quay.io/ascend/vllm-ascend:v0.9.1rc3") == ("v0.9.1rc3", "")
    assert compat.split_image_tag("v0.7.3.post1-openeuler") == ("v0.7.3.post1", "openeuler")


def test_check_image_driver_ok():
    assert compat.check_image_against_driver("quay.io/ascend/vllm-ascend:v0.7.3", "24.1.rc2", "910B") == []


def test_check_image_driver_too_old_fails():
    issues = compat.check_image_against_driver("quay.io/ascend/vllm-ascend:v0.7.3", "23.0.3", "910B")
    assert [i.severity for i in issues] == ["fail"]
    assert "24.1.rc1" in issues[0].message and issues[0].source.startswith("https://")


def test_check_image_variant_must_match_chip():
    issues = compat.check_image_against_driver("v0.13.0-a3", "25.5.0", "910B")
    assert any(i.severity == "fail" and "910C" in i.message for i in issues)
    issues = compat.check_image_against_driver("v0.13.0", "25.5.0", "910C")
    assert any(i.severity == "fail" and "v0.13.0-a3" in i.fix for i in issues)


def test_check_image_recommended_driver_warns():
    issues = compat.check_image_against_driver("v0.13.0", "24.1.0", "910B")
    assert [i.severity for i in issues] == ["warn"] and "25.5.0" in issues[0].message


def test_check_unknown_tag_and_old_chip():
    assert compat.check_image_against_driver("v9.9.9", "25.0.0")[0].severity == "warn"
    issues = compat.check_image_against_driver("v0.7.3", "24.1.rc2", "910")
    assert any(i.severity == "fail" and "original Ascend 910" in i.message for i in issues)


def test_tags_for_driver():
    assert "v0.7.3" in compat.tags_for_driver("24.1.rc2")
    # below v0.7.3's pinned minimum (24.1.rc1) it is not offered; rows with no pinned minimum
    # (upstream says "see the CANN release note") stay listed: doctor warns on them instead
    tags = compat.tags_for_driver("23.0.6")
    assert "v0.7.3" not in tags and "v0.23.0" in tags


def test_read_driver_version_fixture():
    assert compat.read_driver_version(NPU / "driver" / "ok")[0] == "24.1.rc2"
    ver, why = compat.read_driver_version(NPU / "driver" / "missing")
    assert ver is None and "version.info" in why
