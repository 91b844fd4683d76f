"""Parse the table `npu-smi info` prints (Ascend driver tool).

The format is a fixed-width ASCII table; real outputs pasted in vLLM-Ascend issues look like:

    | NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
    | Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
    +===========================+===============+====================================================+
    | 0     910B3               | OK            | 95.2        38                0    / 0             |
    | 0                         | 0000:C1:00.0  | 0           0    / 0          3378 / 65536         |

followed by a process table (`| NPU  Chip | Process id | Process name | Process memory(MB) |`).
A3 (910C) servers print two chips per NPU with a `Chip  Phy-ID` header. Columns are split on
`|` and then on whitespace, never on fixed offsets, because widths differ between driver versions
(e.g. `20701/ 65536` without a space).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

_NUM = r"-?\d+(?:\.\d+)?"
_USAGE = re.compile(r"(\d+)\s*/\s*(\d+)")


class NpuProcess(BaseModel):
    npu: int
    chip: int
    pid: int
    name: str
    memory_mb: int
    pid_in_container: str | None = None


class NpuChip(BaseModel):
    npu: int
    chip: int
    phy_id: int | None = None
    name: str
    health: str
    power_w: float | None = None
    temp_c: int | None = None
    bus_id: str
    aicore_pct: int | None = None
    hbm_used_mb: int
    hbm_total_mb: int
    processes: list[NpuProcess] = Field(default_factory=list)

    @property
    def hbm_free_mb(self) -> int:
        return max(0, self.hbm_total_mb - self.hbm_used_mb)


class NpuSmiInfo(BaseModel):
    version: str | None = None
    chips: list[NpuChip] = Field(default_factory=list)

    def npu_ids(self) -> list[int]:
        return sorted({c.npu for c in self.chips})

    def chips_of(self, npu: int) -> list[NpuChip]:
        return [c for c in self.chips if c.npu == npu]


def chip_family(name: str) -> str:
    """Map the Name column to the family the compatibility table uses.

    910B1..910B4, 910B2C -> 910B (Atlas A2); `Ascend910` is what A3 (910C, dual-die) servers
    print; 310P3 -> 310P; 910A / 910ProB (the original 910) -> 910, unsupported by vLLM-Ascend.
    """
    n = name.strip().upper().replace(" ", "")
    if n.startswith("910B"):
        return "910B"
    if n.startswith("910C") or n == "ASCEND910" or n.startswith("ASCEND910C"):
        return "910C"
    if n.startswith("310P"):
        return "310P"
    if n.startswith("910") or n.startswith("ASCEND910"):
        return "910"
    return name.strip()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _process(cells: list[str]) -> NpuProcess | None:
    """A process-table row: `| npu chip | pid | name | memory | [pid in container] |` (name may be empty)."""
    first = cells[0].split()
    if len(cells) < 4 or len(first) < 2 or not (first[0].isdigit() and first[1].isdigit() and cells[1].isdigit()):
        return None
    mem = re.match(r"\d+", cells[3])
    return NpuProcess(npu=int(first[0]), chip=int(first[1]), pid=int(cells[1]), name=cells[2],
                      memory_mb=int(mem.group(0)) if mem else 0,
                      pid_in_container=cells[4] if len(cells) > 4 and cells[4] else None)


def _chip(row1: list[str], row2: list[str]) -> NpuChip | None:
    """Row 1 `<npu> <name> | health | power temp hugepages`, row 2 `<chip> [phy-id] | bus-id | aicore mem hbm`."""
    first = row2[0].split()
    if not first or not first[0].isdigit():
        return None
    n1 = row1[0].split()
    metrics1 = row1[2].split()
    usages = _USAGE.findall(row2[2])
    aicore = re.match(r"\s*(\d+)", row2[2])
    hbm_used, hbm_total = (int(usages[-1][0]), int(usages[-1][1])) if usages else (0, 0)
    return NpuChip(npu=int(n1[0]), name=" ".join(n1[1:]), health=row1[1],
                   power_w=_float(metrics1[0]) if metrics1 else None,
                   temp_c=_int(metrics1[1]) if len(metrics1) > 1 else None,
                   chip=int(first[0]), phy_id=int(first[1]) if len(first) > 1 and first[1].isdigit() else None,
                   bus_id=row2[1], aicore_pct=int(aicore.group(1)) if aicore else None,
                   hbm_used_mb=hbm_used, hbm_total_mb=hbm_total)


def _attach(info: NpuSmiInfo, proc: NpuProcess) -> None:
    target = next((c for c in info.chips if (c.npu, c.chip) == (proc.npu, proc.chip)), None)
    if target is None:  # the chip id in the process table is the logical chip
        target = next((c for c in info.chips if c.npu == proc.npu), None)
    if target is not None:
        target.processes.append(proc)


def _table_rows(text: str) -> list[list[str]]:
    return [_cells(ln.strip()) for ln in text.splitlines() if ln.strip().startswith("|")]


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse `npu-smi info` output. Unknown lines are ignored; a table with no chips parses empty."""
    info = NpuSmiInfo()
    m = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", text)
    if m:
        info.version = m.group(2)
    in_proc = False
    pending: list[str] | None = None  # first row of a chip pair
    for cells in _table_rows(text):
        head = " ".join(cells).lower()
        if "process id" in head and "process name" in head:
            in_proc, pending = True, None
        elif head.startswith("npu") and "health" in head:
            in_proc = False
        elif head.startswith("chip") and "bus-id" in head:
            continue
        elif in_proc:
            proc = _process(cells) if "no running processes" not in head else None
            if proc is not None:
                _attach(info, proc)
        elif len(cells) >= 3 and pending is None:
            first = cells[0].split()
            if len(first) >= 2 and first[0].isdigit() and not re.match(r"^[0-9A-F]{4}:", cells[1], re.I):
                pending = cells
        elif len(cells) >= 3 and pending is not None:
            chip = _chip(pending, cells)
            pending = None
            if chip is not None:
                info.chips.append(chip)
    return info


def _float(s: str) -> float | None:
    return float(s) if re.fullmatch(_NUM, s) else None


def _int(s: str) -> int | None:
    return int(float(s)) if re.fullmatch(_NUM, s) else None
