"""Target profiles as data: targets/<name>.yaml (shipped) plus user profiles.

A profile says what a kind of host looks like (devices, HBM, base image, mounts, default env,
which env vars it allows, how visible devices are numbered). Users add their own profiles in
$DEPLOYKIT_TARGETS or ~/.config/deploykit/targets; a user file with a shipped name replaces it.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BadInput
from .paths import data_dir

DEFAULT_TARGET = "ascend-a2"
# Data files in targets/ that are not profiles.
_NOT_PROFILES = {"ascend-compat", "upstream-support"}
SupportStatus = Literal["supported", "experimental", "not-supported"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mount(_Strict):
    source: str
    target: str
    read_only: bool = True


class TargetProfile(_Strict):
    name: str
    description: str
    kind: Literal["ascend", "cuda", "cpu"]
    image: str = Field(description="repository for the image deploykit builds (tag = content hash)")
    base_image: str = Field(description="pinned vendor/base image the Dockerfile starts FROM")
    registry_mirror_env: str = Field(
        default="DEPLOYKIT_REGISTRY_MIRROR",
        description="env var naming a registry mirror host that replaces the base image's registry",
    )
    dockerfile: str = Field(description="template in images/ for this target")
    device_count: int = Field(ge=0)
    device_memory_gib: float = Field(gt=0, description="HBM per device; for cpu the KV cache space")
    device_kind: str = Field(description="human name of one device, e.g. 'Ascend 910B NPU'")
    interconnect_groups: list[list[int]] = Field(default_factory=list)
    device_node_pattern: str | None = Field(default=None, description="e.g. /dev/davinci{id}")
    extra_device_nodes: list[str] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    shm_size: str = "1g"
    shm_size_tp: str = "16g"
    visible_devices_rule: Literal["ascend-unset", "cuda-device-ids", "none"]
    runtime_reserve_gib: float = Field(ge=0, description="activations, workspace, graphs: kept free")
    weights_in_device_memory: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    env_tp: dict[str, str] = Field(default_factory=dict, description="added when tensor_parallel_size > 1")
    allowed_env: list[str] = Field(description="glob patterns of env var names the target accepts")
    serve_defaults: dict = Field(default_factory=dict)
    unsupported_quantization: dict[str, str] = Field(default_factory=dict)
    entrypoint: list[str]
    container_port: int = 8000
    bandwidth_gbps: float | None = Field(default=None, description="memory bandwidth per device (vendor figure)")
    bandwidth_source: str | None = None
    # Release awareness (Ascend): the vLLM-Ascend release the image is, and how other releases are named.
    vllm_ascend_release: str | None = Field(default=None, description="pinned vLLM-Ascend release, e.g. v0.23.0")
    image_suffix: str = Field(default="", description="upstream tag variant: '' (A2, 910B) or 'a3' (910C)")
    vllm_version: str | None = Field(default=None, description="the vLLM release this target's image runs")
    min_devices: int = Field(default=1, ge=1, description="fewest devices one deployment may map")
    min_devices_source: str | None = None
    device_memory_nominal_gib: float | None = Field(default=None, description="HBM on the data sheet")
    device_memory_source: str | None = Field(default=None, description="where device_memory_gib comes from")
    provenance: dict[str, str] = Field(
        default_factory=dict, description="'env:NAME', 'mount:/path', 'device:/dev/x', 'flag:--x', 'image' -> URL")

    def base_image_for(self, release: str | None) -> str:
        """The upstream image of `release` (None: the pinned one); same repository and variant suffix."""
        if release is None or release == self.vllm_ascend_release:
            return self.base_image
        repo = self.base_image.rsplit(":", 1)[0]
        return f"{repo}:{release}" + (f"-{self.image_suffix}" if self.image_suffix else "")

    def env_allowed(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pat) for pat in self.allowed_env)

    def device_nodes(self, ids: list[int]) -> list[str]:
        if not self.device_node_pattern:
            return []
        return [self.device_node_pattern.format(id=i) for i in ids] + list(self.extra_device_nodes)


def _search_dirs() -> list[Path]:
    dirs = [data_dir("targets")]
    user = os.environ.get("DEPLOYKIT_TARGETS")
    if user:
        dirs.append(Path(user))
    else:
        dirs.append(Path.home() / ".config" / "deploykit" / "targets")
    return dirs


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                if f.stem not in _NOT_PROFILES:
                    found[f.stem] = f  # later dirs (user) win
    return found


def target_names() -> list[str]:
    return sorted(_profile_files())


def load_target(name: str) -> TargetProfile:
    files = _profile_files()
    if name not in files:
        import difflib

        close = difflib.get_close_matches(name, files, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(sorted(files))
        raise BadInput(f"unknown target '{name}'", field="--target", hint=hint)
    from .cardload import load_yaml_with_lines, validation_to_bad_input

    path = files[name]
    data, lines = load_yaml_with_lines(path)
    try:
        prof = TargetProfile.model_validate(data)
    except ValidationError as exc:
        raise validation_to_bad_input(exc, str(path), lines, TargetProfile) from None
    if prof.name != name:
        raise BadInput(f"profile name '{prof.name}' differs from its file name '{name}'",
                       file=str(path), line=lines.get("name"), field="name")
    return prof


class SupportEntry(_Strict):
    since: str
    status: SupportStatus
    source: str
    note: str | None = None


class ArchitectureSupport(_Strict):
    family: str
    first_release: str | None = None
    issue: str | None = None
    alternative: str | None = None
    statuses: list[SupportEntry] = Field(min_length=1)


class SupportTable(_Strict):
    schema_: int = Field(1, alias="schema")
    matrix: str
    architectures: dict[str, ArchitectureSupport]


def load_support() -> SupportTable:
    """targets/upstream-support.yaml: upstream's status of each catalog architecture per release."""
    import yaml

    path = data_dir("targets") / "upstream-support.yaml"
    try:
        return SupportTable.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        raise BadInput(f"upstream support table is not valid: {exc.errors()[0]['msg']}", file=str(path)) from None


def vllm_table() -> list[tuple[str, str, str, str]]:
    """(target, image it starts FROM, vLLM-Ascend release or '-', vLLM release): which vLLM each target runs."""
    rows = []
    for name in target_names():
        prof = load_target(name)
        rows.append((name, prof.base_image, prof.vllm_ascend_release or "-", prof.vllm_version or "unknown"))
    return rows
