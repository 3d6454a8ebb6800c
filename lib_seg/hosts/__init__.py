"""Host adapters: the only code that differs between WebUIs.

``scripts/seg.py`` is the one entry script for every host. It parses the arguments into a
``lib_seg.params.SegSettings`` and hands the per-pass work to the adapter of the running host:

    adapter = get_adapter()            # detect_host() picks it once per process
    adapter.start(p, settings) -> bool # from Script.process_before_every_sampling: prepare ONE sampling
                                       # pass (first pass, hires pass); True if SEG will run in it, False
                                       # if skipped (a one-line notice was printed: edit model,
                                       # unsupported model ...). A layer spec this model lacks is bad
                                       # input: raises lib_seg.params.SegParamError naming the field.
                                       # Ends any pass still open first. Never called when settings are
                                       # not active (disabled / scale 0): then nothing is installed.
    adapter.stop(p)                    # from Script.postprocess and before every new generation:
                                       # remove everything still installed. Idempotent, never raises.

An adapter module exposes ``create_adapter(host: str)`` returning an object with ``name``, ``start``
and ``stop``. ``lib_seg.hosts.a1111`` serves "a1111"; ``lib_seg.hosts.forge`` serves "forge"
(2024+ ``backend``) and "reforge" (``ldm_patched``).
"""
import importlib
import importlib.util

HOSTS = ("a1111", "forge", "reforge")
# Infotext entry written when the refiner took over mid-sampling (A1111, Forge, reForge): "on" (SEG went on
# with the refiner's own layers of the same spec) or "off" (the refiner lacks them; SEG ended at the switch).
# Not read back.
REFINER_KEY = "SEG refiner"

_ADAPTER_MODULES = {"a1111": "lib_seg.hosts.a1111", "forge": "lib_seg.hosts.forge", "reforge": "lib_seg.hosts.forge"}
_adapters = {}


def _has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect_host():
    """"forge" (Forge with the 2024 ``backend`` package), "reforge" (``modules_forge`` with the older
    ``ldm_patched`` package: reForge, and Forge before its backend rewrite), else "a1111"."""
    if _has_module("modules_forge"):
        if _has_module("backend"):
            return "forge"
        if _has_module("ldm_patched"):
            return "reforge"
    return "a1111"


def get_adapter(host=None):
    """The adapter for `host` (default: the detected host); one instance per host and process."""
    host = host or detect_host()
    if host not in _ADAPTER_MODULES:
        raise ValueError(f"SEG: unknown host {host!r}; known: {', '.join(HOSTS)}")
    if host not in _adapters:
        _adapters[host] = importlib.import_module(_ADAPTER_MODULES[host]).create_adapter(host)
    return _adapters[host]
