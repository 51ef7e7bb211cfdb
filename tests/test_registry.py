import pytest

from facecl.errors import UnknownNameError
from facecl.registry import Registry


def test_register_get_create_and_names():
    reg: Registry = Registry("loss")
    reg.register("cl", dict)

    @reg.register("acl")
    def make_acl(x=1):
        return ("acl", x)

    assert reg.names() == ["acl", "cl"]
    assert reg.create("acl", x=3) == ("acl", 3)
    assert "cl" in reg and len(reg) == 2


def test_duplicate_and_unknown_names_fail_loudly():
    reg: Registry = Registry("loss")
    reg.register("acl-gamma", object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("acl-gamma", object)
    with pytest.raises(UnknownNameError) as e:
        reg.get("acl-gama")
    msg = str(e.value)
    assert "unknown loss 'acl-gama'" in msg and "did you mean 'acl-gamma'" in msg
    assert "acl-gamma" in msg
