"""Telling another extension's doing from SEG's: infotext keys a replay gained that the original lacked.

A replay from infotext must reproduce the image exactly, but another installed extension may switch itself on
for any request that carries ``infotext`` (seen in real hosts: sd-perturbed-attention's SWG in Forge,
sd-webui-incantations in A1111) and change the image. Such an extension writes its own keys into the replay's
infotext, so keys the original lacked name the culprit.
"""
import re

# Key patterns of extensions seen to switch themselves on through an infotext request, with where they come from
# (read in those extensions' sources: the keys their scripts put into extra_generation_params).
KNOWN = (
    (re.compile(r"(swg|seg|pag)_"), "sd-perturbed-attention"),
    (re.compile(r"PerturbedAttentionGuidance_"), "Forge's built-in PAG"),
    (re.compile(r"(SEG|PAG) [A-Z]|CFG Interval "), "sd-webui-incantations"),
)
# This extension's own keys ("SEG scale", "SEG hires sigma", ...): a SEG word, then a lowercase one. A replay
# that gains one of these is SEG's doing, never excused.
OWN = re.compile(r"SEG [a-z]")
# "Key: value" pairs of the infotext's last line; a value is either JSON-quoted (may hold commas) or runs to
# the next comma (as the hosts write and parse it).
_PAIR = re.compile(r'\s*([^:,"]+?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def infotext_keys(text):
    """The keys of an infotext's parameter line (its last line)."""
    lines = (text or "").strip().split("\n")
    return [pair.group(1).strip() for pair in _PAIR.finditer(lines[-1])] if lines[-1] else []


def origin(key):
    for pattern, extension in KNOWN:
        if pattern.match(key):
            return extension
    return "another extension or the host"


def gained_keys(original, replay, explained=()):
    """{key: where it likely comes from} for the keys `replay`'s infotext has and `original`'s lacks, except
    SEG's own keys and those the replay request itself `explained` (fields it set)."""
    before = set(infotext_keys(original))
    return {key: origin(key) for key in infotext_keys(replay)
            if key not in before and key not in explained and not OWN.match(key)}


def lost_own_keys(original, replay):
    """SEG's own keys the original's infotext has and the replay's lacks: SEG was not restored (SEG's fault,
    whatever else the replay gained)."""
    after = set(infotext_keys(replay))
    return [key for key in infotext_keys(original) if OWN.match(key) and key not in after]


def describe(gained):
    """'swg_enabled, swg_scale (likely sd-perturbed-attention)': the keys grouped by origin."""
    by_origin = {}
    for key, where in gained.items():
        by_origin.setdefault(where, []).append(key)
    return "; ".join(f"{', '.join(keys)} (likely {where})" for where, keys in by_origin.items())
