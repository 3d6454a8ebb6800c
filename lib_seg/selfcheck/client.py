"""The self-check's HTTP client (JSON requests to the WebUI's /sdapi/v1 API, standard library only) and the
exceptions that end a request, a check or the run."""
import base64
import json
import time
import urllib.error
import urllib.request


class Unreachable(Exception):
    """The server does not answer (connection refused, timeout, DNS)."""


class Skip(Exception):
    """A check that cannot be made here; the message says why."""


class Stop(Exception):
    """The checks cannot run against this server (API off, not a WebUI, unknown checkpoint)."""


class RequestFailed(Exception):
    """A request answered with a non-200 status; the message is the server's own."""

    def __init__(self, label, reply):
        self.reply = reply
        super().__init__(f"{label}: HTTP {reply.status}: {reply.message()}")


class Reply:
    def __init__(self, status, body, seconds):
        self.status = status
        self.body = body
        self.seconds = seconds
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            self.json = None

    def message(self, limit=300):
        """The server's error message: FastAPI's ``detail``, A1111's ``errors`` or Forge's ``message`` (both the str
        of the exception), else the exception's name (``error``)."""
        data = self.json
        text = ""
        if isinstance(data, dict):
            for key in ("detail", "errors", "message", "error"):
                value = data.get(key)
                if value:
                    text = value if isinstance(value, str) else json.dumps(value)
                    break
        if not text:
            text = self.body.decode("utf-8", "replace") if self.body else "(empty answer)"
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 3] + "..."


class Api:
    def __init__(self, url, timeout=600.0, auth=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            token = base64.b64encode(auth.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = "Basic " + token

    def call(self, method, path, payload=None, timeout=None):
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        return self.send(method, path, data, timeout)

    def send(self, method, path, data, timeout=None):
        """The request with `data` (bytes or None) as its body, as it is."""
        request = urllib.request.Request(self.url + path, data=data, headers=self.headers, method=method)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return Reply(response.status, response.read(), time.monotonic() - started)
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read() or b"", time.monotonic() - started)
        except (urllib.error.URLError, OSError) as error:  # refused, reset, timeout, unknown host
            reason = getattr(error, "reason", error)
            raise Unreachable(f"{method} {self.url}{path}: {reason}") from None

    def get(self, path, timeout=None):
        return self.call("GET", path, timeout=timeout)

    def post(self, path, payload, timeout=None):
        return self.call("POST", path, payload, timeout=timeout)
