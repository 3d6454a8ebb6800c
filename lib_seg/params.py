"""The one table of SEG's user-facing parameters, and everything derived from it.

The Gradio UI, the HTTP API (``alwayson_scripts``: a positional list in table order, or one object with
the API names), infotext writing/pasting and X/Y/Z axes are all generated from ``PARAMS``, so a
parameter's default, range, label and validation live here and nowhere else.

Bad values raise ``SegParamError`` naming the parameter and what it accepts; nothing is clamped, so an
API caller hears about a typo instead of getting a different image.

Infotext: ``infotext()`` returns raw values. The layers value may contain commas ("d0-3, m0"); the hosts'
``create_infotext`` (A1111 1.9/1.10 ``modules/processing.py``, same in Forge/reForge) passes every value
through ``infotext_utils.quote``, which JSON-quotes values containing a comma, colon or newline, and
``parse_generation_parameters`` unquotes them. Quoting here as well would double-quote, so we don't;
``settings_from_infotext`` still accepts a value that arrives quoted.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, fields as dataclass_fields, replace
from typing import Any, Mapping, Optional

from . import layers as _layers


class SegParamError(ValueError):
    """A SEG parameter value that can't be used; the message names the parameter and its accepted range."""


@dataclass(frozen=True)
class Param:
    """One user-facing parameter; ``name`` is also its API name and its SegSettings field."""
    name: str
    label: str
    default: Any
    kind: str                      # "bool" | "float" | "sigma" | "layers" | "choice"
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    infotext: Optional[str] = None  # key in the generation parameters; None: not written
    hint: str = ""
    choices: tuple = ()             # suggested values (sigma, layers); the only values of a "choice"
    choice_labels: tuple = ()       # "choice": what the UI shows for each of `choices`
    group: str = "main"             # "main", or "hires": the hires-fix pass override (a sub-group of the UI)

    @property
    def accepted(self) -> str:
        """What this parameter accepts, in words (used in every error message)."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "sigma":
            return "a number > 0, or inf"
        if self.kind == "layers":
            return _layers.GRAMMAR_HINT
        if self.kind == "choice":
            labels = f" (or the labels {', '.join(self.choice_labels)})" if self.choice_labels else ""
            return " or ".join(self.choices) + labels
        return f"a number from {format_number(self.minimum)} to {format_number(self.maximum)}"

    def error(self, value, reason: str = "") -> SegParamError:
        detail = f" ({shorten(reason, 2 * SHOWN_LIMIT)})" if reason else ""
        shown = shown_value(value)
        return SegParamError(f"{self.label} ({self.name}): got {shown}{detail}; accepted: {self.accepted}")

    def coerce(self, value):
        """The validated, normalised value for ``value`` (which may be text from infotext or API JSON);
        ``None`` means the default. Raises SegParamError."""
        if value is None:
            return self.default
        if self.kind == "bool":
            return _to_bool(self, value)
        if self.kind == "choice":
            # The API's script-info advertises a Radio's labels; a client built from it sends those.
            text = value.strip().lower() if isinstance(value, str) else None
            text = {label.lower(): choice for choice, label in zip(self.choices, self.choice_labels)}.get(text, text)
            if text not in self.choices:
                raise self.error(value)
            return text
        if self.kind == "layers":
            if not isinstance(value, str):
                raise self.error(value, "expected text")
            try:
                return _layers.parse_spec(value)
            except ValueError as exc:
                raise self.error(value, str(exc).removeprefix(_layers.FIELD + ": ").split("; accepted")[0]) from None
        number = parse_sigma(value, self) if self.kind == "sigma" else _to_number(self, value)
        if self.kind == "float" and not (self.minimum <= number <= self.maximum):
            raise self.error(value, "out of range")
        return number


# Values and reasons are cut to this many characters in messages: a 10 kB value would otherwise fill the API's
# answer and the console line (the message still says how long the value was).
SHOWN_LIMIT = 80


def shorten(text: str, limit: int = SHOWN_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown_value(value) -> str:
    """How a message shows a value: repr for text, str otherwise, shortened; never fails (Python refuses
    str() of an integer over 4300 digits)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value) if isinstance(value, str) else str(value)
    except ValueError:
        text = f"a {type(value).__name__}"
    return shorten(text)


