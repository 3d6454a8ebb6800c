"""`blur` mode (the default) and the hires override left off give bit for bit what the extension gave before
either existed: the same generations run through the code of BASE (the last commit without them, taken
from git) and through today's, in one process, compared with torch.equal.

Skipped where the repository's history is not available (a source archive, a shallow clone without BASE).

Today's side runs with the shared prefix off (lib_seg.prefix.disabled(), BASE's full rows): the prefix computes
the SEG rows' first blocks as copies from a smaller batch, which moves results by round-off only; that equality,
within a bound from the arithmetic, is tests/test_prefix.py's.
"""
import importlib
import math
import os
import shutil
import subprocess
import sys
import tarfile
import io

import pytest
import torch

from a1111_stand_in import harness as H
from a1111_stand_in.fixtures import host, sd15  # noqa: F401 (pytest fixtures)
from lib_seg import prefix
from test_a1111_pass import run


@pytest.fixture(autouse=True)
def full_rows():
    with prefix.disabled():
        yield

BASE = "87f2612b0d9a4341e944328b0328312f6cea0bdf"  # "a1111: import at module top", the parent of the perturbation mode / hires override
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """BASE's lib_seg, importable as the package ``lib_seg_base`` (its imports are relative)."""
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    found = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{BASE}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {BASE} is not in this checkout's history")
    archive = subprocess.run(["git", "-C", ROOT, "archive", BASE, "lib_seg/*.py", "lib_seg/hosts/*.py"],
                             capture_output=True, check=True).stdout
    where = tmp_path_factory.mktemp("base")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where)
    os.rename(where / "lib_seg", where / "lib_seg_base")
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("lib_seg_base")
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == "lib_seg_base" or n.startswith("lib_seg_base.")]:
            del sys.modules[name]


CASES = [dict(scale=3.0, sigma=2.0, layers="all"), dict(scale=2.5, sigma=math.inf, layers="mid"),
         dict(scale=4.0, sigma=1.0, layers="d0-3, u4", start=0.2, rescale=0.5)]


# ---------------------------------------------------------------- the host-free denoiser (ldm attention wrapper)

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cfg_scale", [5.0, 1.0])
def test_denoiser_blur_is_bit_identical_to_base(base, case, cfg_scale):
    import lib_seg.denoiser as new_denoiser
    from ldm_wrap import denoiser_for, sampling
    from unets import CONTEXT_DIM, sd15_like
    base_denoiser = importlib.import_module("lib_seg_base.denoiser")
    base_params = importlib.import_module("lib_seg_base.params")
    from lib_seg.params import SegSettings
    unet = sd15_like()
    denoiser = denoiser_for(unet)
    sigmas = denoiser.get_sigmas(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 24, 16, generator=g) * sigmas[0]
    extra = {"cond": torch.randn(2, 7, CONTEXT_DIM, generator=g), "uncond": torch.randn(2, 7, CONTEXT_DIM, generator=g)}
    outs = []
    for module, settings in ((base_denoiser, base_params.SegSettings(enabled=True, **case)),
                             (new_denoiser, SegSettings(enabled=True, mode="blur", **case))):
        model = module.SegCFGDenoiser(denoiser, unet, settings, cfg_scale=cfg_scale, total_steps=4)
        with torch.no_grad(), model:
            outs.append(sampling.sample_euler(model, x, sigmas, extra_args=extra, disable=True))
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------- A1111: BASE's adapter vs today's entry script

class BaseScriptRunner:
    """The hooks BASE's scripts/seg.py ran for a valid, active setting: start the adapter before every sampling
    pass (first and hires alike), stop it in postprocess."""

    def __init__(self, adapter, settings):
        self.adapter, self.settings = adapter, settings

    def before_process(self, p):
        self.adapter.stop(p)

    def process(self, p):
        pass

    def process_before_every_sampling(self, p, **kwargs):
        self.adapter.start(p, self.settings)

    def before_hr(self, p):
        pass

    def postprocess(self, p, processed):
        self.adapter.stop(p)


@pytest.mark.parametrize("case", CASES)
def test_a1111_blur_with_hires_is_bit_identical_to_base(base, host, sd15, case):
    from modules import processing
    base_a1111 = importlib.import_module("lib_seg_base.hosts.a1111")
    base_params = importlib.import_module("lib_seg_base.params")
    c, uc = H.conds([[(1, 1.0)], [(3, 1.0)]], [2, 4])
    kw = dict(enable_hr=True, hr_scale=1.5, steps=3, batch_size=2)
    args = [True, case["scale"], str(case["sigma"]), case["layers"], case.get("start", 0), 1, case.get("rescale", 0)]
    today, calls, _ = run(host, sd15, args, c, uc, **kw)
    explicit, _, _ = run(host, sd15, args + ["blur", "same", 1.0, "4", "up", "identity"], c, uc, **kw)
    host.use_model(sd15)
    runner = BaseScriptRunner(base_a1111.A1111Adapter(), base_params.SegSettings(enabled=True, **case))
    p = processing.StableDiffusionProcessingTxt2Img(c, uc, scripts=runner, **kw)
    before = processing.process_images(p).samples
    assert torch.equal(today, before) and torch.equal(explicit, before)
    assert len(calls) == 5


# ---------------------------------------------------------------- Forge / reForge: BASE's adapter vs today's

@pytest.mark.parametrize("flavor", ["forge", "reforge"])
@pytest.mark.parametrize("case", CASES[:2])
def test_forge_blur_with_hires_is_bit_identical_to_base(base, flavor, case):
    from forge_stand_in.unet import stand_in_attention
    from lib_seg.hosts import forge as forge_host
    from lib_seg.params import SegSettings
    from test_forge import generate, world
    base_forge = importlib.import_module("lib_seg_base.hosts.forge")
    base_params = importlib.import_module("lib_seg_base.params")

    class Script:
        def __init__(self, adapter, settings, per_pass):
            self.adapter, self.settings, self.per_pass = adapter, settings, per_pass

        def process_before_every_sampling(self, p):
            settings = self.settings.for_pass(p.is_hr_pass) if self.per_pass else self.settings
            self.adapter.start(p, settings)

        def postprocess(self, p):
            self.adapter.stop(p)

    outs = []
    for adapter_module, settings, per_pass in (
            (base_forge, base_params.SegSettings(enabled=True, **case), False),
            (forge_host, SegSettings(enabled=True, mode="blur", hires="same", hr_scale=7.0, **case), True)):
        sd_model, _ = world(flavor)
        script = Script(adapter_module.ForgeAdapter(flavor, attention=stand_in_attention), settings, per_pass)
        out, _, _ = generate(flavor, sd_model=sd_model, script=script, batch=2, latent_hw=(16, 24),
                             hr_latent_hw=(24, 32), hr_steps=3)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
