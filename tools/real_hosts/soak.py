"""Soak: many mixed generations in one server lifetime.

Jobs mix SEG on and off, the modes blur / identity / orthogonal, sigma, layers, sizes, batch 1 and 2, CFG 1 and
5, the hires override (same / own / off), img2img (the first image as its input) and an interrupt
(/sdapi/v1/interrupt, sent while the job runs) every `interrupt_every`-th job. Checked: every job is
answered (HTTP 200, also the interrupted ones), the server answers throughout, the first SEG image is
reproduced bit-exactly at the end, and the server's resident memory is recorded every 20 jobs.
``--seg-off`` runs the same jobs with SEG off everywhere: the control when memory grows.

``jobs(seed, count)`` is pure and deterministic (tests/test_real_hosts_soak.py).
"""
from __future__ import annotations

import json
import random
import threading
import time

import common
import hosts as H

SEED = 20261205
COUNT = 200
INTERRUPT_EVERY = 20
RSS_EVERY = 20
SIZES = [(64, 64), (64, 64), (96, 64), (64, 96), (96, 96), (128, 128)]
LAYERS = ["mid", "all", "d1.0", "u0-2", "d0-1, m0"]
SIGMAS = ["inf", 1, 4, 16]
MODES = ["blur", "identity", "orthogonal"]
BASE = {"negative_prompt": "", "sampler_name": "Euler", "n_iter": 1, "send_images": True, "save_images": False}
PROMPTS = ["a lighthouse on a rocky coast", "a red bicycle", "a bowl of fruit, still life", "mountains at dawn"]
# The first job: its image is made again at the end and must be bit-identical.
FIRST = {"endpoint": "txt2img", "seg": {"enabled": True, "scale": 3, "sigma": "inf", "layers": "mid"},
         "body": dict(BASE, prompt=PROMPTS[0], seed=20240801, steps=3, cfg_scale=5, width=128, height=128,
                      batch_size=1)}


def jobs(seed=SEED, count=COUNT, interrupt_every=INTERRUPT_EVERY, seg_off=False):
    """`count` jobs: {"n", "endpoint", "body", "seg" (args object or None), "interrupt", "hires", "what"}."""
    rng = random.Random(seed)
    out = [dict(FIRST, n=0, interrupt=False, hires=None, what="first SEG image")]
    for n in range(1, count):
        w, h = rng.choice(SIZES)
        body = dict(BASE, prompt=rng.choice(PROMPTS), seed=rng.randrange(1, 2 ** 31), steps=rng.choice([2, 3]),
                    cfg_scale=rng.choice([1, 5]), width=w, height=h, batch_size=rng.choice([1, 1, 2]))
        endpoint = "img2img" if rng.random() < 0.2 else "txt2img"
        seg = None
        if rng.random() < 0.7:
            seg = {"enabled": True, "scale": rng.choice([1, 3, 5]), "sigma": rng.choice(SIGMAS),
                   "layers": rng.choice(LAYERS), "mode": rng.choice(MODES)}
        hires = None
        if endpoint == "txt2img" and rng.random() < 0.2:
            hires = rng.choice(["same", "own", "off"])
            body.update(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=1,
                        denoising_strength=0.5, hr_sampler_name="Euler")
            if seg is not None:
                seg["hires"] = hires
                if hires == "own":
                    seg.update(hr_scale=rng.choice([1, 3]), hr_sigma=rng.choice(SIGMAS), hr_layers="mid",
                               hr_mode=rng.choice(MODES))
        if endpoint == "img2img":
            body.update(denoising_strength=rng.choice([0.5, 0.75]))
        interrupt = interrupt_every > 0 and n % interrupt_every == 0
        if interrupt:  # long enough that the interrupt lands while it samples
            body.update(width=128, height=128, steps=4)
        if seg_off:
            seg = {"enabled": False} if seg is not None else None
        what = (f"{endpoint} {body['width']}x{body['height']} b{body['batch_size']} cfg{body['cfg_scale']} "
                + (f"SEG {seg.get('mode')} σ{seg.get('sigma')} {seg.get('layers')}" if seg and seg["enabled"]
                   else "no SEG") + (f" hires {hires}" if hires else "") + (" interrupt" if interrupt else ""))
        out.append({"n": n, "endpoint": endpoint, "body": body, "seg": seg, "interrupt": interrupt,
                    "hires": hires, "what": what})
    return out


