"""Tests Scipion's own runner lists and runs (``scipion3 tests nt2c_scipion.tests.test_workflows``);
``make test`` runs them too. They make their own tiny data with nt2c_core's simulator, so they
need nothing but the plugin. The wider suite is in the repository's ``tests/``."""
