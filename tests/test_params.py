"""The parameter table: validation, positional/named API input, infotext round trip through A1111's format."""
import dataclasses
import json
import math
import re

import pytest

from lib_seg import params
from lib_seg.params import (PARAMS, SegParamError, SegSettings, format_sigma, infotext, parse_sigma, parse_value,
                            settings_from_args, settings_from_infotext)


# --- A1111's infotext line, restated (AUTOMATIC1111/stable-diffusion-webui v1.10.1, modules/infotext_utils.py:
# `quote`, `unquote`, `re_param_code`, `parse_generation_parameters`; modules/processing.py: `create_infotext`
# joins "key: quote(value)" with ", "). Forge and reForge keep the same code.

def a1111_quote(value):
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(value, ensure_ascii=False)
    return value


A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_write(generation_params):
    return ", ".join(f"{key}: {a1111_quote(value)}" for key, value in generation_params.items())


def a1111_read(line):
    fields = {}
    for key, value in A1111_PARAM.findall(line):
        if value[:1] == '"' and value[-1:] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        fields[key] = value
    return fields


HOST_BEFORE = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1, "Size": "512x512"}
HOST_AFTER = {"Lora hashes": "a: 0123, b: 4567", "Version": "v1.10.1"}

ROUND_TRIP = [
    SegSettings(enabled=True),
    SegSettings(enabled=True, scale=5.5, sigma=math.inf, layers="d0-d3, m0, u0.1"),
    SegSettings(enabled=True, scale=0.3, sigma=2.0, layers="up", start=0.25, end=0.75, rescale=0.7),
    SegSettings(enabled=True, scale=20, sigma=123456.0, layers="d2.2-9", start=0.5, end=0.5),
    SegSettings(enabled=True, scale=1 / 3, sigma=0.1 + 0.2, layers="all", end=0.9),
    SegSettings(enabled=True, scale=2, layers="d0-3, m0", mode="identity"),
    SegSettings(enabled=True, mode="identity", hires="own", hr_scale=1.25, hr_sigma=4.0, hr_layers="m0, u0-1",
                hr_mode="identity", rescale=0.5),
    SegSettings(enabled=True, sigma=1.0, hires="own", hr_scale=0.0, hr_layers="all"),
    SegSettings(enabled=True, scale=4, hires="off"),
    SegSettings(enabled=True, scale=0, hires="own", hr_scale=3, hr_sigma=2.0),  # SEG in the hires pass only
]


@pytest.mark.parametrize("settings", ROUND_TRIP)
def test_infotext_round_trips_through_a1111_line(settings):
    line = a1111_write({**HOST_BEFORE, **infotext(settings), **HOST_AFTER})
    fields = a1111_read(line)
    assert fields["Version"] == "v1.10.1" and fields["Lora hashes"] == HOST_AFTER["Lora hashes"]
    assert SegSettings(**settings_from_infotext(fields)) == settings


def test_infotext_contents():
    settings = SegSettings(enabled=True, scale=3, layers="d0-3, M0")
    assert infotext(settings) == {"SEG scale": "3", "SEG sigma": "inf", "SEG layers": "d0-3, m0"}
    line = a1111_write(infotext(settings))
    # Layers carry commas, so A1111's writer quotes them; we must not quote them ourselves as well.
    assert line == 'SEG scale: 3, SEG sigma: inf, SEG layers: "d0-3, m0"'
    changed = infotext(dataclasses.replace(settings, start=0.1, rescale=0.5))
    assert changed["SEG start"] == "0.1" and changed["SEG rescale"] == "0.5" and "SEG end" not in changed
    assert infotext(SegSettings()) == {}
    assert infotext(SegSettings(enabled=True, scale=0)) == {}


def test_infotext_of_mode_and_hires_override():
    """The mode only when it is not blur; the override's keys only when it is on and a hires pass runs; its
    hr_* keys only with own settings (the hires mode, like the main one, only when not blur)."""
    base = {"SEG scale": "3", "SEG sigma": "inf", "SEG layers": "mid"}
    assert infotext(SegSettings(enabled=True, mode="blur")) == base
    assert infotext(SegSettings(enabled=True, mode="identity")) == {**base, "SEG mode": "identity"}
    # hr_* values that differ from their defaults are still not written while the override is off
    same = SegSettings(enabled=True, hires="same", hr_scale=1.0, hr_mode="identity")
    assert infotext(same) == base and infotext(same, hires_fix=False) == base
    off = SegSettings(enabled=True, hires="off", hr_scale=1.0)
    assert infotext(off) == {**base, "SEG hires": "off"}
    own = SegSettings(enabled=True, hires="own", hr_scale=1.5, hr_sigma=4.0, hr_layers="u0")
    assert infotext(own) == {**base, "SEG hires": "own", "SEG hires scale": "1.5", "SEG hires sigma": "4",
                             "SEG hires layers": "u0"}
    assert infotext(own, hires_fix=False) == base  # no hires pass: nothing to say about it
    # SEG only in a hires pass that does not run: nothing ran
    assert infotext(dataclasses.replace(own, scale=0), hires_fix=False) == {}
    assert infotext(dataclasses.replace(own, hr_mode="identity"))["SEG hires mode"] == "identity"
    # pasting an infotext without hires keys turns the override off and resets its fields
    assert settings_from_infotext(base) == SegSettings(enabled=True).as_dict()


