"""A small fake WebUI HTTP API for tests/test_selfcheck.py (standard library only).

Request and response shapes are restated, in our own words, from AUTOMATIC1111 stable-diffusion-webui 1.10.1
(commit 82a973c04367123ae98bd9abdf80d9eda9b910e2):
- modules/api/api.py: routes /sdapi/v1/{options, sd-models, scripts, script-info, txt2img, img2img};
  ``handle_exception`` answers {"error", "detail", "body", "errors"} with the exception's ``status_code``
  (500 when it has none); ``init_script_args`` copies ``alwayson_scripts[name]["args"]`` positionally over the
  script's UI defaults (as many as the script has); ``apply_infotext`` fills the request fields that were not
  set from the parsed infotext, and script args through the scripts' paste functions (alwayson args still win);
  ``script_name``/``script_args`` run a selectable script (here only X/Y/Z).
- modules/api/models.py: TextToImageResponse {images: [base64 PNG], parameters, info: JSON text of
  Processed.js() with "infotexts", "version", ...}; ScriptsList {txt2img, img2img}; ScriptInfo {name,
  is_alwayson, is_img2img, args: [{label, value, minimum, maximum, step, choices}]}; unknown request fields are
  ignored.
- scripts/xyz_grid.py: run(p, x_type, x_values, x_values_dropdown, y_type, ..., draw_legend,
  include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x/y/z, margin_size, csv_mode) with
  ``*_type`` an index into the axis list; axes with choices read the dropdown list unless csv_mode; a failed
  cell becomes a black image; the answer is [grid] + cells when include_lone_images.
reForge (Panchovix/stable-diffusion-webui-reForge 3b56b268, scripts/xyz_grid.py) adds draw_individual_labels,
skip_grid and items_per_grid after draw_legend (21 args). Forge (lllyasviel/stable-diffusion-webui-forge
dfdcbab6) as observed in shared/HOSTS.md: an ``infotext`` request needs ``styles`` and a hires request
needs ``hr_additional_modules``, else the request fails.

The "images" are not diffusion: pixels are a hash stream of everything that decides the picture (seed, size,
steps, CFG, sampler, SEG settings when SEG is active, hires, init image), so equal requests give equal pixels
and any SEG setting that takes effect changes them. ``FakeConfig`` switches on the faults tests look for.
"""
import base64
import hashlib
import json
import math
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEG_TITLE = "Smoothed Energy Guidance (SEG)"
SEG_NAMES = ("enabled", "scale", "sigma", "layers", "start", "end", "rescale", "mode", "hires", "hr_scale",
             "hr_sigma", "hr_layers", "hr_mode")
SEG_DEFAULTS = (False, 3.0, "inf", "mid", 0.0, 1.0, 0.0, "blur", "same", 3.0, "inf", "mid", "blur")
SEG_LABELS = (SEG_TITLE, "SEG scale", "SEG sigma", "SEG layers", "SEG start", "SEG end", "SEG rescale",
              "SEG perturbation", "SEG hires pass", "SEG hires scale", "SEG hires sigma", "SEG hires layers",
              "SEG hires perturbation")
# What script-info advertises as a Radio's choices: its labels (A1111 1.10.1 and Forge, shared/HOSTS.md);
# label -> value
SEG_RADIO_LABELS = {"mode": {"Smoothed energy (SEG)": "blur", "Identity attention (PAG)": "identity"},
                    "hires": {"Same as first pass": "same", "Own settings": "own", "No SEG": "off"},
                    "hr_mode": {"Smoothed energy (SEG)": "blur", "Identity attention (PAG)": "identity"}}
# Infotext keys of another extension that switches itself on for every request with `infotext` (seen in real
# Forge dfdcbab6 with sd-perturbed-attention 904319b: its SWG, shared/HOSTS.md)
NEIGHBOUR_KEYS = {"swg": {"swg_enabled": True, "swg_scale": 5.0, "swg_tile_width": 768, "swg_tile_height": 768,
                          "swg_tile_overlap": 256}}
# infotext key -> field, for the keys this fake writes and pastes (lib_seg.params: mode and the hires keys only
# when they are not the default)
SEG_INFOTEXT = {"SEG scale": "scale", "SEG sigma": "sigma", "SEG layers": "layers", "SEG mode": "mode",
                "SEG hires": "hires", "SEG hires scale": "hr_scale", "SEG hires sigma": "hr_sigma",
                "SEG hires layers": "hr_layers", "SEG hires mode": "hr_mode"}