def _to_bool(param: Param, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
    raise param.error(value)


def _to_number(param: Param, value) -> float:
    # bool is an int subclass; a bool where a number belongs is a shifted positional list, not 1.0.
    if isinstance(value, bool):
        raise param.error(value, "a checkbox value where a number belongs")
    if isinstance(value, numbers.Integral) and not -2 ** 63 <= value < 2 ** 63:
        # JSON allows any number of digits, but the hosts' API answer echoes the request through orjson, which
        # stops at 64 bits: accepted, such a value would end the generation in an HTTP 500 after the fact.
        raise param.error(value, "an integer outside the signed 64-bit range")
    if isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise param.error(value, "not a number") from None
        # float() turns finite text beyond its range ("1e999") into inf; only a spelled infinity is one
        if math.isinf(number) and text.lstrip("+-").lower() not in ("inf", "infinity"):
            raise param.error(value, "too large for a number")
    else:
        raise param.error(value, f"a {type(value).__name__}")
    if math.isnan(number):
        raise param.error(value, "not a number")
    return number


_INFINITY_WORDS = ("inf", "+inf", "infinity", "+infinity", "∞")


def parse_sigma(value, param: Optional[Param] = None) -> float:
    """Blur sigma from a number or text: > 0, or inf ("inf", "infinity", "∞", any case). Large finite
    values stay exactly what they are (they are not rounded to inf)."""
    param = param or PARAM_BY_NAME["sigma"]
    if isinstance(value, str) and value.strip().lower() in _INFINITY_WORDS:
        return math.inf
    number = _to_number(param, value)
    if not number > 0:
        raise param.error(value, "must be > 0")
    return number


def format_number(x: float) -> str:
    """Shortest text that reads back as exactly ``x``: "%g" when that is exact ("3", "0.25"), else repr."""
    short = "%g" % x
    return short if float(short) == x else repr(float(x))


def format_sigma(x: float) -> str:
    """"inf" or the number (see format_number)."""
    return "inf" if math.isinf(x) and x > 0 else format_number(x)


# Perturbation of the SEG rows' self-attention: "blur" = SEG's blurred queries, "identity" = PAG's identity
# attention (each token outputs its own value), "skip" = skip-layer guidance on transformer models (the
# selected blocks return their input; lib_seg/dit.py).
MODES = ("blur", "identity", "skip", "orthogonal")
MODE_LABELS = ("Smoothed energy (SEG)", "Identity attention (PAG)", "Skip layer (SLG, transformer models)",
               "Orthogonal SEG (OSEG)")
# Modes that use sigma (the others ignore it; the UI greys it out).
BLUR_MODES = ("blur", "orthogonal")
# The hires fix's second pass: the first pass's settings, the hr_* settings, or no SEG.
HIRES_CHOICES = ("same", "own", "off")
# The hr_* fields that replace the main ones in the hires pass with hires = "own".
HIRES_FIELDS = {"hr_scale": "scale", "hr_sigma": "sigma", "hr_layers": "layers", "hr_mode": "mode"}

PARAMS: tuple[Param, ...] = (
    Param("enabled", "SEG enabled", False, "bool",
          hint="Turn Smoothed Energy Guidance on for this generation."),
    Param("scale", "SEG scale", 3.0, "float", 0.0, 20.0, 0.1, infotext="SEG scale",
          hint="Strength of the guidance away from the blurred-attention prediction; 0 turns it off."),
    Param("sigma", "SEG sigma", math.inf, "sigma", 0.0, math.inf, None, infotext="SEG sigma",
          choices=("inf", "1", "2", "4", "8", "16", "64", "256"),
          hint="Gaussian blur of the attention queries, in tokens; inf replaces them by their mean (strongest)."),
    Param("layers", "SEG layers", _layers.DEFAULT_SPEC, "layers", infotext="SEG layers",
          choices=_layers.PRESETS,
          hint="Self-attention blocks to blur: mid, down, up, all, or a list such as d0-3, m0, u0.4, d2.2-9."),
    Param("start", "SEG start", 0.0, "float", 0.0, 1.0, 0.01, infotext="SEG start",
          hint="Fraction of the sampling steps after which SEG starts (0 = from the first step)."),
    Param("end", "SEG end", 1.0, "float", 0.0, 1.0, 0.01, infotext="SEG end",
          hint="Fraction of the sampling steps after which SEG stops (1 = through the last step)."),
    Param("rescale", "SEG rescale", 0.0, "float", 0.0, 1.0, 0.01, infotext="SEG rescale",
          hint="Pull the guided prediction's spread back toward the plain prediction's (0 = off)."),
    # Appended after the original seven, so positional API payloads of earlier versions keep their meaning.
    Param("mode", "SEG perturbation", MODES[0], "choice", infotext="SEG mode", choices=MODES,
          choice_labels=MODE_LABELS,
          hint="What the guiding prediction changes in the selected self-attention layers: blur the queries "
               "(Smoothed Energy Guidance, uses sigma), replace attention by the identity, each token keeping "
               "its own value (Perturbed-Attention Guidance, sigma unused), on transformer models (Flux, "
               "Chroma, SD3) skip the selected blocks (skip-layer guidance, sigma unused), or blur only the "
               "part of each query that picks its keys (Orthogonal SEG; its uncond prediction is perturbed "
               "too)."),
    Param("hires", "SEG hires pass", HIRES_CHOICES[0], "choice", infotext="SEG hires", choices=HIRES_CHOICES,
          choice_labels=("Same as first pass", "Own settings", "No SEG"), group="hires",
          hint="The hires fix's second pass: the first pass's SEG settings, its own scale, sigma, layers and "
               "perturbation below, or no SEG at all."),
    Param("hr_scale", "SEG hires scale", 3.0, "float", 0.0, 20.0, 0.1, infotext="SEG hires scale", group="hires",
          hint="SEG scale of the hires fix's second pass (with 'Own settings'); 0 turns it off there."),
    Param("hr_sigma", "SEG hires sigma", math.inf, "sigma", 0.0, math.inf, None, infotext="SEG hires sigma",
          choices=("inf", "1", "2", "4", "8", "16", "64", "256"), group="hires",
          hint="Query blur of the hires fix's second pass (with 'Own settings'), in tokens of that pass's grid."),
    Param("hr_layers", "SEG hires layers", _layers.DEFAULT_SPEC, "layers", infotext="SEG hires layers",
          choices=_layers.PRESETS, group="hires",
          hint="Self-attention blocks perturbed in the hires fix's second pass (with 'Own settings')."),
    Param("hr_mode", "SEG hires perturbation", MODES[0], "choice", infotext="SEG hires mode", choices=MODES,
          choice_labels=MODE_LABELS, group="hires",
          hint="Perturbation of the hires fix's second pass (with 'Own settings'): blurred queries (SEG), "
               "identity attention (PAG), skipped blocks (SLG, transformer models) or orthogonal SEG (OSEG)."),
)

PARAM_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
PARAM_BY_INFOTEXT: dict[str, Param] = {p.infotext: p for p in PARAMS if p.infotext}
API_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)
# Written to infotext only when they differ from the default, to keep ordinary infotexts short.
_INFOTEXT_ONLY_IF_CHANGED = ("start", "end", "rescale", "mode", "hr_mode")


