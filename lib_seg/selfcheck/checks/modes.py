"""The perturbation mode (PAG), its choice as script-info advertises it, and the hires pass's own settings."""
from lib_seg.selfcheck.checks.replays import excuse, outcome, replay_difference
from lib_seg.selfcheck.client import RequestFailed, Skip
from lib_seg.selfcheck.images import changes, compare, describe_difference
from lib_seg.selfcheck.payloads import (PAG_LABEL, PERTURBATION_LABEL, SAMPLER, SEG_API_NAME, SEG_HIRES_OWN_NAMED,
                                        SEG_ON, SEG_PAG_NAMED)


def pag(sc):
    return sc.cached("pag", "PAG (identity)", sc.payload(SEG_PAG_NAMED))


def check_pag(sc):
    """Identity attention (PAG) in the SEG rows: changes the image, differs from SEG, round-trips through
    its infotext, and switching back to blur reproduces the earlier SEG image exactly."""
    image = pag(sc)
    problems, excused = [], []
    vs_base = compare(sc.base().images[0], image.images[0])
    vs_seg = compare(sc.seg().images[0], image.images[0])
    if not changes(vs_base):
        problems.append(f"vs no SEG: {describe_difference(vs_base, 'bit-identical: PAG had no effect')}")
    if vs_seg["identical"]:
        problems.append("bit-identical to the SEG (blur) image: the mode was not used")
    if "SEG mode: identity" not in image.infotext():
        problems.append("infotext lacks 'SEG mode: identity'")
    replayed = replay_difference(image, sc.replay("PAG from infotext", image))
    if replayed:
        text, gained = replayed
        if gained:
            excused.append(excuse(f"from its infotext: {text}", gained))
        else:
            problems.append(f"from its infotext: {text}")
    blur = sc.generate("SEG (blur) after PAG", sc.payload(SEG_ON))
    back = compare(sc.seg().images[0], blur.images[0])
    if not back["identical"]:
        problems.append(f"blur after PAG differs from the earlier SEG image: {describe_difference(back)}")
    return outcome(problems, excused, f"vs no SEG: {describe_difference(vs_base)}; differs from SEG; reproduced "
                                      "from its infotext; blur afterwards = the SEG image",
                   {"difference": vs_base, "difference_vs_seg": vs_seg})


def _advertised(arg):
    """The choices a script-info argument advertises (gradio 4 lists [label, value] pairs: the label)."""
    return [c[0] if isinstance(c, (list, tuple)) else c for c in arg.get("choices") or []]


def check_labels(sc):
    """A client built from /sdapi/v1/script-info sends the choices it advertises, positionally: the
    perturbation's PAG label and the first advertised choice of every later choice argument. The image must
    be the one the named value "identity" gives."""
    entry = sc.script(SEG_API_NAME)
    info_args = (entry or {}).get("args") or []
    labels = [arg.get("label") for arg in info_args]
    if PERTURBATION_LABEL not in labels:
        raise Skip(f"script-info lists no '{PERTURBATION_LABEL}' argument for the SEG script")
    if not _advertised(info_args[labels.index(PERTURBATION_LABEL)]):
        raise Skip(f"script-info advertises no choices for '{PERTURBATION_LABEL}'")
    args = list(SEG_ON) + [arg.get("value") for arg in info_args[len(SEG_ON):]]
    sent = {}
    for index, arg in enumerate(info_args[len(SEG_ON):], start=len(SEG_ON)):
        choices = _advertised(arg)
        if not choices:
            continue
        if arg.get("label") == PERTURBATION_LABEL:
            if PAG_LABEL not in choices:
                return "FAIL", f"'{PERTURBATION_LABEL}' does not advertise '{PAG_LABEL}': {choices}", {}
            args[index] = PAG_LABEL
        else:  # no hires fix in this request: these choices must be accepted, and leave the image alone
            args[index] = choices[0]
        sent[arg.get("label")] = args[index]
    shown = ", ".join(f"{label} = {value!r}" for label, value in sent.items())
    try:
        image = sc.generate("SEG with advertised labels", sc.payload(args))
    except RequestFailed as error:
        return "FAIL", f"sent {shown}: HTTP {error.reply.status}: {error.reply.message(200)}", {"sent": sent}
    stats = compare(pag(sc).images[0], image.images[0])
    data = {"sent": sent, "difference": stats}
    if stats["identical"]:
        return "PASS", f"sent {shown}: HTTP 200, bit-identical to the image with mode 'identity'", data
    detail = f"sent {shown}: differs from the image with mode 'identity': {describe_difference(stats)}"
    if compare(sc.seg().images[0], image.images[0])["identical"]:
        detail += " (it is the SEG (blur) image: the label was read as blur)"
    return "FAIL", detail, data


def check_hires_own(sc):
    """The hires override: the second pass with its own settings (sigma 1 on every layer) changes the hires
    image of the first pass's settings, and round-trips through its infotext. (That the first pass is
    untouched needs the intermediate latents: the real-host harness checks it with its probe.)"""
    same = sc.generate("hires, SEG same", sc.hires_payload(SEG_ON))
    own = sc.generate("hires, SEG own (sigma 1, all layers)", sc.hires_payload(SEG_HIRES_OWN_NAMED))
    problems, excused = [], []
    diff = compare(same.images[-1], own.images[-1])
    if diff["identical"]:
        problems.append("bit-identical to the hires image with the first pass's settings: the override "
                        "was not used")
    elif not changes(diff):
        problems.append(f"vs first-pass settings: {describe_difference(diff)}: below what counts as a change")
    for key in ("SEG hires: own", "SEG hires sigma: 1", "SEG hires layers: all"):
        if key not in own.infotext():
            problems.append(f"infotext lacks '{key}'")
    if "SEG hires" in same.infotext():
        problems.append("the image without the override has 'SEG hires' keys in its infotext")
    # hr_sampler_name: A1111 1.10's infotext parser fills a missing "Hires sampler" with the UI's "Use same
    # sampler", which its API then rejects ("bad sampler name"); a field set in the request wins (so its
    # "Hires sampler" key in the replay's infotext is ours). hr_scheduler likewise where the self-check names a
    # scheduler (Forge with a transformer model): Forge's API reads the implied "Use same scheduler" as a scheduler
    # of its own and the hires pass then decodes an all-black image, with or without SEG (seen in the real Forge).
    fields = dict(hr_sampler_name=SAMPLER)
    if sc.fixed.get("scheduler"):
        fields["hr_scheduler"] = sc.fixed["scheduler"]
    replayed = replay_difference(own, sc.replay("hires own from infotext", own, **fields),
                                 explained=("Hires sampler", "Hires schedule type"))
    if replayed:
        text, gained = replayed
        if gained:
            excused.append(excuse(f"from its infotext: {text}", gained))
        else:
            problems.append(f"from its infotext: {text}")
    return outcome(problems, excused, f"vs first-pass settings: {describe_difference(diff)}; reproduced from its "
                                      "infotext", {"difference": diff})