AXES = ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
        "Sampler", "Checkpoint name", "Size", "SEG scale", "SEG sigma", "SEG layers", "SEG start", "SEG end",
        "SEG rescale", "SEG enabled"]
AXIS_CHOICES = {"SEG sigma": ["inf", "1", "2", "4", "8", "16", "64", "256"],
                "SEG layers": ["mid", "down", "up", "all"], "SEG enabled": ["True", "False"],
                "Sampler": ["Euler", "Euler a"], "Checkpoint name": []}

LAYOUTS = {"sd15": ("d0-d5, m0, u0-u8", "m0.0"), "sdxl": ("d0-d3, m0, u0-u5", "m0.0-9")}
MODELS = [{"title": "fake15.safetensors [0123456789]", "model_name": "fake15", "hash": "0123456789",
           "sha256": None, "filename": "/models/fake15.safetensors", "config": None, "layout": "sd15"},
          {"title": "fakexl.safetensors [abcdef0123]", "model_name": "fakexl", "hash": "abcdef0123",
           "sha256": None, "filename": "/models/fakexl.safetensors", "config": None, "layout": "sdxl"}]


@dataclass
class FakeConfig:
    host: str = "a1111"            # "a1111" | "forge" | "reforge"
    api: bool = True               # False: /sdapi answers 404 (WebUI started without --api)
    seg_installed: bool = True
    seg_ignored: bool = False      # SEG args parsed but never change the image
    refusal_status: int = 422      # status of a refused SEG value; 200 = bad values silently accepted
    leak: bool = False             # after a SEG run, SEG stays on for later runs (hooks outlive a generation)
    infotext_restores_seg: bool = True
    named_args: bool = True        # False: the named-object form is read as "disabled"
    xyz_axis_used: bool = True     # False: SEG X/Y/Z axes enable SEG but their values are dropped
    hires_keeps_seg: bool = True   # False: hires-fix images come out as without SEG
    mode_used: bool = True         # False: the perturbation mode is accepted but blur runs whatever it says
    hires_override_used: bool = True  # False: the hires pass runs the first pass's settings whatever "hires" says
    seg_effect: str = "full"       # "full": a new image; "round_off": every value moved by one level (what fp32
                                   # round-off can do); "weak": 1 pixel in 400 moved by 5 levels
    hires_override_weak: bool = False  # True: the hires pass's own settings move every value by one level only
    labels_accepted: bool = True   # False: a choice's label (what script-info advertises) is refused, as before 22.6
    neighbour: str = ""            # "swg": another extension switches itself on for infotext requests (NEIGHBOUR_KEYS)
    model: str = MODELS[0]["title"]
    requests: list = field(default_factory=list)
    leaked: bool = False


class HttpError(Exception):
    def __init__(self, status, message, kind="HTTPException"):
        super().__init__(message)
        self.status, self.kind = status, kind


# ---------------------------------------------------------------- pixels

