"""Small data shipped with the package: two atomic models (PDB entries, CC0), heavy atoms only.

APOFERRITIN: human apoferritin 24-mer (6z6u), globular, about 120 Å across.
PROTEASOME: T. acidophilum 20S proteasome (3j9i), a barrel of about 150 x 110 Å (not globular).
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
APOFERRITIN = DATA_DIR / "apoferritin_6z6u.pdb.gz"
PROTEASOME = DATA_DIR / "proteasome_3j9i.pdb.gz"
GENERAL_MODEL = DATA_DIR / "general_denoiser.pt"  # the shipped general denoiser (nt2c_core.general)
