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


@pytest.fixture
def clean_host(host):
    """The host with nothing left from the test before (SEG state, options, callbacks), and nothing left after."""
    host.reset()
    yield host
    host.reset()


@pytest.fixture(scope="module")
def sd15_64():
    """The SD1.5-like model built in float64, for tests that use in_float64."""
    from precision import float64
    with float64():
        return H.sd_model()
