"""The X/Y/Z plot's SEG sigma axis, driven through the API as a client built from script-info would."""
from lib_seg.selfcheck.client import Skip
from lib_seg.selfcheck.images import compare, describe_difference
from lib_seg.selfcheck.payloads import SEG_SIGMA_AXIS, XYZ_SCRIPT, XYZ_SIGMAS


def xyz_args(info_args, axis_label, values):
    """The X/Y/Z script's positional args, built by label from its /sdapi/v1/script-info entry so the same
    code serves every host's argument list: X = ``axis_label`` over ``values``, Y and Z = Nothing, sub-images
    returned after the grid. Axes with choices read the dropdown argument (the second "X values"), others the
    text argument; both are set."""
    labels = [a.get("label") for a in info_args]
    args = [a.get("value") for a in info_args]

    def put(label, value, occurrence=0, required=True):
        hits = [i for i, l in enumerate(labels) if l == label]
        if len(hits) <= occurrence:
            if required:
                raise ValueError(f"X/Y/Z script-info has no argument {label!r} (#{occurrence + 1}); got {labels}")
            return
        args[hits[occurrence]] = value

    if "X type" not in labels:
        raise ValueError(f"X/Y/Z script-info has no 'X type' argument; got {labels}")
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in info_args[labels.index("X type")].get("choices") or []]
    if axis_label not in choices:
        raise ValueError(f"no X/Y/Z axis {axis_label!r} (the extension adds it at startup); axes: {choices}")
    nothing = choices.index("Nothing") if "Nothing" in choices else 0
    put("X type", choices.index(axis_label))
    put("X values", ", ".join(values), 0)
    put("X values", list(values), 1)
    for axis in ("Y", "Z"):
        put(f"{axis} type", nothing)
        put(f"{axis} values", "", 0)
        put(f"{axis} values", [], 1, required=False)
    put("Include Sub Images", True)
    for label in ("Draw legend", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X", "Vary seeds for Y",
                  "Vary seeds for Z", "Use text inputs instead of dropdowns", "Draw individual labels",
                  "Skip final grid generation"):
        put(label, False, required=False)
    for label in ("Grid margins (px)", "Items per grid (0 = default), for sequential grid generation."):
        put(label, 0, required=False)
    return args


def check_xyz(sc):
    entry = sc.script(XYZ_SCRIPT)
    if entry is None:
        raise Skip("no X/Y/Z plot script in /sdapi/v1/script-info")
    try:
        script_args = xyz_args(entry.get("args") or [], SEG_SIGMA_AXIS, XYZ_SIGMAS)
    except ValueError as error:
        return "FAIL", str(error), {}
    grid = sc.generate("X/Y/Z sigma", sc.payload(script_name=XYZ_SCRIPT, script_args=script_args))
    n = len(XYZ_SIGMAS)
    if len(grid.images) < n:
        return "FAIL", f"expected a grid and {n} cells, got {len(grid.images)} image(s)", {}
    cells = grid.images[-n:]
    texts = (grid.info.get("infotexts") or [])[-n:]
    problems = []
    # σ=inf with the other settings at their defaults is exactly the SEG image's request
    same = compare(sc.seg().images[0], cells[XYZ_SIGMAS.index("inf")])
    if not same["identical"]:
        problems.append(f"σ=inf cell vs the SEG image: {describe_difference(same)}")
    # σ=1 must differ from no SEG and from σ=inf, if only slightly (requests are deterministic, so any
    # difference is the axis value at work): at 128 px SD1.5's middle grid is 2x2, where σ=1 blurs little
    one = compare(sc.base().images[0], cells[0])
    if one["identical"]:
        problems.append("σ=1 cell is bit-identical to the image without SEG: the axis did not enable SEG")
    between = compare(cells[0], cells[1])
    if between["identical"]:
        problems.append("σ=1 and σ=inf cells are bit-identical: the axis value was not used")
    for sigma, text in zip(XYZ_SIGMAS, texts):
        if f"SEG sigma: {sigma}" not in text:
            problems.append(f"cell σ={sigma} infotext lacks 'SEG sigma: {sigma}'")
    data = {"xyz_args": script_args, "difference": between, "difference_sigma1_vs_no_seg": one}
    if problems:
        return "FAIL", "; ".join(problems), data
    return ("PASS", f"σ=inf cell = the SEG image; σ=1 vs no SEG: {describe_difference(one)}; "
                    f"vs σ=inf: {describe_difference(between)}", data)
