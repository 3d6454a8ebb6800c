"""Load the stand-in ``modules`` package and the extension's entry script as A1111 would, and run
generations through the stand-in's processing / k-diffusion sampler / CFG denoiser on real ldm UNets.

The stand-in is named ``modules`` like the WebUI's package; ``activate()`` puts it first on sys.path
and swaps any other ``modules`` (another host's stand-in) out of sys.modules, ``deactivate()`` swaps back.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "scripts", "seg.py")

_saved = {}


def _is_host_module(name):
    return name == "modules" or name.startswith("modules.")


def activate():
    _saved.clear()
    for name in [n for n in sys.modules if _is_host_module(n)]:
        _saved[name] = sys.modules.pop(name)
    sys.path.insert(0, HERE)
    import modules.scripts  # noqa: F401
    import modules.script_callbacks  # noqa: F401
    import modules.shared  # noqa: F401
    import modules.processing  # noqa: F401
    import lib_seg.hosts as hosts
    hosts._adapters.clear()


def deactivate():
    import lib_seg.hosts as hosts
    hosts._adapters.clear()
    for name in [n for n in sys.modules if _is_host_module(n)]:
        del sys.modules[name]
    sys.modules.update(_saved)
    if HERE in sys.path:
        sys.path.remove(HERE)


class Host:
    """One 'WebUI process': the stand-in modules, the loaded entry script, a runner per tab."""

    def __init__(self):
        from modules import script_callbacks, scripts, shared
        self.scripts, self.callbacks, self.shared = scripts, script_callbacks, shared
        script_callbacks.clear_callbacks()
        scripts.scripts_data.clear()
        self.module = scripts.load_script(SCRIPT, ROOT)
        self.script_class = self.module.Script
        from lib_seg import params, ui
        self.params, self.ui = params, ui
        self.defaults = [ui.control_value(p, p.default) for p in params.PARAMS]
        self.runner = self.make_runner()

    def make_runner(self, is_img2img=False, other_scripts=()):
        runner = self.scripts.ScriptRunner()
        for other in other_scripts:
            runner.add(other, is_img2img, controls=[None])
        script = self.script_class()
        script.filename = SCRIPT
        runner.add(script, is_img2img, controls=self.defaults)
        return runner

    def script_args(self, args, runner=None):
        """The full p.script_args with `args` in our script's slice (the UI / positional-API path)."""
        runner = runner or self.runner
        script = runner.title_map[self.ui.API_NAME]
        full = list(runner.inputs)
        full[script.args_from:script.args_from + len(args)] = list(args)
        for i in range(script.args_from + len(args), script.args_to):
            full[i] = self.defaults[i - script.args_from]
        return full

    def api_args(self, alwayson_scripts, runner=None):
        from modules import api
        runner = runner or self.runner
        script = runner.title_map[self.ui.API_NAME]
        defaults = list(runner.inputs)
        defaults[script.args_from:script.args_to] = self.defaults
        return api.init_script_args(alwayson_scripts, defaults, runner)

    def use_model(self, model):
        self.shared.sd_model = model

    def reset(self):
        self.shared.opts.reset()
        self.shared.state.reset()


# ---------------------------------------------------------------- conditioning and models

CONTEXT_DIM = 32


def text(seed, tokens=77, sdxl=False):
    g = torch.Generator().manual_seed(seed)
    crossattn = torch.randn(tokens, CONTEXT_DIM, generator=g)
    if sdxl:
        return {"crossattn": crossattn, "vector": torch.randn(1, generator=g)}
    return crossattn


def conds(prompts, negative):
    """prompts: per image a list of (seed or (seed, tokens), weight); negative: per image a seed or (seed, tokens)."""
    from modules import prompt_parser
    sdxl = False

    def make(spec):
        if isinstance(spec, (dict, torch.Tensor)):
            return spec
        seed, tokens = spec if isinstance(spec, tuple) else (spec, 77)
        return text(seed, tokens, sdxl)

    c = prompt_parser.multicond([[(make(s), w) for s, w in image] for image in prompts])
    uc = prompt_parser.scheduled([make(s) for s in negative])
    return c, uc


def sdxl_conds(prompts, negative):
    from modules import prompt_parser
    c = prompt_parser.multicond([[(text(s, sdxl=True), w) for s, w in image] for image in prompts])
    uc = prompt_parser.scheduled([text(s, sdxl=True) for s in negative])
    return c, uc


def sd_model(kind="sd15", seed=0, conditioning_key="crossattn", cond_stage_key="txt"):
    """kind sd15/sdxl; conditioning_key "hybrid": an inpainting UNet (4 + 5 input channels) or, with
    cond_stage_key "edit", an InstructPix2Pix one (4 + 4)."""
    import unets
    from sd_model import SDModel
    if kind == "sdxl":
        return SDModel(unets.sdxl_like(seed), is_sdxl=True)
    if conditioning_key == "hybrid":
        unet = unets.sd15_like(seed, in_channels=8 if cond_stage_key == "edit" else 9)
        return SDModel(unet, conditioning_key="hybrid", cond_stage_key=cond_stage_key)
    return SDModel(unets.sd15_like(seed), cond_stage_key=cond_stage_key)


# ---------------------------------------------------------------- leak checks

def hook_census(*modules):
    """Per module: forward hooks, forward pre-hooks and an instance 'forward' attribute."""
    out = {}
    for root in modules:
        for name, m in root.named_modules():
            out[(id(root), name)] = (len(m._forward_hooks), len(m._forward_pre_hooks), "forward" in vars(m))
    return out


def callback_census():
    from modules import script_callbacks
    return {k: len(v) for k, v in script_callbacks.callback_map.items()}


class CallCounter:
    """Counts UNet calls and rows (a pre-hook of the test's own, removed by close())."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(lambda m, args: self.calls.append(args[0].shape[0]))

    def close(self):
        self.handle.remove()