@dataclass(frozen=True)
class SegSettings:
    """One validated, immutable set of SEG parameters; constructing it validates and normalises."""
    enabled: bool = PARAM_BY_NAME["enabled"].default
    scale: float = PARAM_BY_NAME["scale"].default
    sigma: float = PARAM_BY_NAME["sigma"].default
    layers: str = PARAM_BY_NAME["layers"].default
    start: float = PARAM_BY_NAME["start"].default
    end: float = PARAM_BY_NAME["end"].default
    rescale: float = PARAM_BY_NAME["rescale"].default
    mode: str = PARAM_BY_NAME["mode"].default
    hires: str = PARAM_BY_NAME["hires"].default
    hr_scale: float = PARAM_BY_NAME["hr_scale"].default
    hr_sigma: float = PARAM_BY_NAME["hr_sigma"].default
    hr_layers: str = PARAM_BY_NAME["hr_layers"].default
    hr_mode: str = PARAM_BY_NAME["hr_mode"].default

    def __post_init__(self):
        for param in PARAMS:
            object.__setattr__(self, param.name, param.coerce(getattr(self, param.name)))
        if self.end < self.start:
            start, end = PARAM_BY_NAME["start"], PARAM_BY_NAME["end"]
            raise SegParamError(
                f"{end.label} ({end.name}) = {format_number(self.end)} is before {start.label} ({start.name}) = "
                f"{format_number(self.start)}; accepted: start <= end, both from 0 to 1")

    @property
    def active(self) -> bool:
        """Whether SEG does anything in this generation (in the first pass, or in a hires pass of its own)."""
        used = self.scale > 0 or (self.hires == "own" and self.hr_scale > 0)
        return bool(self.enabled and used and self.start <= self.end)

    def for_pass(self, hires_pass: bool) -> "SegSettings":
        """The settings one sampling pass runs with: the first pass (and img2img) uses the main fields; the
        hires fix's second pass the same, none (hires "off") or the hr_* fields (hires "own"). The result
        has hires "same", so its ``active`` speaks for that pass alone. Unchanged settings are returned as
        they are: without an override every pass runs exactly as before the override existed."""
        if self.hires == "same":
            return self
        if not hires_pass:
            return replace(self, hires="same")
        if self.hires == "off":
            return replace(self, hires="same", enabled=False)
        return replace(self, hires="same", **{main: getattr(self, hr) for hr, main in HIRES_FIELDS.items()})

    def as_dict(self) -> dict:
        """API names -> values, in table order."""
        return {p.name: getattr(self, p.name) for p in PARAMS}


