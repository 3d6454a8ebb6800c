import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Two cores on CI: one intra-op thread keeps timings steady and avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture
def sd15_unet():
    from unets import sd15_like
    return sd15_like()
