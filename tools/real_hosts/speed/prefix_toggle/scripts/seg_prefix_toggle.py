"""A test-install-only extension for speed runs: switches SEG's shared prefix (lib_seg.prefix.ENABLED) on or off
in a running host, so shared and full-row SEG are timed in the same server, and records what lib_seg.prefix logs
(whether sharing engaged, and over which blocks). Never in a user's WebUI.

    GET  /seg-prefix                 -> {"enabled": bool, "log": [last 50 'seg' debug lines]}
    POST /seg-prefix?enabled=false   -> the same, after switching
"""
import logging
import sys

from modules import script_callbacks

_LINES = []


class _Keep(logging.Handler):
    def emit(self, record):
        _LINES.append(record.getMessage())
        del _LINES[:-50]


def _prefix():
    module = sys.modules.get("lib_seg.prefix")
    if module is None:  # the SEG extension imports it at start-up; import it the same way if not yet
        import lib_seg.prefix as module
    return module


def _state():
    return {"enabled": bool(_prefix().ENABLED), "log": list(_LINES)}


def _switch(enabled: bool):
    _prefix().ENABLED = bool(enabled)
    return _state()


def _routes(demo, app):
    app.add_api_route("/seg-prefix", _state, methods=["GET"])
    app.add_api_route("/seg-prefix", _switch, methods=["POST"])


seg_log = logging.getLogger("seg")
seg_log.setLevel(logging.DEBUG)
seg_log.addHandler(_Keep())
script_callbacks.on_app_started(_routes)
