"""The perturbation mode (PAG) and the hires pass's own settings."""
from lib_seg.selfcheck.images import changes, compare, describe_difference
from lib_seg.selfcheck.payloads import SAMPLER, SEG_HIRES_OWN_NAMED, SEG_ON, SEG_PAG_NAMED


def check_pag(sc):
    """Identity attention (PAG) in the SEG rows: changes the image, differs from SEG, round-trips through
    its infotext, and switching back to blur reproduces the earlier SEG image exactly."""
    pag = sc.generate("PAG (identity)", sc.payload(SEG_PAG_NAMED))
    problems = []
    vs_base = compare(sc.base().images[0], pag.images[0])
    vs_seg = compare(sc.seg().images[0], pag.images[0])
    if not changes(vs_base):
        problems.append(f"vs no SEG: {describe_difference(vs_base, 'bit-identical: PAG had no effect')}")
    if vs_seg["identical"]:
        problems.append("bit-identical to the SEG (blur) image: the mode was not used")
    if "SEG mode: identity" not in pag.infotext():
        problems.append("infotext lacks 'SEG mode: identity'")
    again = compare(pag.images[-1], sc.replay("PAG from infotext", pag).images[-1])
    if not again["identical"]:
        problems.append(f"from its infotext: {describe_difference(again)}")
    blur = sc.generate("SEG (blur) after PAG", sc.payload(SEG_ON))
    back = compare(sc.seg().images[0], blur.images[0])
    if not back["identical"]:
        problems.append(f"blur after PAG differs from the earlier SEG image: {describe_difference(back)}")
    data = {"difference": vs_base, "difference_vs_seg": vs_seg}
    if problems:
        return "FAIL", "; ".join(problems), data
    return ("PASS", f"vs no SEG: {describe_difference(vs_base)}; differs from SEG; reproduced from its "
                    "infotext; blur afterwards = the SEG image", data)


def check_hires_own(sc):
    """The hires override: the second pass with its own sigma gives another hires image than the first
    pass's settings, and round-trips through its infotext. (That the first pass is untouched needs the
    intermediate latents: the real-host harness checks it with its probe.)"""
    same = sc.generate("hires, SEG same", sc.hires_payload(SEG_ON))
    own = sc.generate("hires, SEG own (sigma 1)", sc.hires_payload(SEG_HIRES_OWN_NAMED))
    problems = []
    diff = compare(same.images[-1], own.images[-1])
    if diff["identical"]:
        problems.append("bit-identical to the hires image with the first pass's settings: the override "
                        "was not used")
    for key in ("SEG hires: own", "SEG hires sigma: 1"):
        if key not in own.infotext():
            problems.append(f"infotext lacks '{key}'")
    if "SEG hires" in same.infotext():
        problems.append("the image without the override has 'SEG hires' keys in its infotext")
    # hr_sampler_name: A1111 1.10's infotext parser fills a missing "Hires sampler" with the UI's "Use same
    # sampler", which its API then rejects ("bad sampler name"); a field set in the request wins.
    again = compare(own.images[-1], sc.replay("hires own from infotext", own, hr_sampler_name=SAMPLER).images[-1])
    if not again["identical"]:
        problems.append(f"from its infotext: {describe_difference(again)}")
    data = {"difference": diff}
    if problems:
        return "FAIL", "; ".join(problems), data
    return "PASS", f"vs first-pass settings: {describe_difference(diff)}; reproduced from its infotext", data
