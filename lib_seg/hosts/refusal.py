"""A refused SEG value as the WebUIs' API reports invalid input: HTTP 422 with the one-line message.

A1111 1.10.1 (modules/api/api.py, ``handle_exception``), Forge and reForge answer an exception with its own
``status_code`` attribute (500 without one) and print a full traceback unless it is a FastAPI
``HTTPException``. A user's typo is not a server fault: the refusal is both an ``HTTPException`` (422, no
traceback) and a ``SegParamError`` (what callers and tests catch). Its ``str`` stays the plain message,
which is what the UI shows. One line in the console says what was refused.
"""
from lib_seg.params import SegParamError

INVALID_INPUT = 422  # FastAPI's status for a request it cannot use

try:  # every host ships FastAPI; without it (a bare test env) the plain error is raised
    from fastapi.exceptions import HTTPException
except ImportError:  # pragma: no cover
    HTTPException = None


def refusal(error: SegParamError) -> SegParamError:
    """`error` as an exception the host's API answers with 422 and its message; printed once here."""
    print(f"[SEG] refused: {error}")
    if HTTPException is None:
        return error
    return SegRefusal(str(error))


if HTTPException is not None:
    class SegRefusal(HTTPException, SegParamError):
        def __init__(self, message: str):
            HTTPException.__init__(self, status_code=INVALID_INPUT, detail=message)
            self.args = (message,)

        def __str__(self):
            return self.detail
