"""The pinned vLLM-Ascend compatibility table (targets/ascend-compat.yaml) and checks against it.

`check_image_against_driver(image_tag, driver_version)` is the contract the planner and doctor use:
it returns a list of Issue (severity "fail" = refuse, "warn" = go on but say so). Version facts live
in the YAML, never in this code.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from .. import paths

DEFAULT_DRIVER_ROOT = "/usr/local/Ascend/driver"


class Issue(BaseModel):
    severity: str  # "fail" | "warn"
    message: str
    fix: str = ""
    source: str | None = None


class CompatRow(BaseModel):
    tag: str
    vllm: str
    python: str | None = None
    cann: str
    torch: str | None = None
    torch_npu: str | None = None
    chips: list[str] = Field(default_factory=list)
    min_driver: str | None = None
    recommended_driver: str | None = None
    sources: list[str] = Field(default_factory=list)


class CompatTable(BaseModel):
    schema_: int = Field(1, alias="schema")
    default_image: str = "quay.io/ascend/vllm-ascend"
    variants: dict[str, str | None] = Field(default_factory=dict)
    unsupported_chips: dict[str, str] = Field(default_factory=dict)
    rows: list[CompatRow]

    def row(self, tag: str) -> CompatRow | None:
        return next((r for r in self.rows if r.tag == tag), None)


def compat_path() -> Path:
    return paths.data_dir("targets") / "ascend-compat.yaml"


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> CompatTable:
    return CompatTable.model_validate(yaml.safe_load(Path(path).read_text()))


def load_compat(path: Path | None = None) -> CompatTable:
    p = Path(path) if path else compat_path()
    return _load(str(p), p.stat().st_mtime)


# --- versions ---------------------------------------------------------------------------------

def version_key(v: str) -> tuple:
    """Order Ascend HDK/CANN versions: 23.0.3 < 24.1.rc1 < 24.1.rc3 < 24.1.0 < 24.1.0.1 < 25.0.rc1.

    A release candidate X.Y.rcN sorts before the final X.Y.0 of the same X.Y.
    """
    # vLLM-Ascend tags carry a leading "v" (v0.19.1rc1); "rc" may follow a digit without a dot.
    text = re.sub(r"(\d)(rc\d+)", r"\1.\2", v.strip().lower().removeprefix("v"))
    parts = re.split(r"[.\-_]", text)
    key: list[tuple[int, int]] = []
    for p in parts:
        m = re.fullmatch(r"rc(\d+)", p)
        if m:
            key.append((0, int(m.group(1))))          # pre-release slot
        elif p.isdigit():
            key.append((1, int(p)))
        elif re.fullmatch(r"t\d+|b\d+|beta\d*|alpha\d*", p):
            key.append((0, 0))
        else:
            break
    return tuple(key)


def version_ge(a: str, b: str) -> bool:
    """a >= b; the shorter key is padded with final-release zeros, so 0.19.1 > 0.19.1rc1 and 24.1 == 24.1.0."""
    ka, kb = list(version_key(a)), list(version_key(b))
    width = max(len(ka), len(kb))
    ka += [(1, 0)] * (width - len(ka))
    kb += [(1, 0)] * (width - len(kb))
    return ka >= kb


def driver_root() -> Path:
    return Path(os.environ.get("DEPLOYKIT_ASCEND_ROOT") or DEFAULT_DRIVER_ROOT)


def read_driver_version(root: Path | None = None) -> tuple[str | None, str]:
    """(version, raw text) from <driver_root>/version.info; (None, why) when absent/unreadable."""
    f = (root or driver_root()) / "version.info"
    try:
        text = f.read_text(errors="replace")
    except OSError as exc:
        return None, f"{f}: {exc.strerror or exc}"
    kv = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln)
    ver = (kv.get("Version") or kv.get("package_version") or "").strip()
    return (ver or None), text


# --- image tags -------------------------------------------------------------------------------

def split_image_tag(image: str) -> tuple[str, str]:
    """'quay.io/ascend/vllm-ascend:v0.13.0-a3' -> ('v0.13.0', 'a3'); bare tags are accepted."""
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else image
    m = re.match(r"^(v\d+\.\d+\.\d+(?:rc\d+)?(?:\.post\d+)?)(?:-(.+))?$", tag)
    if not m:
        return tag, ""
    return m.group(1), (m.group(2) or "")


def image_chip(image: str, table: CompatTable | None = None) -> str | None:
    table = table or load_compat()
    _, variant = split_image_tag(image)
    if variant in table.variants:
        chip = table.variants[variant]
        return chip if chip is not None else table.variants.get("", "910B")
    return None


def _chip_issues(image_tag: str, chip: str, row: CompatRow | None, table: CompatTable,
                 src: str | None) -> list[Issue]:
    """The host's NPU family against the image variant and the release's documented chips."""
    if chip in table.unsupported_chips:
        return [Issue(severity="fail", message=table.unsupported_chips[chip],
                      fix="run on a 910B/910C/310P host or use the cpu target")]
    base, _ = split_image_tag(image_tag)
    want = image_chip(image_tag, table)
    if want and want != chip:
        suffix = next((k for k, v in table.variants.items() if v == chip and "-" not in k), None)
        tag_fix = f"{base}-{suffix}" if suffix else base
        return [Issue(severity="fail", fix=f"use the {tag_fix!r} image variant", source=src,
                      message=f"image {image_tag!r} is built for {want}, but this host has {chip} NPUs")]
    if row and row.chips and chip not in row.chips:
        return [Issue(severity="warn", message=f"{chip} is not listed as supported by vllm-ascend {row.tag}",
                      fix=f"use a newer tag documenting {chip}", source=src)]
    return []


def _driver_issues(row: CompatRow, driver_version: str | None, src: str | None) -> list[Issue]:
    """The host's driver (HDK) against the release's documented minimum / recommendation."""
    if driver_version is None:
        want = row.min_driver or row.recommended_driver or f"(see CANN {row.cann} release note)"
        return [Issue(severity="warn", message="Ascend driver version unknown (no version.info)",
                      fix=f"install Ascend HDK >= {want}", source=src)]
    if row.min_driver and not version_ge(driver_version, row.min_driver):
        return [Issue(
            severity="fail",
            message=(f"driver {driver_version} is older than {row.min_driver}, the minimum for "
                     f"vllm-ascend {row.tag} (CANN {row.cann})"),
            fix=f"upgrade the Ascend HDK driver+firmware to >= {row.min_driver}, or use an older image "
                f"tag whose min_driver <= {driver_version}",
            source=src)]
    if row.recommended_driver and not version_ge(driver_version, row.recommended_driver):
        return [Issue(
            severity="warn",
            message=(f"driver {driver_version} is below {row.recommended_driver}, recommended for "
                     f"vllm-ascend {row.tag} (CANN {row.cann})"),
            fix=f"upgrade the Ascend HDK to {row.recommended_driver}", source=src)]
    if not row.min_driver and not row.recommended_driver:
        return [Issue(
            severity="warn",
            message=(f"no minimum driver is pinned for vllm-ascend {row.tag} (CANN {row.cann}); "
                     f"driver {driver_version} not verified"),
            fix=f"check the CANN {row.cann} release note for the matching Ascend HDK", source=src)]
    return []


def check_image_against_driver(image_tag: str, driver_version: str | None,
                               chip: str | None = None,
                               table: CompatTable | None = None) -> list[Issue]:
    """Issues of running `image_tag` on a host with `driver_version` (and NPU family `chip`)."""
    table = table or load_compat()
    issues: list[Issue] = []
    base, variant = split_image_tag(image_tag)
    row = table.row(base)
    if row is None:
        known = ", ".join(r.tag for r in table.rows[-4:])
        issues.append(Issue(
            severity="warn",
            message=f"image tag {image_tag!r} is not in the pinned compatibility table",
            fix=f"use a pinned tag ({known}) or add a row with its source to {compat_path().name}",
        ))
    src = row.sources[0] if row and row.sources else None
    if variant and variant not in table.variants:
        issues.append(Issue(severity="warn", message=f"unknown image variant suffix -{variant}",
                            fix="expected -a3 (910C), -310p (310P), -openeuler or none (910B)"))
    if chip:
        issues += _chip_issues(image_tag, chip, row, table, src)
    if row is not None:
        issues += _driver_issues(row, driver_version, src)
    return issues


def tags_for_driver(driver_version: str, chip: str = "910B", table: CompatTable | None = None) -> list[str]:
    """Pinned tags whose hard minimum driver this host meets (newest last)."""
    table = table or load_compat()
    return [r.tag for r in table.rows
            if (not r.min_driver or version_ge(driver_version, r.min_driver)) and (not r.chips or chip in r.chips)]
