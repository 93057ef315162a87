"""The plugin registers with Scipion when the package is pip-installed."""

import pyworkflow as pw


def test_plugin_is_discovered_by_scipion_domain():
    import pwem

    import nt2c_scipion

    plugins = pw.Config.getDomain().getPlugins()
    assert "nt2c_scipion" in plugins
    assert issubclass(nt2c_scipion.Plugin, pwem.Plugin)
    assert nt2c_scipion.Plugin.getVar("NT2C_DEVICE") in ("auto", "cpu", "cuda")
