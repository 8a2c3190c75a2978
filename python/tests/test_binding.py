"""The cffi declarations against the loaded library, and the status map against its text."""
import re

import pytest

import nablacl
from nablacl import errors
from nablacl._ffi import ffi, lib, string


def test_every_declared_nabla_function_resolves():
    names = re.findall(r"\b(nabla_[a-z0-9_]+)\s*\(", open(nablacl._ffi.__file__).read())
    assert len(set(names)) > 40
    for name in set(names):
        assert getattr(lib, name) is not None, name


def test_version_matches_the_library():
    assert nablacl.__version__ == string(lib.nabla_version_string())
    major, minor, patch = (int(x) for x in nablacl.__version__.split("."))
    assert lib.nabla_version() == major * 10000 + minor * 100 + patch


@pytest.mark.parametrize("code", sorted(errors.STATUS_NAMES))
def test_status_names_are_the_library_statuses(code):
    assert string(lib.nabla_status_str(code)) != "unknown status"
    if code:
        e = errors.error_for(code, "why")
        assert isinstance(e, errors.NablaError)
        assert e.status == code and e.status_name == errors.STATUS_NAMES[code]
        assert str(e) == f"{e.status_name}: why"


def test_unknown_status_is_a_plain_nabla_error():
    assert string(lib.nabla_status_str(-100)) == "unknown status"
    e = errors.error_for(-100, "x")
    assert type(e) is errors.NablaError and e.status == -100


def test_device_listing_matches_the_c_count():
    count = ffi.new("size_t *")
    assert lib.nabla_devices_list(ffi.NULL, 0, count) == 0
    assert len(nablacl.devices()) == count[0]