def test_settings_for_each_pass():
    plain = SegSettings(enabled=True, scale=4, sigma=2.0, layers="up", mode="identity", hr_scale=1.0)
    assert plain.for_pass(False) is plain and plain.for_pass(True) is plain  # override off: as before, unchanged
    own = dataclasses.replace(plain, hires="own", hr_sigma=8.0, hr_layers="m0", hr_mode="blur", start=0.2, rescale=0.3)
    first, second = own.for_pass(False), own.for_pass(True)
    assert first == dataclasses.replace(own, hires="same")
    assert (second.scale, second.sigma, second.layers, second.mode) == (1.0, 8.0, "m0", "blur")
    assert (second.start, second.end, second.rescale, second.hires) == (0.2, 1.0, 0.3, "same")  # shared fields
    off = dataclasses.replace(plain, hires="off")
    assert off.for_pass(False).active and not off.for_pass(True).active
    hires_only = SegSettings(enabled=True, scale=0, hires="own", hr_scale=2)
    assert hires_only.active and not hires_only.for_pass(False).active and hires_only.for_pass(True).active
    assert not dataclasses.replace(hires_only, hr_scale=0).active
    assert not dataclasses.replace(hires_only, enabled=False).for_pass(True).active


def test_settings_from_infotext():
    assert settings_from_infotext({"Steps": "20"}) == {}
    pasted = settings_from_infotext({"SEG scale": "4", "Steps": "20"})
    assert pasted == {**SegSettings(enabled=True, scale=4).as_dict()}  # omitted keys reset to defaults
    # Still quoted (a parser that does not unquote): accepted anyway.
    assert settings_from_infotext({"SEG layers": '"d0-3, m0"'})["layers"] == "d0-3, m0"
    with pytest.raises(SegParamError, match=r"SEG sigma \(sigma\): got 'abc'"):
        settings_from_infotext({"SEG sigma": "abc"})


def test_positional_args():
    assert settings_from_args([]) == SegSettings() and not settings_from_args([]).active
    assert settings_from_args([True]) == SegSettings(enabled=True)
    full = settings_from_args([True, 4.0, 8, "d0-3", 0.1, 0.9, 0.2])
    assert full == SegSettings(True, 4.0, 8.0, "d0-3", 0.1, 0.9, 0.2) and full.active
    assert settings_from_args((True, 2, None)) == SegSettings(enabled=True, scale=2)  # None = default
    # The seven values of the first versions keep their meaning; mode and the hires override come after.
    assert full.mode == "blur" and full.hires == "same" and full.for_pass(True) is full
    longer = settings_from_args([True, 4.0, 8, "d0-3", 0.1, 0.9, 0.2, "identity", "own", 1.5, "2", "u0", "identity"])
    assert longer == SegSettings(True, 4.0, 8.0, "d0-3", 0.1, 0.9, 0.2, mode="identity", hires="own", hr_scale=1.5,
                                 hr_sigma=2.0, hr_layers="u0", hr_mode="identity")
    with pytest.raises(SegParamError, match="SEG perturbation \\(mode\\): got 'extra'; accepted: blur or identity"):
        settings_from_args([True, 3, 1, "mid", 0, 1, 0, "extra"])
    with pytest.raises(SegParamError, match="at most 13"):
        settings_from_args([True, 3, 1, "mid", 0, 1, 0, "blur", "same", 3, "inf", "mid", "blur", "extra"])


