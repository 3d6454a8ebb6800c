"""Judging a replay from infotext, and a line's outcome when part of it is another extension's doing."""
from lib_seg.selfcheck.foreign import describe, gained_keys, lost_own_keys
from lib_seg.selfcheck.images import compare, describe_difference


def replay_difference(original, again, explained=()):
    """None when the replay `again` has exactly the pixels of `original` (its last image); else
    (what differs, {key: origin} of the non-SEG infotext keys the replay gained). Those keys excuse the
    difference only while the replay kept every SEG key of the original: otherwise SEG was not restored,
    and that is SEG's fault (the keys are then left out)."""
    stats = compare(original.images[-1], again.images[-1])
    if stats["identical"]:
        return None
    text = describe_difference(stats)
    lost = lost_own_keys(original.infotext(), again.infotext())
    if lost:
        return f"{text} (its infotext lacks {', '.join(lost)}: SEG was not restored)", {}
    return text, gained_keys(original.infotext(), again.infotext(), explained)


def excuse(text, gained):
    return (f"{text}, and the replay's infotext gained {describe(gained)}: another extension switched itself on "
            "for the infotext request (not counted against SEG; disable it to check this line)")


def outcome(problems, excused, passed, data):
    """FAIL on any problem of SEG's; WARN when the only problems are other extensions' (named in `excused`);
    else PASS with `passed`."""
    if problems:
        return "FAIL", "; ".join(problems + excused), data
    if excused:
        return "WARN", "; ".join(excused), data
    return "PASS", passed, data
