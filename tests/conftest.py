import os
import sys

# Waiting OpenMP threads sleep instead of spinning. On a 2-core machine shared with other jobs a spinning thread
# holds its core while its partner waits for the other one, at every parallel op: the 2-thread run (CI) took
# 25 min instead of 4. Only how threads wait changes, not how work is split; set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Two cores on CI: one intra-op thread by default avoids oversubscription; SEG_TEST_THREADS=2 runs the suite
# with two (results must not depend on it: tests/precision.py).
torch.set_num_threads(int(os.environ.get("SEG_TEST_THREADS", "1")))


def pytest_report_header(config):
    """Which kernels this run used, so a failing log says what machine it came from."""
    import platform
    requested = os.environ.get("ATEN_CPU_CAPABILITY", "")
    return (f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
            f"{f' (ATEN_CPU_CAPABILITY={requested})' if requested else ''}, {torch.get_num_threads()} thread(s) "
            f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), "
            f"{platform.machine()} {_cpu_model()}")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


@pytest.fixture
def in_float64():
    """For a test comparing two evaluation orders of the same arithmetic (batched vs separate, shortcut vs full):
    float64, with the bound of tests/precision.py. Bit-identity claims hold in any dtype."""
    from precision import float64
    with float64():
        yield


@pytest.fixture(scope="module")
def float64_module():
    """in_float64 for a whole module (`pytestmark = pytest.mark.usefixtures("float64_module")`); models the
    module builds in its own fixtures are then float64 too."""
    from precision import float64
    with float64():
        yield


@pytest.fixture
def sd15_unet():
    from unets import sd15_like
    return sd15_like()
