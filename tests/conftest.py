import os
import sys

import pytest
import torch

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
            f"{f' (ATEN_CPU_CAPABILITY={requested})' if requested else ''}, {torch.get_num_threads()} thread(s), "
            f"{platform.machine()} {_cpu_model()}")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


@pytest.fixture
def sd15_unet():
    from unets import sd15_like
    return sd15_like()
