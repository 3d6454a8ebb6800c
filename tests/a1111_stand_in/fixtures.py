"""pytest fixtures of the A1111 tests: the stand-in `modules` active for one test module, and its model."""
import pytest

from . import harness as H


@pytest.fixture(scope="module")
def host():
    H.activate()
    try:
        yield H.Host()
    finally:
        H.deactivate()


@pytest.fixture(scope="module")
def sd15():
    return H.sd_model()