assert tuple(f.name for f in dataclass_fields(SegSettings)) == API_NAMES, "PARAMS and SegSettings disagree"


def _check_names(names) -> None:
    unknown = [n for n in names if n not in PARAM_BY_NAME]
    if unknown:
        raise SegParamError(f"SEG: unknown parameter name(s) {', '.join(shorten(repr(n)) for n in unknown)}; "
                            f"accepted names: {', '.join(API_NAMES)}")


def settings_from_args(args) -> SegSettings:
    """SegSettings from what a host hands a script.

    ``args`` is a positional sequence in PARAMS order (shorter ones take defaults for the missing tail; an
    empty one means disabled: Forge can call before its UI defaults exist), or a mapping with API names,
    or a sequence whose only element is such a mapping (the ``alwayson_scripts`` "args": [{...}] form).
    An existing SegSettings is returned as is. Raises SegParamError."""
    if isinstance(args, SegSettings):
        return args
    if isinstance(args, Mapping):
        _check_names(args.keys())
        return SegSettings(**dict(args))
    if isinstance(args, (str, bytes)):
        raise SegParamError(f"SEG: expected a list of values or an object with names {', '.join(API_NAMES)}; "
                            f"got text {shorten(repr(args))}")
    values = list(args)
    if len(values) == 1 and isinstance(values[0], Mapping):
        return settings_from_args(values[0])
    if len(values) > len(PARAMS):
        raise SegParamError(f"SEG: got {len(values)} positional values, accepted at most {len(PARAMS)} "
                            f"({', '.join(API_NAMES)})")
    return SegSettings(**dict(zip(API_NAMES, values)))


def infotext(settings: SegSettings, hires_fix: bool = True) -> dict[str, str]:
    """Generation-parameter entries for ``settings``: {} when SEG is not active. Values are raw: the host's
    create_infotext quotes any that contain commas (see the module docstring). The hires override's keys
    only when it is on and the generation has a hires pass (``hires_fix``); its hr_* keys only with "own"."""
    if not hires_fix:  # only the first pass runs: its settings are all there is to say
        settings = settings.for_pass(False)
    if not settings.active:
        return {}
    out = {}
    for param in PARAMS:
        if not param.infotext:
            continue
        if param.group == "hires" and settings.hires == "same":
            continue
        if param.name in HIRES_FIELDS and settings.hires != "own":
            continue
        value = getattr(settings, param.name)
        if param.name in _INFOTEXT_ONLY_IF_CHANGED and value == param.default:
            continue
        if param.kind == "sigma":
            out[param.infotext] = format_sigma(value)
        elif param.kind in ("layers", "choice"):
            out[param.infotext] = value
        else:
            out[param.infotext] = format_number(value)
    return out


def _unquote(text):
    # A value can still be JSON-quoted if it went through a parser that does not unquote (or was quoted twice).
    if isinstance(text, str) and len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def settings_from_infotext(fields: Mapping[str, Any]) -> dict[str, object]:
    """Parsed SEG entries of an infotext (a dict as from A1111's parse_generation_parameters): API name ->
    validated value. {} when no SEG key is present; otherwise every parameter: enabled=True, the SEG keys
    present, and defaults for the rest (infotext() leaves start/end/rescale out when unchanged, and pasting
    must reset them; without hires keys the override is off). ``SegSettings(**result)`` rebuilds the settings.
    Raises SegParamError."""
    found = {p.name: p.coerce(_unquote(fields[key])) for key, p in PARAM_BY_INFOTEXT.items() if key in fields}
    if not found:
        return {}
    found["enabled"] = True
    return {p.name: found.get(p.name, p.default) for p in PARAMS}


def parse_value(name: str, value):
    """One parameter's validated value from user input (X/Y/Z axis cells, API fields)."""
    _check_names([name])
    return PARAM_BY_NAME[name].coerce(value)
