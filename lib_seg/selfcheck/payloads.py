"""What the self-check sends: the extension's API names, the fixed generation settings and the SEG argument
lists every check builds on."""

# The extension's API name and the first parameters of its positional order: lib_seg.ui.API_NAME and
# lib_seg.params.API_NAMES (restated, not imported, so that the self-check runs anywhere; tests/test_selfcheck.py
# keeps them equal). Later parameters (perturbation mode, hires override) are appended and take defaults.
SEG_API_NAME = "smoothed energy guidance (seg)"
SEG_ARG_NAMES = ("enabled", "scale", "sigma", "layers", "start", "end", "rescale")
SEG_SIGMA_AXIS = "SEG sigma"    # the X/Y/Z axis label (lib_seg.params label of "sigma")
XYZ_SCRIPT = "x/y/z plot"       # the X/Y/Z plot script's API name in all three hosts
# The perturbation control's label and its PAG choice's label, as /sdapi/v1/script-info advertises them
# (lib_seg.params: label and choice_labels of "mode").
PERTURBATION_LABEL = "SEG perturbation"
PAG_LABEL = "Identity attention (PAG)"

PROMPT = "a lighthouse on a rocky coast at sunset, photograph"
NEGATIVE = "blurry"
SEED = 20240801
CFG = 5.0
SAMPLER = "Euler"         # deterministic (no ancestral noise), present in every host
# Forge's API leaves the scheduler at "Automatic", which for a flow-matching transformer (Flux, Chroma, SD3 in Forge
# dfdcbab6) samples at sigmas 9999, 6666, 3333, 0 and decodes an all-black image, with or without SEG (seen in the
# real Forge with the harness's Flux); Forge's UI presets for these models select "Simple". Sent only to Forge
# with a transformer model (runner.SelfCheck.probe).
FORGE_DIT_SCHEDULER = "Simple"
SEG_ON = [True, 3, "inf", "mid", 0, 1, 0]   # positional, in SEG_ARG_NAMES order
SEG_ON_NAMED = [dict(zip(SEG_ARG_NAMES, SEG_ON))]
# Runs "without SEG" say so explicitly: a user's ui-config.json may have changed the UI default (which is what
# the API uses for arguments a request leaves out).
SEG_OFF = [False]
# Named fields added after the first seven (lib_seg.params: mode, hires, hr_*), sent by name only.
SEG_PAG_NAMED = [dict(SEG_ON_NAMED[0], mode="identity")]
# The hires pass's own settings: sigma 1 on every layer, far enough from the first pass's (sigma inf, mid) to
# change the image even where the host runs its hires pass at CFG 1 (Forge's Hires CFG default): sigma 1 on the
# middle block alone changed under 0.1 % of the pixels there.
SEG_HIRES_OWN_NAMED = [dict(SEG_ON_NAMED[0], hires="own", hr_scale=3, hr_sigma=1, hr_layers="all")]
SEG_BAD_SIGMA = [True, 3, -1, "mid"]
LAYER_PROBE = "m0.99"     # a transformer no model has: the refusal lists the model's layout
XYZ_SIGMAS = ["1", "inf"]


def txt2img(size, steps, seg=SEG_OFF, changes=None):
    """The self-check's txt2img request: fixed prompt, seed, sampler and CFG, SEG args `seg`, then the fields
    in `changes` (which may override any of these)."""
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "seed": SEED, "subseed": -1,
            "subseed_strength": 0, "steps": steps, "cfg_scale": CFG, "width": size,
            "height": size, "sampler_name": SAMPLER, "batch_size": 1, "n_iter": 1,
            "send_images": True, "save_images": False}
    body["alwayson_scripts"] = {SEG_API_NAME: {"args": seg}}
    body.update(changes or {})
    return body


def hires_fields(steps):
    """The fields that turn the hires fix on (x1.5, Latent upscaler, denoising 0.6)."""
    # hr_additional_modules: Forge's API hires pass needs it; A1111 and reForge ignore the unknown field.
    return dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=max(2, steps // 2),
                denoising_strength=0.6, hr_additional_modules=["Use same choices"])
