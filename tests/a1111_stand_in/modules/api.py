"""Follows modules/api/api.py of A1111 1.10.1: how alwayson_scripts args reach a script."""


class HTTPException(Exception):
    def __init__(self, status_code, detail):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


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
