"""The device ledger fails safe (issue 17.4): an npu-smi that errors or prints what deploykit cannot
parse makes NPU availability unknown, and plan/up refuse with exit 3 naming npu-smi's error, unless
the operator names the devices with --force-devices. Driven through the project's fake npu-smi."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import install_fake_npu_smi

from deploy_kit.errors import Infeasible
from deploy_kit.runtime import state
from deploy_kit.stack import ledger

pytestmark = pytest.mark.unit

NPU = Path(__file__).parent / "fixtures" / "npu"


@pytest.fixture()
def fake_npu_smi(tmp_path, monkeypatch, isolated_home):
    """`npu-smi` on PATH is the project's fake; the fixture name picks what it prints."""
    monkeypatch.setenv("PATH", install_fake_npu_smi(tmp_path / "bin", "/usr/bin:/bin"))

    def use(name: str) -> None:
        monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", name)
    return use


def test_npu_smi_error_makes_availability_unknown(fake_npu_smi):
    fake_npu_smi("device_used_error.txt")  # exits 255, like npu-smi when dcmi cannot initialise
    with pytest.raises(Infeasible) as ei:
        ledger.busy_devices("ascend-a2")
    assert ei.value.exit_code == 3
    assert ei.value.reasons == ["`npu-smi info` failed (exit 255): dcmi model initialized failed, "
                                "because the device is used. ret is -8020"]
    assert "--force-devices" in (ei.value.hint or "")


def test_unparseable_output_is_unknown_too(fake_npu_smi):
    fake_npu_smi("unparseable.txt")  # exit 0, no table
    with pytest.raises(Infeasible) as ei:
        ledger.busy_devices("ascend-a2")
    assert ei.value.reasons == ["`npu-smi info` printed no NPU table deploykit can parse: "
                                "dcmi module initialize failed. ret is -8005"]


def test_force_keeps_deploykit_records_and_skips_the_unknown(fake_npu_smi):
    fake_npu_smi("device_used_error.txt")
    state.save(state.Record(name="llama", card_name="llama-3.1-8b-instruct", target="ascend-a2",
                            host_devices=["3"], port=8103, project="p"))
    assert ledger.busy_devices("ascend-a2", force=True) == {3: "deployment llama (compose project p)"}
    assert ledger.busy_devices("ascend-a2", force=True, exclude={"llama"}) == {}


def test_cpu_target_never_asks_npu_smi(fake_npu_smi):
    fake_npu_smi("device_used_error.txt")
    assert ledger.busy_devices("cpu") == {}


@pytest.mark.parametrize("fixture,expected", [
    ("a2_idle.txt", {}),
    ("a2_busy_warning.txt", {0: "process python3.10 (pid 412876)"}),
    # several processes on one NPU; a process whose name npu-smi printed empty
    ("a2_shared.txt", {0: "process python3.11 (pid 1201), process python3.11 (pid 1202)",
                       2: "process ? (pid 3303)"}),
    ("a2_sparse.txt", {6: "process vllm (pid 77)"}),            # NPUs 0,1,4,6 only
    ("a2_wide_26.txt", {5: "process VLLM::EngineCore (pid 90210)"}),   # the wider 26.0 table
    ("a3_dual.txt", {1: "process python3.11 (pid 77123)"}),
])
def test_real_output_shapes(fake_npu_smi, fixture, expected):
    fake_npu_smi(fixture)
    assert ledger.busy_devices("ascend-a2") == expected


def test_sparse_ids_are_parsed_as_printed():
    from deploy_kit.doctor.npusmi import parse_npu_smi_info

    assert parse_npu_smi_info((NPU / "a2_sparse.txt").read_text()).npu_ids() == [0, 1, 4, 6]
    wide = parse_npu_smi_info((NPU / "a2_wide_26.txt").read_text())
    assert wide.version == "26.0.rc1" and wide.npu_ids() == list(range(8))
    assert wide.chips_of(5)[0].hbm_used_mb == 30000 and wide.chips_of(5)[0].hbm_total_mb == 65536


def test_up_refuses_naming_npu_smi_unless_devices_are_forced(fake_npu_smi, capsys, free_port):
    from deploy_kit.cli import main

    fake_npu_smi("device_used_error.txt")
    args = ["up", "llama-3.1-8b-instruct", "--target", "ascend-a2", "--port", str(free_port), "--dry-run"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: NPU availability unknown (fix npu-smi, or name free NPUs yourself")
    assert "`npu-smi info` failed (exit 255): dcmi model initialized failed" in err
    assert main([*args, "--force-devices"]) == 2  # forcing needs the devices named
    assert "--force-devices needs the devices named with --devices" in capsys.readouterr().err
    assert main([*args, "--devices", "2", "--force-devices"]) == 0
    out = capsys.readouterr().out
    assert "would deploy llama-3.1-8b-instruct" in out and "devices: ['2']" in out
