"""One self-check run: its requests (logged into the record), the generations several checks share, the
header (host, model) and the loop over the checks."""
import hashlib
import json
import os
import platform
import time

from lib_seg.selfcheck import images
from lib_seg.selfcheck.checks import CHECKS
from lib_seg.selfcheck.client import RequestFailed, Skip, Stop, Unreachable
from lib_seg.selfcheck.detect import detect_host, layout_from_refusal, script_entry
from lib_seg.selfcheck.images import CHANGED_FRACTION, CHANGED_LEVELS, ImageError, decode_image
from lib_seg.selfcheck.payloads import (CFG, FORGE_DIT_SCHEDULER, LAYER_PROBE, SAMPLER, SEED, SEG_OFF, SEG_ON,
                                        XYZ_SCRIPT, hires_fields, txt2img)


class Generation:
    def __init__(self, images, b64, info):
        self.images, self.b64, self.info = images, b64, info

    def infotext(self, index=0):
        texts = self.info.get("infotexts") or []
        return texts[index] if index < len(texts) else ""


class SelfCheck:
    CHECKS = CHECKS  # (line name, check function), in the order they run and print

    def __init__(self, api, size=128, steps=6, checkpoint=None, only=None):
        self.api = api
        self.only = only
        self.size = size
        self.steps = steps
        self.checkpoint = checkpoint
        self.record = {
            "tool": "lib_seg.selfcheck", "url": api.url,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "client": {"python": platform.python_version(), "pillow": images._PIL_Image is not None,
                       "numpy": images._np is not None},
            "settings": {"size": size, "steps": steps, "seed": SEED, "cfg_scale": CFG, "sampler": SAMPLER,
                         "changed_levels": CHANGED_LEVELS, "changed_fraction": CHANGED_FRACTION},
            "host": {}, "model": {}, "checks": [], "requests": [],
        }
        self._cache = {}
        self.script_info = None
        self.fixed = {}  # fields every generation adds for this host and model (probe): Forge's DiT scheduler

    # ------------------------------------------------------------ requests

    def _log(self, label, method, path, payload, reply, images=None, error=None):
        fields = {}
        if payload:
            for key in ("seed", "steps", "cfg_scale", "width", "height", "batch_size", "sampler_name", "enable_hr",
                        "hr_scale", "denoising_strength", "scheduler", "hr_scheduler", "hr_sampler_name", "script_name", "script_args", "alwayson_scripts",
                        "styles", "hr_additional_modules"):
                if key in payload:
                    fields[key] = payload[key]
            if "infotext" in payload:
                fields["infotext"] = payload["infotext"]
            if "init_images" in payload:
                fields["init_images"] = [hashlib.sha256(x.encode()).hexdigest()[:16] for x in payload["init_images"]]
        entry = {"label": label, "method": method, "path": path, "fields": fields,
                 "status": reply.status if reply else None,
                 "seconds": round(reply.seconds, 3) if reply else None}
        if images is not None:
            entry["images"] = [{"size": list(p.size), "sha256": p.sha256} for p in images]
        if reply is not None and reply.status != 200:
            entry["message"] = reply.message(2000)
        if error:
            entry["error"] = error
        self.record["requests"].append(entry)

    def get(self, label, path, timeout=None):
        reply = self.api.get(path, timeout=timeout)
        self._log(label, "GET", path, None, reply)
        return reply

    def post(self, label, path, payload):
        """A request whose status the caller judges (no image decoding)."""
        reply = self.api.post(path, payload)
        self._log(label, "POST", path, payload, reply)
        return reply

    def generate(self, label, payload, path="/sdapi/v1/txt2img"):
        reply = self.api.post(path, payload)
        if reply.status != 200:
            self._log(label, "POST", path, payload, reply)
            raise RequestFailed(label, reply)
        data = reply.json if isinstance(reply.json, dict) else {}
        b64 = data.get("images") or []
        try:
            pixels = [decode_image(x) for x in b64]
        except ImageError as error:
            self._log(label, "POST", path, payload, reply, error=str(error))
            raise Skip(str(error)) from None
        try:
            info = json.loads(data.get("info") or "{}")
        except ValueError:
            info = {}
        self._log(label, "POST", path, payload, reply, images=pixels)
        if "version" in info and "version" not in self.record["host"]:
            self.record["host"]["version"] = info["version"]
        return Generation(pixels, b64, info if isinstance(info, dict) else {})

    def payload(self, seg=SEG_OFF, **changes_):
        return txt2img(self.size, self.steps, seg, dict(self.fixed, **changes_))

    def hires_payload(self, seg):
        return self.payload(seg, **hires_fields(self.steps))

    def cached(self, key, label, payload, path="/sdapi/v1/txt2img"):
        """One generation per key, reused by every check that needs it (a failure is remembered too)."""
        if key not in self._cache:
            try:
                self._cache[key] = self.generate(label, payload, path)
            except (RequestFailed, Skip) as error:
                self._cache[key] = error
        value = self._cache[key]
        if isinstance(value, Exception):
            raise value
        return value

    def base(self):
        return self.cached("base", "no SEG (before)", self.payload())

    def seg(self):
        return self.cached("seg", "SEG positional", self.payload(SEG_ON))

    def pair(self, label, path="/sdapi/v1/txt2img", **changes_):
        off = self.generate(f"{label}, no SEG", self.payload(**changes_), path)
        on = self.generate(f"{label}, SEG", self.payload(SEG_ON, **changes_), path)
        return off, on

    def replay(self, label, generation, **fields):
        """The generation made again from its infotext alone (and ``fields``)."""
        # styles: [] because Forge on gradio 4 fails an infotext request without it (harmless elsewhere).
        return self.generate(label, dict({"infotext": generation.infotext(), "styles": [], "send_images": True,
                                          "save_images": False}, **fields))

    def script(self, name):
        """This script's txt2img entry in /sdapi/v1/script-info, or None."""
        return script_entry(self.script_info, name)

    # ------------------------------------------------------------ header

    def probe(self):
        """Host, checkpoint and model layout. Raises Unreachable or Stop."""
        reply = self.get("options", "/sdapi/v1/options")
        if reply.status == 404:
            raise Stop(f"{self.api.url}/sdapi/v1/options answers 404: start the WebUI with --api "
                       "(in COMMANDLINE_ARGS)")
        if reply.status != 200 or not isinstance(reply.json, dict):
            raise Stop(f"{self.api.url}/sdapi/v1/options: HTTP {reply.status}: {reply.message()} "
                       "(is this a WebUI started with --api?)")
        options = reply.json
        models = self.get("sd-models", "/sdapi/v1/sd-models")
        model_list = models.json if models.status == 200 and isinstance(models.json, list) else []
        if self.checkpoint:
            self.switch_checkpoint(model_list)
            options = self.get("options", "/sdapi/v1/options").json or options
        info = self.get("script-info", "/sdapi/v1/script-info")
        self.script_info = info.json if info.status == 200 and isinstance(info.json, list) else None
        host = self.record["host"]
        host.update(detect_host(options, self.script(XYZ_SCRIPT)))
        host["samples_format"] = options.get("samples_format")
        title = options.get("sd_model_checkpoint")
        model = self.record["model"]
        model["checkpoint"] = title
        for item in model_list:
            if isinstance(item, dict) and title in (item.get("title"), item.get("model_name")):
                model["filename"] = item.get("filename")
                model["config"] = item.get("config")
        model.update(self.probe_layout())
        if host.get("name") == "Forge" and str(model.get("layout") or "").startswith("j0"):
            self.fixed["scheduler"] = FORGE_DIT_SCHEDULER
            self.record["settings"]["scheduler"] = FORGE_DIT_SCHEDULER
        try:  # the first image, needed anyway; its info names the host's version for the header
            self.base()
        except (RequestFailed, Skip):
            pass  # reported by the checks that need it

    def switch_checkpoint(self, model_list):
        wanted = self.checkpoint
        for item in model_list:
            names = (item.get("title"), item.get("model_name"), os.path.basename(item.get("filename") or ""))
            if wanted in names:
                reply = self.api.post("/sdapi/v1/options", {"sd_model_checkpoint": item.get("title")})
                self._log("switch checkpoint", "POST", "/sdapi/v1/options", {}, reply)
                if reply.status != 200:
                    raise Stop(f"switching to checkpoint {wanted!r}: HTTP {reply.status}: {reply.message()}")
                self.record["model"]["switched_to"] = item.get("title")
                return
        titles = ", ".join(str(item.get("title")) for item in model_list) or "none listed"
        raise Stop(f"--checkpoint {wanted!r} is not among the WebUI's checkpoints: {titles}")

    def probe_layout(self):
        """The UNet layout, read from the extension's refusal of a layer this model lacks (it names the
        blocks the loaded model has), and what it means."""
        reply = self.post("layout probe", "/sdapi/v1/txt2img", self.payload([True, 3, "inf", LAYER_PROBE], steps=1))
        if reply.status == 200:
            return {"layout": None, "family": "unknown (the extension ran a layer spec no UNet has: SEG skipped "
                                               "for this model, or the extension is not loaded)"}
        return dict(layout_from_refusal(reply.message(2000)), probe_status=reply.status)

    # ------------------------------------------------------------ the checks

    def run(self, report):
        """Probe the host, then run the checks; `report` prints the header and each line as it comes.
        Returns the exit status: 1 when a check failed, else 0 (a WARN is another extension's doing)."""
        started = time.monotonic()
        self.probe()
        report.header(self.record)
        listed = True
        for name, check in self.CHECKS:
            key = check.__name__[len("check_"):]
            if self.only and key != "listed" and key not in self.only:
                continue
            t0 = time.monotonic()
            data = {}
            if not listed:
                status, detail = "SKIP", "the SEG script is not loaded"
            else:
                try:
                    status, detail, data = check(self)
                except Skip as why:
                    status, detail = "SKIP", str(why)
                except RequestFailed as error:
                    status, detail = "FAIL", str(error)
                except Unreachable as error:
                    status, detail = "FAIL", f"server stopped answering: {error}"
                    listed = False
            if key == "listed" and status != "PASS":
                listed = False
            line = {"name": name, "status": status, "detail": detail, "seconds": round(time.monotonic() - t0, 2)}
            line.update(data)
            self.record["checks"].append(line)
            report.line(line)
        counts = {s: sum(c["status"] == s for c in self.record["checks"]) for s in ("PASS", "FAIL", "SKIP", "WARN")}
        self.record["summary"] = dict(counts, seconds=round(time.monotonic() - started, 1))
        report.summary(self.record)
        return 1 if counts["FAIL"] else 0
