"""The plugin's tests, as ``pyworkflow.tests.BaseTest`` / ``unittest`` classes that Scipion's own
runner lists and runs (``scipion3 tests nt2c_scipion.tests.test_protocols``, or ``--show --grep
nt2c_scipion``); ``make test`` runs them with pytest together with the core's tests (``tests/``).
They make their own tiny data with nt2c_core's simulator. Some need the machine: the queue test a
local SLURM (Debian's slurm-wlm), the GUI test Xvfb, the isolated-route test pip access; each
skips with the reason where that is missing."""