def request_of(job, h, init_image=None):
    body = dict(job["body"])
    if job["seg"] is not None:
        body["alwayson_scripts"] = {common.SEG_API_NAME: {"args": [job["seg"]]}}
    if job["endpoint"] == "img2img":
        body["init_images"] = [init_image]
    return H.request(h, body)


def run(api, h, job_list, results_path, pidfile=None, log_path=None, interrupt_delay=2.0):
    pid = common.server_pid(pidfile) if pidfile else None
    log = common.Log(log_path)
    rss, records, first, init_image = [], [], None, None
    started = time.monotonic()

    def sample(n):
        value = common.rss_mb(pid) if pid else None
        rss.append({"after_job": n, "rss_mb": round(value, 1) if value else None,
                    "minutes": round((time.monotonic() - started) / 60, 1)})
        print(f"  RSS after job {n}: {value and round(value)} MB", flush=True)

    with open(results_path, "w") as out:
        for job in job_list:
            body = request_of(job, h, init_image)
            timer = None
            if job["interrupt"]:
                timer = threading.Timer(interrupt_delay, lambda: _interrupt(api))
                timer.start()
            try:
                reply = api.post(f"/sdapi/v1/{job['endpoint']}", body)
                status, message = reply.status, ("" if reply.status == 200 else reply.message())
                seconds = round(reply.seconds, 1)
            except common.Unreachable as error:
                status, message, seconds = 0, str(error), None
            if timer:
                timer.cancel()
            rec = {"n": job["n"], "what": job["what"], "status": status, "seconds": seconds,
                   "message": common.short(message, 300)}
            if status == 200:
                imgs = common.images(reply)
                rec["images"] = len(imgs)
                rec["sha"] = imgs[0].sha256[:16] if imgs else None
                rec["seg_in_infotext"] = "SEG scale" in common.infotext(reply)
                if job["n"] == 0:
                    first = imgs[0]
                    init_image = reply.json["images"][0]
            tb = common.tracebacks(log.new())
            rec["tracebacks"] = tb
            records.append(rec)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"{' ' if status == 200 and not tb else '!'}{job['n']:4d} {status} {seconds}s {job['what']}"
                  + (f" | {common.short(message, 100)}" if message else "") + (f" | {tb}" if tb else ""),
                  flush=True)
            if status == 0:
                break
            if job["n"] % RSS_EVERY == 0:
                sample(job["n"])
        # the first SEG image once more
        again = api.post(f"/sdapi/v1/{job_list[0]['endpoint']}", request_of(job_list[0], h))
        reproduced = (again.status == 200 and first is not None
                      and common.compare(first, common.images(again)[0])["identical"])
        sample(len(job_list))
    answered = sum(1 for r in records if r["status"] == 200)
    interrupted = [r for r in records if "interrupt" in r["what"]]
    by_20 = {r["after_job"]: r["rss_mb"] for r in rss}
    growth = (by_20.get(len(job_list)) or 0) - (by_20.get(20) or 0) if 20 in by_20 else None
    return {"jobs": len(records), "answered_200": answered, "failed": [r for r in records if r["status"] != 200],
            "interrupts": len(interrupted), "interrupts_answered": sum(1 for r in interrupted if r["status"] == 200),
            "tracebacks": sum(len(r["tracebacks"]) for r in records), "first_reproduced": reproduced,
            "rss_mb": rss, "growth_20_to_end_mb": round(growth, 1) if growth is not None else None,
            "minutes": round((time.monotonic() - started) / 60, 1)}


def _interrupt(api):
    try:
        api.post("/sdapi/v1/interrupt", {}, timeout=30)
    except common.Unreachable:
        pass