def test_named_args_and_strings():
    expected = SegSettings(enabled=True, scale=3, sigma=math.inf, layers="u0-2", rescale=0.5)
    assert settings_from_args({"enabled": "true", "sigma": "Infinity", "layers": "u0-u2", "rescale": "0.5"}) == expected
    assert settings_from_args([{"enabled": True, "layers": "u0-2", "rescale": 0.5}]) == expected
    assert settings_from_args({"enabled": "False", "scale": "3"}) == SegSettings(scale=3)
    with pytest.raises(SegParamError) as info:
        settings_from_args({"enabled": True, "blur_sigma": 2})
    assert "'blur_sigma'" in str(info.value) and "enabled, scale, sigma, layers, start, end, rescale" in str(info.value)


def test_settings_are_immutable_and_validated_on_replace():
    settings = SegSettings(enabled=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.scale = 5
    with pytest.raises(SegParamError):
        dataclasses.replace(settings, scale=-1)


@pytest.mark.parametrize("args, message", [
    ([True, -1], "SEG scale (scale): got -1 (out of range); accepted: a number from 0 to 20"),
    ([True, 20.5], "SEG scale (scale): got 20.5 (out of range); accepted: a number from 0 to 20"),
    ([True, math.inf], "SEG scale (scale): got inf"),
    ([True, "nan"], "SEG scale (scale): got 'nan' (not a number)"),
    ([True, "3x"], "SEG scale (scale): got '3x' (not a number)"),
    ([True, True], "SEG scale (scale): got True"),
    ([True, 3, -1], "SEG sigma (sigma): got -1 (must be > 0); accepted: a number > 0, or inf"),
    ([True, 3, 0], "SEG sigma (sigma): got 0 (must be > 0)"),
    ([True, 3, "-inf"], "SEG sigma (sigma): got '-inf'"),
    ([True, 3, math.nan], "SEG sigma (sigma): got nan (not a number)"),
    ([True, 3, 1, "u0.4.1"], "SEG layers (layers): got 'u0.4.1'"),
    ([True, 3, 1, 5], "SEG layers (layers): got 5 (expected text)"),
    ([True, 3, 1, "mid", 1.5], "SEG start (start): got 1.5 (out of range); accepted: a number from 0 to 1"),
    ([True, 3, 1, "mid", 0.6, 0.4], "SEG end (end) = 0.4 is before SEG start (start) = 0.6"),
    ([True, 3, 1, "mid", 0, 1, -0.1], "SEG rescale (rescale): got -0.1 (out of range)"),
    ([True, 3, 1, "mid", 0, 1, 0, "pag"], "SEG perturbation (mode): got 'pag'; accepted: blur or identity"),
    ([True, 3, 1, "mid", 0, 1, 0, 1], "SEG perturbation (mode): got 1; accepted: blur or identity"),
    ([True, 3, 1, "mid", 0, 1, 0, "blur", True], "SEG hires pass (hires): got True; accepted: same or own or off"),
    ([True, 3, 1, "mid", 0, 1, 0, "blur", "own", 21], "SEG hires scale (hr_scale): got 21 (out of range)"),
    ([True, 3, 1, "mid", 0, 1, 0, "blur", "own", 2, 0], "SEG hires sigma (hr_sigma): got 0 (must be > 0)"),
    ([True, 3, 1, "mid", 0, 1, 0, "blur", "own", 2, 1, "x9"], "SEG hires layers (hr_layers): got 'x9'"),
    ([True, 3, 1, "mid", 0, 1, 0, "blur", "own", 2, 1, "m0", "none"], "SEG hires perturbation (hr_mode): got 'none'"),
    (["yes"], "SEG enabled (enabled): got 'yes'; accepted: true or false"),
    ([2], "SEG enabled (enabled): got 2"),
])
def test_bad_values_are_rejected_not_clamped(args, message):
    with pytest.raises(SegParamError) as info:
        settings_from_args(args)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_sigma_parsing_and_formatting():
    for text in ("inf", "INF", "Infinity", "∞", " inf "):
        assert parse_sigma(text) == math.inf
    assert parse_sigma("1e4") == 1e4 and parse_sigma(123456.75) == 123456.75  # large stays exact, not inf
    assert format_sigma(math.inf) == "inf" and format_sigma(2.0) == "2" and format_sigma(0.5) == "0.5"
    for value in (123456.0, 1.23456789, 1e20, 0.1 + 0.2):
        assert parse_sigma(format_sigma(value)) == value


def test_parse_value_for_xyz_axes():
    assert parse_value("sigma", "16") == 16.0
    assert parse_value("layers", "D0 - D1") == "d0-1"
    with pytest.raises(SegParamError, match="accepted names"):
        parse_value("cfg", 1)


def test_table_drives_settings_and_ui():
    # positional order: the original seven first (old payloads keep working), then mode and the hires override
    assert [p.name for p in PARAMS] == ["enabled", "scale", "sigma", "layers", "start", "end", "rescale",
                                        "mode", "hires", "hr_scale", "hr_sigma", "hr_layers", "hr_mode"]
    assert SegSettings().as_dict() == {p.name: p.default for p in PARAMS}
    assert SegSettings().mode == "blur" and SegSettings().hires == "same"
    assert {p.infotext for p in PARAMS if p.infotext} == {
        "SEG scale", "SEG sigma", "SEG layers", "SEG start", "SEG end", "SEG rescale", "SEG mode",
        "SEG hires", "SEG hires scale", "SEG hires sigma", "SEG hires layers", "SEG hires mode"}
    for hr, main in params.HIRES_FIELDS.items():  # each hires field mirrors its main field
        a, b = params.PARAM_BY_NAME[hr], params.PARAM_BY_NAME[main]
        assert (a.kind, a.default, a.minimum, a.maximum, a.choices, a.group) == (b.kind, b.default, b.minimum,
                                                                                 b.maximum, b.choices, "hires")
    for p in PARAMS:
        assert p.label and p.hint and p.kind in ("bool", "float", "sigma", "layers", "choice")
        if p.kind == "choice":
            assert p.default in p.choices and len(p.choice_labels) == len(p.choices)
        if p.kind == "float":
            assert p.minimum <= p.default <= p.maximum and p.step
        for choice in p.choices:  # every suggested choice is itself valid
            p.coerce(choice)
    assert params.PARAM_BY_NAME["sigma"].choices[0] == "inf"


@pytest.mark.parametrize("name", ["mode", "hires", "hr_mode"])
def test_choice_labels_are_accepted_like_values(name):
    """/sdapi/v1/script-info lists a Radio's labels (e.g. 'Identity attention (PAG)'); API, infotext and X/Y/Z
    accept each label, in any case, as its value (issue 22, item 6)."""
    from lib_seg import params
    param = params.PARAM_BY_NAME[name]
    for choice, label in zip(param.choices, param.choice_labels):
        assert params.parse_value(name, label) == choice
        assert params.parse_value(name, f"  {label.upper()} ") == choice
        assert params.settings_from_args({name: label}).as_dict()[name] == choice
    positional = [True, 3, "inf", "mid", 0, 1, 0, "Identity attention (PAG)", "Own settings"]
    settings = params.settings_from_args(positional)
    assert (settings.mode, settings.hires) == ("identity", "own")
    with pytest.raises(params.SegParamError, match=r"or the labels"):
        params.parse_value(name, "PAG")


# --- values an API client can send that no UI would (issue 22's fuzz in real A1111 1.10.1)

@pytest.mark.parametrize("value", [10 ** 30, -(10 ** 30), 2 ** 63, 10 ** 400, -(10 ** 4000)])
def test_integers_beyond_64_bits_are_refused_naming_the_field(value):
    # The hosts' API answer echoes the request through orjson, which stops at 64 bits: accepted, 10**30 as sigma
    # ended in HTTP 500 after the image was made; float(10**400) raised OverflowError (HTTP 500) before.
    for name in ("scale", "sigma", "start", "hr_sigma"):
        with pytest.raises(SegParamError, match=rf"\({name}\).*64-bit"):
            parse_value(name, value)
    assert parse_value("sigma", 2 ** 63 - 1) == float(2 ** 63 - 1)


@pytest.mark.parametrize("text", ["1e999", "-1e400", "1" + "0" * 400])
def test_finite_text_beyond_float_range_is_refused_not_read_as_inf(text):
    with pytest.raises(SegParamError, match=r"\(sigma\).*too large"):
        parse_value("sigma", text)
    for spelled in ("inf", "Infinity", "+inf", "∞"):
        assert parse_value("sigma", spelled) == math.inf


@pytest.mark.parametrize("name,value", [("sigma", "x" * 10240), ("layers", "d" + "9" * 10239), ("mode", "é" * 5120),
                                        ("scale", ["mid"] * 3000)])
def test_long_values_are_shortened_in_messages(name, value):
    with pytest.raises(SegParamError) as info:
        parse_value(name, value)
    message = str(info.value)
    assert f"({name})" in message and len(message) < 700
    assert "characters)" in message


def test_long_names_and_text_args_are_shortened():
    with pytest.raises(SegParamError) as info:
        settings_from_args({"x" * 10240: 1})
    assert len(str(info.value)) < 400
    with pytest.raises(SegParamError) as info:
        settings_from_args("y" * 10240)
    assert len(str(info.value)) < 400