def pixels(key, width, height):
    """A deterministic RGB image for ``key``: a SHA-256 stream, smooth enough to look like a picture."""
    seed = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).digest()
    coarse = bytearray()
    counter = 0
    while len(coarse) < 16 * 16 * 3:
        coarse += hashlib.sha256(seed + struct.pack(">I", counter)).digest()
        counter += 1
    out = bytearray(width * height * 3)
    for y in range(height):
        for x in range(width):
            c = ((y * 16 // height) * 16 + x * 16 // width) * 3
            out[(y * width + x) * 3:(y * width + x) * 3 + 3] = coarse[c:c + 3]
    return bytes(out)


def png(width, height, rgb, text=None):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if text:  # A1111 writes the infotext as a "parameters" text chunk: the file bytes differ, pixels don't
        body += chunk(b"tEXt", b"parameters\x00" + text.encode("latin-1", "replace"))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- SEG, as the extension reads its args

def _sigma(values, name):
    sigma = values[name]
    if isinstance(sigma, str) and sigma.strip().lower() == "inf":
        return "inf"
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        sigma = float("nan")
    if not sigma > 0:
        raise HttpError(0, f"SEG sigma ({name}): got {values[name]} (must be > 0); accepted: a number > 0, "
                           "or inf", "SegParamError")
    return "%g" % sigma


def seg_settings(args, labels_accepted=True):
    """{name: value} from the script's args slice; raises HttpError naming the field (like SegParamError)."""
    if args and isinstance(args[0], dict):
        values = dict(zip(SEG_NAMES, SEG_DEFAULTS))
        values.update(args[0])
    else:
        values = dict(zip(SEG_NAMES, list(args) + list(SEG_DEFAULTS[len(args):])))
    for name in ("sigma", "hr_sigma"):
        values[name] = _sigma(values, name)
    for name in ("scale", "start", "end", "rescale", "hr_scale"):
        values[name] = float(values[name])
    for name, accepted in (("mode", ("blur", "identity")), ("hr_mode", ("blur", "identity")),
                           ("hires", ("same", "own", "off"))):
        if labels_accepted and isinstance(values[name], str):  # a label, any case, means its value
            by_label = {label.lower(): value for label, value in SEG_RADIO_LABELS[name].items()}
            values[name] = by_label.get(values[name].lower(), values[name])
        if values[name] not in accepted:
            raise HttpError(0, f"SEG ({name}): got {values[name]!r}; accepted: {', '.join(accepted)}",
                            "SegParamError")
    values["enabled"] = values["enabled"] in (True, "true", "True", 1)
    return values


def hires_pass_settings(seg):
    """What the hires fix's second pass runs with (lib_seg.params.SegSettings.for_pass): None = no SEG."""
    if seg["hires"] == "off":
        return None
    if seg["hires"] == "own":
        return {"scale": seg["hr_scale"], "sigma": seg["hr_sigma"], "layers": seg["hr_layers"],
                "mode": seg["hr_mode"]}
    return {k: seg[k] for k in ("scale", "sigma", "layers", "mode")}


def check_layers(spec, layout):
    blocks, middle = LAYOUTS[layout]
    if spec in ("mid", "down", "up", "all"):
        return
    if re.fullmatch(r"m0\.(\d+)", spec):
        k = int(spec.split(".")[1])
        top = int(middle.split("-")[-1].split(".")[-1])
        if k <= top:
            return
        raise HttpError(0, f"SEG layers (layers): got '{spec}', not in this model; accepted: its block m0 has "
                           f"transformers {middle} (this model has {blocks})", "SegParamError")
    raise HttpError(0, f"SEG layers (layers): got {spec!r}, not in this model; accepted: this model has {blocks}",
                    "SegParamError")


def seg_infotext(values, hires_fix=False):
    out = {"SEG scale": "%g" % values["scale"], "SEG sigma": values["sigma"], "SEG layers": values["layers"]}
    if values["mode"] != "blur":
        out["SEG mode"] = values["mode"]
    if hires_fix and values["hires"] != "same":
        out["SEG hires"] = values["hires"]
        if values["hires"] == "own":
            out.update({"SEG hires scale": "%g" % values["hr_scale"], "SEG hires sigma": values["hr_sigma"],
                        "SEG hires layers": values["hr_layers"]})
            if values["hr_mode"] != "blur":
                out["SEG hires mode"] = values["hr_mode"]
    return out


def parse_infotext(text):
    """Prompt, negative prompt and the "Key: value" pairs of the last line (values without commas here)."""
    lines = text.strip().split("\n")
    params = dict(p.split(": ", 1) for p in lines[-1].split(", ") if ": " in p)
    params["Prompt"] = lines[0]
    for line in lines[1:-1]:
        if line.startswith("Negative prompt: "):
            params["Negative prompt"] = line[len("Negative prompt: "):]
    return params


# ---------------------------------------------------------------- the server

class FakeWebUI:
    def __init__(self, config=None):
        self.config = config or FakeConfig()
        handler = type("Handler", (_Handler,), {"webui": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll: shutdown() waits for the serving loop to look, 0.5 s by default, at every test's end
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ---- reference data

    @property
    def model(self):
        return next(m for m in MODELS if m["title"] == self.config.model)

    def options(self):
        out = {"sd_model_checkpoint": self.config.model, "samples_format": "png", "return_grid": True,
               "CLIP_stop_at_last_layers": 1}
        if self.config.host == "forge":
            out.update(forge_preset="sd", forge_additional_modules=[])
        if self.config.host == "reforge":
            out.update(reforge_karras_rho=7.0, forge_try_reproduce="None")
        return out

    def xyz_labels(self):
        head = ["X type", "X values", "X values", "Y type", "Y values", "Y values", "Z type", "Z values", "Z values",
                "Draw legend"]
        if self.config.host == "reforge":
            head += ["Draw individual labels", "Skip final grid generation",
                     "Items per grid (0 = default), for sequential grid generation."]
        return head + ["Include Sub Images", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X",
                       "Vary seeds for Y", "Vary seeds for Z", "Grid margins (px)",
                       "Use text inputs instead of dropdowns"]

    def script_info(self):
        out = []
        for img2img in (False, True):
            if self.config.seg_installed:
                args = [{"label": label, "value": value} for label, value in zip(SEG_LABELS, SEG_DEFAULTS)]
                for arg, name in zip(args, SEG_NAMES):
                    if name in SEG_RADIO_LABELS:
                        arg["choices"] = list(SEG_RADIO_LABELS[name])
                out.append({"name": SEG_TITLE.lower(), "is_alwayson": True, "is_img2img": img2img, "args": args})
            args = []
            for label in self.xyz_labels():
                arg = {"label": label, "value": False}
                if label.endswith("type"):  # gradio 3 Dropdown(type="index") shows the label as its value
                    arg.update(value="Seed" if label == "X type" else "Nothing", choices=list(AXES))
                elif label.endswith("values"):
                    arg["value"] = ""
                elif label.startswith(("Grid margins", "Items per grid")):
                    arg["value"] = 0
                args.append(arg)
            out.append({"name": "x/y/z plot", "is_alwayson": False, "is_img2img": img2img, "args": args})
        return out

    # ---- generation

    def process(self, request, img2img):
        cfg = self.config
        if cfg.host == "forge" and "infotext" in request and "styles" not in request:
            raise HttpError(0, "'NoneType' object is not iterable", "TypeError")
        if cfg.host == "forge" and request.get("enable_hr") and "hr_additional_modules" not in request:
            raise HttpError(0, "'NoneType' object is not iterable", "TypeError")
        if (cfg.host == "a1111" and "Hires upscale" in (request.get("infotext") or "")
                and "Hires sampler" not in request["infotext"] and "hr_sampler_name" not in request):
            # A1111 1.10: parse_generation_parameters fills "Hires sampler" with "Use same sampler", the API
            # sets hr_sampler_name from it and sampling fails (seen in the real host)
            raise HttpError(0, "bad sampler name: Use same sampler", "ValueError")
        fields = {"prompt": "", "negative_prompt": "", "seed": -1, "steps": 50, "cfg_scale": 7.0, "width": 512,
                  "height": 512, "sampler_name": "Euler", "batch_size": 1, "enable_hr": False, "hr_scale": 2.0,
                  "denoising_strength": 0.75}
        seg_args = list(SEG_DEFAULTS)
        if request.get("infotext"):
            params = parse_infotext(request["infotext"])
            pasted = {"prompt": params.get("Prompt"), "negative_prompt": params.get("Negative prompt"),
                      "steps": params.get("Steps"), "sampler_name": params.get("Sampler"),
                      "cfg_scale": params.get("CFG scale"), "seed": params.get("Seed")}
            if "Size" in params:
                pasted["width"], pasted["height"] = params["Size"].split("x")
            # A1111 modules/infotext_utils.py: the txt2img paste turns the hires fix on when the infotext has
            # "Denoising strength" and a hires key
            if "Denoising strength" in params and "Hires upscale" in params:
                pasted.update(enable_hr=True, hr_scale=params["Hires upscale"],
                              denoising_strength=params["Denoising strength"])
            for key, value in pasted.items():
                if value is not None and key not in request:
                    kind = type(fields[key])
                    fields[key] = value if kind is str else (value == "True" or value is True if kind is bool
                                                             else kind(value))
            if cfg.infotext_restores_seg and "SEG scale" in params:
                seg_args[0] = True
                for key, name in SEG_INFOTEXT.items():
                    if key in params:
                        seg_args[SEG_NAMES.index(name)] = params[key]
            else:
                seg_args[0] = False
        for key in fields:
            if key in request and request[key] is not None:
                fields[key] = request[key]
        scripts = request.get("alwayson_scripts") or {}
        for name, value in scripts.items():
            if name.lower() != SEG_TITLE.lower() or not cfg.seg_installed:
                raise HttpError(422, f"always on script {name} not found")
            for i, arg in enumerate((value.get("args") or [])[:len(SEG_NAMES)]):
                seg_args[i] = arg
        if scripts and not cfg.named_args and seg_args and isinstance(seg_args[0], dict):
            seg_args = list(SEG_DEFAULTS)
        if fields["seed"] in (-1, None):
            fields["seed"] = int.from_bytes(hashlib.sha256(str(id(request)).encode()).digest()[:4], "big")
        init = None
        if img2img:
            init = hashlib.sha256(base64.b64decode(request["init_images"][0])).hexdigest()
        script_name = (request.get("script_name") or "").lower()
        if script_name:
            if script_name != "x/y/z plot":
                raise HttpError(422, f"Script '{request['script_name']}' not found")
            return self.xyz(fields, seg_args, request.get("script_args") or [], init)
        neighbour = NEIGHBOUR_KEYS.get(cfg.neighbour) if request.get("infotext") else None
        return self.generate(fields, seg_args, init, neighbour)

    def seg_for(self, seg_args):
        """Validated SEG values, or None when SEG is off; bad values raise (the extension's refusal)."""
        if not self.config.seg_installed:
            return None
        seg = seg_settings(seg_args, self.config.labels_accepted)
        if not seg["enabled"] or seg["scale"] == 0:
            return None
        check_layers(seg["layers"], self.model["layout"])
        return seg

    def generate(self, fields, seg_args, init, extra_key=None):
        seg = self.seg_for(seg_args)
        cfg = self.config
        if seg is not None and not cfg.seg_ignored:
            cfg.leaked = cfg.leaked or cfg.leak
        width, height = int(fields["width"]), int(fields["height"])
        first_pass = f"{width}x{height}"
        if fields["enable_hr"]:
            width, height = int(width * fields["hr_scale"]), int(height * fields["hr_scale"])
        images, infotexts = [], []
        for index in range(int(fields["batch_size"])):
            seed = int(fields["seed"]) + index
            key = {"seed": seed, "size": (width, height), "steps": fields["steps"], "cfg": float(fields["cfg_scale"]),
                   "sampler": fields["sampler_name"], "prompt": fields["prompt"], "hr": fields["enable_hr"],
                   "init": init, "denoise": fields["denoising_strength"] if init or fields["enable_hr"] else None,
                   "model": cfg.model}
            same_hires = None
            if seg is not None and not cfg.seg_ignored and (cfg.hires_keeps_seg or not fields["enable_hr"]):
                used = dict(seg) if cfg.mode_used else dict(seg, mode="blur", hr_mode="blur")
                key["seg"] = {k: used[k] for k in ("scale", "sigma", "layers", "mode", "start", "end", "rescale")}
                if fields["enable_hr"]:
                    same_hires = hires_pass_settings(dict(used, hires="same"))
                    key["seg_hires"] = hires_pass_settings(used) if cfg.hires_override_used else same_hires
            elif cfg.leaked:
                key["leak"] = True
            if extra_key:  # another extension's doing: its keys in the infotext, its effect on the pixels
                key["neighbour"] = extra_key
            params = {"Steps": fields["steps"], "Sampler": fields["sampler_name"],
                      "CFG scale": "%g" % float(fields["cfg_scale"]), "Seed": seed, "Size": first_pass,
                      "Model hash": self.model["hash"], "Model": self.model["model_name"]}
            if fields["enable_hr"]:
                params.update({"Denoising strength": "%g" % float(fields["denoising_strength"]),
                               "Hires upscale": "%g" % float(fields["hr_scale"])})
            if seg is not None:
                params.update(seg_infotext(seg, fields["enable_hr"]))
            params.update(extra_key or {})
            params["Version"] = "v1.10.1"
            text = (f"{fields['prompt']}\nNegative prompt: {fields['negative_prompt']}\n"
                    + ", ".join(f"{k}: {v}" for k, v in params.items()))
            weak_hires = cfg.hires_override_weak and key.get("seg_hires", same_hires) != same_hires
            if "seg" in key and cfg.seg_effect != "full" or weak_hires:
                if weak_hires:  # the first pass's settings' image, every value moved by one level
                    plain = bytearray(pixels(dict(key, seg_hires=same_hires), width, height))
                else:
                    plain = bytearray(pixels({k: v for k, v in key.items() if k != "seg"}, width, height))
                step, delta = (1, 1) if weak_hires or cfg.seg_effect == "round_off" else (400 * 3, 5)
                for i in range(0, len(plain), step):
                    plain[i] = plain[i] + delta if plain[i] + delta <= 255 else plain[i] - delta
                rgb = bytes(plain)
            else:
                rgb = pixels(key, width, height)
            images.append((width, height, rgb, text))
            infotexts.append(text)
        return images, infotexts

    def xyz(self, fields, seg_args, script_args, init):
        labels = self.xyz_labels()
        if len(script_args) != len(labels):
            raise HttpError(0, f"run() takes {len(labels) + 2} positional arguments but {len(script_args) + 2} "
                               "were given", "TypeError")
        named = {}
        for label, value in zip(labels, script_args):
            named.setdefault(label, []).append(value)
        x_type = named["X type"][0]
        if not isinstance(x_type, int):
            raise HttpError(0, "list indices must be integers or slices, not str", "TypeError")
        axis = AXES[x_type]
        csv_mode = named["Use text inputs instead of dropdowns"][0]
        if axis in AXIS_CHOICES and not csv_mode:
            values = list(named["X values"][1])
        else:
            values = [v.strip() for v in named["X values"][0].split(",") if v.strip()]
        for axis_label in ("Y type", "Z type"):
            if AXES[named[axis_label][0]] != "Nothing":
                raise HttpError(0, "this fake only sweeps X")
        if not axis.startswith("SEG "):
            raise HttpError(0, f"this fake only sweeps SEG axes, not {axis}")
        name = axis[4:]
        base = seg_settings(seg_args)
        cells, texts = [], []
        for value in values:
            overridden = dict(base, **({name: value} if self.config.xyz_axis_used else {}))
            overridden.setdefault("enabled", True)
            if name != "enabled":
                overridden["enabled"] = True
            try:
                images, infotexts = self.generate(fields, [overridden], init)
            except HttpError:  # X/Y/Z prints the error and leaves a black cell
                images = [(int(fields["width"]), int(fields["height"]),
                           bytes(int(fields["width"]) * int(fields["height"]) * 3), "")]
                infotexts = [""]
            cells.append(images[0])
            texts.append(infotexts[0])
        width, height = cells[0][0], cells[0][1]
        rows = []
        for y in range(height):
            rows.append(b"".join(c[2][y * width * 3:(y + 1) * width * 3] for c in cells))
        grid = (width * len(cells), height, b"".join(rows), texts[0])
        if named["Include Sub Images"][0]:
            return [grid] + cells, [texts[0]] + texts
        return [grid], [texts[0]]


class _Handler(BaseHTTPRequestHandler):
    webui = None

    def log_message(self, *args):
        pass

    def _answer(self, status, data):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error):
        status = error.status or 500
        if error.kind == "SegParamError":
            status = self.webui.config.refusal_status
        self._answer(status, {"error": error.kind, "detail": str(error) if error.kind == "HTTPException" else "",
                              "body": "", "errors": str(error)})

    def do_GET(self):
        webui = self.webui
        webui.config.requests.append(("GET", self.path, None))
        if not webui.config.api or not self.path.startswith("/sdapi/v1/"):
            return self._answer(404, {"detail": "Not Found"})
        route = self.path[len("/sdapi/v1/"):]
        if route == "options":
            return self._answer(200, webui.options())
        if route == "sd-models":
            return self._answer(200, [{k: v for k, v in m.items() if k != "layout"} for m in MODELS])
        if route == "scripts":
            names = ["x/y/z plot", "prompt matrix"] + ([SEG_TITLE.lower()] if webui.config.seg_installed else [])
            return self._answer(200, {"txt2img": names, "img2img": names})
        if route == "script-info":
            return self._answer(200, webui.script_info())
        return self._answer(404, {"detail": "Not Found"})

    def do_POST(self):
        webui = self.webui
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        webui.config.requests.append(("POST", self.path, request))
        if not webui.config.api or not self.path.startswith("/sdapi/v1/"):
            return self._answer(404, {"detail": "Not Found"})
        route = self.path[len("/sdapi/v1/"):]
        if route == "options":
            title = request.get("sd_model_checkpoint")
            if title is not None:
                if title not in [m["title"] for m in MODELS]:
                    return self._error(HttpError(500, f"model {title!r} not found", "RuntimeError"))
                webui.config.model = title
            return self._answer(200, None)
        if route not in ("txt2img", "img2img"):
            return self._answer(404, {"detail": "Not Found"})
        try:
            images, infotexts = webui.process(request, route == "img2img")
        except HttpError as error:
            return self._error(error)
        encoded = [base64.b64encode(png(w, h, rgb, text)).decode() for w, h, rgb, text in images]
        info = {"infotexts": infotexts, "version": "v1.10.1", "seed": request.get("seed")}
        self._answer(200, {"images": encoded, "parameters": request, "info": json.dumps(info)})
