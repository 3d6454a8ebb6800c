"""The hosts the real-host harness drives, one small description each, and where their installs live.

A description says how the host is built and started (the scripts under tools/real_hosts and the arguments
they take), its default port and install folder, the API quirks a request must respect, and which model
families it loads. Adding a host is one more ``Host(...)`` in HOSTS; adding a family is a checkpoint maker plus
the family's name in the hosts that load it. Standard library only.

Paths: the folder holding the installs is ``--hosts-dir``, else ``$SEG_HOSTS_DIR``, else ``<checkout>/../hosts``
(the checkout is the repository this file is in); nothing here names one machine's layout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
SD15_CHECKPOINT = "seg-random-sd15.safetensors"


def hosts_dir(flag: Optional[str] = None, environ=None) -> Path:
    """Where the installs, checkpoints and run files live: the flag, $SEG_HOSTS_DIR, or <checkout>/../hosts."""
    environ = os.environ if environ is None else environ
    chosen = flag or environ.get("SEG_HOSTS_DIR") or str(CHECKOUT.parent / "hosts")
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Host:
    name: str                         # what the harness's --host takes
    title: str                        # what reports call it
    commit: str                       # the pinned host commit the build script checks out
    port: int                         # default port (each host its own, so two can run side by side)
    build: tuple                      # the build script (relative to tools/real_hosts) and its fixed arguments
    start: tuple                      # the start script and its fixed arguments
    background: bool                  # True: the start script starts the server in the background and waits
                                      # itself (A1111); False: it runs in the foreground (exec), the harness
                                      # puts it in the background with serve.py
    families: tuple                   # model families this host loads (checkpoint makers in tools/real_hosts)
    probe_reset: str                  # the probe extension's endpoint that clears its record
    # API quirks: fields a request of that kind must carry on this host (other hosts ignore unknown fields).
    hires_fields: dict = field(default_factory=dict)
    infotext_fields: dict = field(default_factory=dict)
    checkpoint_fields: dict = field(default_factory=dict)  # sent with sd_model_checkpoint when a check selects one
    hires_cfg_is_one: bool = False    # the hires pass runs at the host's own Hires CFG (1 unless set): no uncond row
    dest_flag: str = "--dest"
    notes: str = ""

    def dest(self, root: Path) -> Path:
        return root / self.name

    def log(self, root: Path, port: int) -> Path:
        """The server's console log, as the start scripts write it."""
        return self.dest(root) / "run" / f"webui-{port}.log"

    def pidfile(self, root: Path, port: int) -> Path:
        return self.dest(root) / "run" / f"webui-{port}.pid"

    def script(self, which: str) -> Path:
        return HERE / (self.build if which == "build" else self.start)[0]


FORGE_HIRES = {"hr_additional_modules": ["Use same choices"]}
FORGE_INFOTEXT = {"styles": []}
# A checkpoint that carries its own text encoders and VAE: no modules from the UI's VAE / text encoder menu
FORGE_CHECKPOINT = {"forge_additional_modules": []}

HOSTS = {
    "a1111": Host(
        name="a1111", title="AUTOMATIC1111 1.10.1", commit="82a973c04367123ae98bd9abdf80d9eda9b910e2", port=7860,
        build=("a1111/build.sh",), start=("a1111/start.sh",), background=True,
        families=("sd15", "sd15-ip2p", "sdxl", "sdxl-refiner", "sd3"), probe_reset="/seg-probe/reset",
        notes="args that are not a list (null, a number, an object) get HTTP 500 from init_script_args; "
              "positional values beyond the script's controls are dropped by the host"),
    "forge": Host(
        name="forge", title="Forge dfdcbab6", commit="dfdcbab685e57677014f05a3309b48cc87383167", port=7870,
        build=("forge/build.sh", "--host", "forge"), start=("forge/start.sh", "--host", "forge"), background=False,
        families=("sd15", "sdxl", "flux", "chroma", "sd3"), probe_reset="/seg-probe/clear",
        hires_fields=FORGE_HIRES, infotext_fields=FORGE_INFOTEXT, checkpoint_fields=FORGE_CHECKPOINT,
        hires_cfg_is_one=True,
        notes="a hires request needs hr_additional_modules, an infotext request styles: []"),
    "reforge": Host(
        name="reforge", title="reForge 3b56b268", commit="3b56b268ad9158ee8b30900973b6ccda4ec22241", port=7871,
        build=("forge/build.sh", "--host", "reforge"), start=("forge/start.sh", "--host", "reforge"),
        background=False, families=("sd15", "sdxl", "sd3", "flux", "chroma"), probe_reset="/seg-probe/clear",
        hires_fields=FORGE_HIRES, infotext_fields=FORGE_INFOTEXT, checkpoint_fields=FORGE_CHECKPOINT,
        hires_cfg_is_one=True),
    "forge-neo": Host(
        name="forge-neo", title="Forge Neo (WebUI-Neo-Forge 7862a96)", commit="7862a9646a01c7268bec3a425d3ea80598d72e48",
        port=7872, build=("forge/build.sh", "--host", "forge-neo"), start=("forge/start.sh", "--host", "forge-neo"),
        background=False, families=("flux", "chroma"), probe_reset="/seg-probe/clear",
        hires_fields=FORGE_HIRES, infotext_fields=FORGE_INFOTEXT, checkpoint_fields=FORGE_CHECKPOINT,
        hires_cfg_is_one=True,
        notes="no --ckpt: start.sh writes the checkpoint into config.json (sd_model_checkpoint); SD3 removed; "
              "tiny Flux / Chroma need start --tiny-dit"),
}


def host(name: str) -> Host:
    try:
        return HOSTS[name]
    except KeyError:
        raise SystemExit(f"unknown host {name!r}; known: {', '.join(HOSTS)}") from None


def request(h: Host, body: dict) -> dict:
    """`body` with the fields this host needs for what the request does (hires fix, infotext)."""
    out = dict(body)
    if out.get("enable_hr"):
        for k, v in h.hires_fields.items():
            out.setdefault(k, v)
    if "infotext" in out:
        for k, v in h.infotext_fields.items():
            out.setdefault(k, v)
    return out
