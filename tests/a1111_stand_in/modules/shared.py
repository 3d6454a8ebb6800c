"""Follows modules/shared.py, shared_options.py, shared_state.py of A1111 1.10.1: only what is read here."""
import types


class Options:
    def __init__(self):
        self.reset()

    def reset(self):
        self.batch_cond_uncond = True      # default on in 1.10
        self.pad_cond_uncond = False
        self.pad_cond_uncond_v0 = False
        self.skip_early_cond = 0.0
        self.s_min_uncond_all = False
        self.live_preview_content = "Prompt"
        self.refiner_switch_by_sample_steps = True
        self.token_merging_ratio = 0.0
        self.token_merging_ratio_hr = 0.0
        self.token_merging_ratio_img2img = 0.0


class State:
    def __init__(self):
        self.reset()

    def reset(self):
        self.interrupted = False
        self.skipped = False
        self.sampling_step = 0
        self.sampling_steps = 0

    def interrupt(self):
        self.interrupted = True


opts = Options()
state = State()
cmd_opts = types.SimpleNamespace(seg_disable=False)
sd_model = None
