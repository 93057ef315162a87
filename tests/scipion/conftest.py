"""Fixtures of the Scipion tests: the protocol menus as the GUI loads them."""

import os

import pytest


@pytest.fixture
def menu_views(monkeypatch):
    """{view name: tree} as Scipion's GUI merges every plugin's protocols.conf (needs a domain)."""
    import pyworkflow as pw
    from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

    if pw.Config.getDomain() is None:
        monkeypatch.setattr(pw.Config, "SCIPION_DOMAIN", "pwem")
    return ProtocolTreeConfig.load(pw.Config.getDomain(),
                                   os.path.join(pw.Config.SCIPION_LOCAL_CONFIG, pw.Config.SCIPION_PROTOCOLS))


@pytest.fixture
def menu_places():
    """:func:`protocol_places`, for tests (the test folders are not packages)."""
    return protocol_places


def protocol_places(node, prefix: str = "ProtNT2C", path=()):
    """(protocol class name, menu path of texts) of every entry under ``node`` whose class starts
    with ``prefix``."""
    def text(item, attr):
        value = getattr(item, attr, None)
        return value.get() if hasattr(value, "get") else value

    for child in node.childs:
        yield from protocol_places(child, prefix, path + (text(child, "text"),))
    if str(text(node, "value") or "").startswith(prefix):
        yield text(node, "value"), path
