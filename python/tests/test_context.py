"""Contexts: device selection, variants, knobs, profiling, the OpenCL handles."""
import pytest

import nablacl
from conftest import video_inputs


def test_variants_and_knobs_are_listed():
    names = nablacl.variant_names()
    assert names[0] == "auto" and "portable" in names and "cpu-rows" in names
    knobs = nablacl.knobs()
    assert {"VARIANT", "WG_BULK", "MMA_QPW"} <= set(knobs)
    assert all(line.startswith(name + "\t") for name, line in knobs.items())


def test_knobs_and_variant_options():
    c = nablacl.Context(knobs={"MMA_QPW": 2}, variant="portable")
    try:
        assert c.knob("MMA_QPW") == "2" and c.knob("NABLACL_MMA_QPW") == "2"
        c.set_knob("MMA_QPW", None)
        assert c.knob("MMA_QPW") == ""
        assert "portable" in c.variants()
        with pytest.raises(nablacl.InvalidArgument, match="MMA_QPW"):
            c.set_knob("MMA_QPW", 7)
        with pytest.raises(nablacl.InvalidArgument):
            c.set_knob("NO_SUCH_KNOB", 1)
    finally:
        c.close()
    with pytest.raises(nablacl.InvalidArgument):
        nablacl.Context(knobs={"WG_BULK": 9})


def test_forced_variant_runs_and_profile_reports_stages(rng):
    grid = (2, 8, 16)
    q, k, v = video_inputs(rng, (1, 2, 256, 32), grid, "f32")
    with nablacl.Context(variant="portable", profile=True) as c:
        nablacl.attention(q, k, v, "nabla-0.7", grid=grid, context=c)
        assert c.last_variant == "portable"
        stages = c.profile_report()
        assert stages and all(ms >= 0 for ms in stages.values())
        assert c.profile_report() == {}, "the report forgets what it reported"
        assert c.trim() >= 0


def test_device_selection_by_index_and_name():
    devs = nablacl.devices()
    first = nablacl.Context(0)
    try:
        assert first.device_name == devs[0].name
        assert len(first.device_key) == 32
    finally:
        first.close()
    assert repr(first) == "<nablacl.Context closed>"
    by_name = nablacl.Context(devs[0].name[:6])
    by_name.close()
