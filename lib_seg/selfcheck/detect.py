"""Which host answers and which model it has loaded, from what the API exposes."""
import re

# The UNet layouts the extension reports (lib_seg.layers: blocks with self-attention; transformers in m0).
FAMILIES = {
    ("d0-d5, m0, u0-u8", "m0.0"): "SD1.x/SD2.x",
    ("d0-d3, m0, u0-u5", "m0.0-9"): "SDXL base",
    ("d0-d3, m0, u0-u5", "m0.0-3"): "SDXL refiner",
}


def detect_host(options, xyz_entry):
    """Which WebUI answers, from what its API exposes: option keys only Forge or reForge define, and the
    X/Y/Z script's argument count (reForge's run() takes 21 positional args, A1111's and Forge's 18)."""
    keys = set(options)
    xyz_count = len(xyz_entry.get("args") or []) if xyz_entry else None
    found = {"xyz_args": xyz_count}
    if any(k.startswith("reforge_") for k in keys):
        found.update(name="reForge", evidence="options reforge_*")
    elif "forge_preset" in keys or "forge_additional_modules" in keys:
        found.update(name="Forge", evidence="options forge_preset/forge_additional_modules")
    elif xyz_count == 21:
        found.update(name="reForge", evidence="X/Y/Z takes 21 args")
    elif any(k.startswith("forge_") for k in keys):
        found.update(name="Forge (older) or reForge", evidence="options forge_*")
    else:
        found.update(name="AUTOMATIC1111", evidence="no Forge/reForge options")
    if xyz_count is not None:
        found["evidence"] += f"; X/Y/Z takes {xyz_count} args"
    return found


def _transformer_family(text):
    """A transformer model's refusal lists its joint (j) and single-stream (s) blocks: Flux and Chroma have
    19 + 38, SD3/SD3.5 joint blocks only."""
    found = re.search(r"has (j0[^()]*?)\s*\(presets", text)
    if not found:
        return None
    layout = found.group(1).strip().rstrip(",")
    if ", s0-" in layout:
        family = "Flux/Chroma" if layout == "j0-j18, s0-s37" else "Flux/Chroma-like DiT (a reduced test size)"
    else:
        family = "SD3/SD3.5 MMDiT"
    return {"layout": layout, "middle_transformers": None, "family": family}


def layout_from_refusal(text):
    """The UNet layout named in the extension's refusal of a layer the model lacks (it lists the blocks the
    loaded model has, and the transformers of m0), and the model family that layout means; for transformer
    models (Flux, Chroma, SD3) their joint and single-stream blocks."""
    dit = _transformer_family(text)
    if dit is not None:
        return dit
    blocks = re.search(r"has (d0[^()]*?)\)?\s*$", text) or re.search(r"has (d0[^()]*)", text)
    middle = re.search(r"transformers (m0\.[0-9]+(?:-[0-9]+)?)", text)
    layout = blocks.group(1).strip() if blocks else None
    transformers = middle.group(1) if middle else None
    family = FAMILIES.get((layout, transformers), "unknown layout" if layout else f"unknown ({text[:120]})")
    return {"layout": layout, "middle_transformers": transformers, "family": family}


def script_entry(script_info, name, img2img=False):
    """The /sdapi/v1/script-info entry of script `name` (txt2img unless `img2img`), or None."""
    for entry in script_info or []:
        if isinstance(entry, dict) and entry.get("name") == name and bool(entry.get("is_img2img")) == img2img:
            return entry
    return None
