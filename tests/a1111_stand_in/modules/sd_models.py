"""Follows modules/sd_models.py of A1111 1.10.1: ``apply_token_merging``, which patches the model with the
tomesd package (the same PyPI package A1111 installs) before each sampling pass."""
import tomesd


def apply_token_merging(sd_model, token_merging_ratio):
    current = getattr(sd_model, "applied_token_merged_ratio", 0)
    if current == token_merging_ratio:
        return
    if current > 0:
        tomesd.remove_patch(sd_model)
    if token_merging_ratio > 0:
        tomesd.apply_patch(sd_model, ratio=token_merging_ratio, use_rand=False, merge_attn=True,
                           merge_crossattn=False, merge_mlp=False)
    sd_model.applied_token_merged_ratio = token_merging_ratio
