"""Options shared by several commands, defined once (type, flag names, help naming the card field).

Use as annotations:  ``def plan(card: str, target: TargetOpt = None, devices: DevicesOpt = None)``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def devices_of(value: Optional[str]) -> Optional[list[int]]:
    """``--devices 0,1`` -> [0, 1]; anything but comma-separated non-negative integers is exit 2."""
    if value is None or str(value).strip() == "":
        return None
    ids: list[int] = []
    for part in str(value).split(","):
        part = part.strip()
        if not part.isdigit() or len(part) > 6:
            raise typer.BadParameter(f"device ids are comma-separated non-negative integers, got {part!r}")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise typer.BadParameter("a device id is given twice")
    return ids


def _check_devices(value: Optional[str]) -> Optional[str]:
    devices_of(value)  # refuse bad ids while parsing (click's exit 2 with usage)
    return value


TargetOpt = Annotated[Optional[str], typer.Option(
    "--target", "-t", help="target profile (targets/<name>.yaml: ascend-a2, ascend-a3, cuda, cpu); "
                           "default ascend-a2")]
TpOpt = Annotated[Optional[int], typer.Option(
    "--tp", min=1, max=64, help="tensor-parallel size (overrides the card's serve.tensor_parallel_size)")]
# One type for --devices everywhere: validated while parsing; `devices_of(value)` gives list[int] | None.
DevicesOpt = Annotated[Optional[str], typer.Option(
    "--devices", callback=_check_devices, metavar="IDS",
    help="host device ids, comma-separated, e.g. 4,5 (default: the first free ones)")]
PortOpt = Annotated[Optional[int], typer.Option(
    "--port", min=1, max=65535, help="host port of the OpenAI-compatible endpoint (default: the target's)")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="override a card field by its dotted path, e.g. serve.max_model_len=8192 "
                                       "(repeatable; applied last)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="print what would be done; change nothing")]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace earlier output that deploykit wrote")]
ReleaseOpt = Annotated[Optional[str], typer.Option(
    "--vllm-ascend", metavar="RELEASE",
    help="vLLM-Ascend release to deploy on Ascend targets, e.g. v0.13.0 (default: the pinned final release)")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="treat warnings (e.g. upstream: not supported) as errors")]
ForceDevicesOpt = Annotated[bool, typer.Option(
    "--force-devices", help="use the --devices given even when npu-smi cannot tell which NPUs are busy")]
