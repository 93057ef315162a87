"""NT2C core: cryo-EM micrograph simulation and Noise-Transfer2Clean denoising.

This package never imports Scipion. It works on MRC files and numpy/torch arrays and exposes
one function per stage plus the ``nt2c`` command line (``nt2c_core.cli``).
"""

__version__ = "0.1.0"
