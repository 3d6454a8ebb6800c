"""Follows modules/api/api.py of A1111 1.10.1: how alwayson_scripts args reach a script."""


import traceback

from fastapi.exceptions import HTTPException


def handle_exception(e):
    """How the API answers an exception raised while serving a request: the status is the exception's own
    ``status_code`` attribute (500 without one); the body carries its class, ``detail`` and text; a
    traceback is printed to the console unless it is a FastAPI HTTPException. Returns (status, body)."""
    body = {"error": type(e).__name__, "detail": vars(e).get("detail", ""), "body": vars(e).get("body", ""),
            "errors": str(e)}
    if not isinstance(e, HTTPException):
        print(f"API error: {body}")
        traceback.print_exception(e)
    return vars(e).get("status_code", 500), body


def init_script_args(alwayson_scripts, default_script_args, script_runner):
    """The request's args for a script (found by lowercased title) are copied positionally over the
    script's slice of the UI default args; slots the request does not fill keep their defaults."""
    script_args = list(default_script_args)
    for name, spec in alwayson_scripts.items():
        script = script_runner.title_map.get(name.lower())
        if script is None:
            raise HTTPException(422, f"always on script {name} not found")
        if "args" in spec:
            args = spec["args"]
            for index in range(min(script.args_to - script.args_from, len(args))):
                script_args[script.args_from + index] = args[index]
    return script_args
