"""UnetPatcher stand-in: the model_options dict and the setters the adapter uses (Forge
backend/patcher/base.py + unet.py; reForge ldm_patched/modules/model_patcher.py behave the same here)."""
import copy


def _set_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    # The hosts copy each nested level before writing, so a clone never writes into its parent's dicts.
    options = model_options["transformer_options"].copy()
    replace = options.get("patches_replace", {}).copy()
    per_name = replace.get(name, {}).copy()
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    per_name[key] = patch
    replace[name] = per_name
    options["patches_replace"] = replace
    model_options["transformer_options"] = options
    return model_options


class UnetPatcher:
    def __init__(self, model):
        self.model = model  # has .diffusion_model and .apply_model
        self.model_options = {"transformer_options": {}}
        self.controlnet_linked_list = None
        self.extra_concat_condition = None

    def clone(self):
        n = UnetPatcher(self.model)
        n.model_options = copy.deepcopy(self.model_options)
        n.controlnet_linked_list = self.controlnet_linked_list
        n.extra_concat_condition = self.extra_concat_condition
        return n

    def add_patched_controlnet(self, cnet):
        cnet.previous_controlnet = self.controlnet_linked_list
        self.controlnet_linked_list = cnet

    def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options["sampler_post_cfg_function"] = self.model_options.get("sampler_post_cfg_function", []) + [fn]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_pre_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options["sampler_pre_cfg_function"] = self.model_options.get("sampler_pre_cfg_function", []) + [fn]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, fn):
        self.model_options["model_function_wrapper"] = fn

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = _set_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_patch(self, patch, name):
        options = self.model_options["transformer_options"]
        patches = options.setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn1_output_patch(self, patch):
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def memory_required(self, input_shape):
        return 0
