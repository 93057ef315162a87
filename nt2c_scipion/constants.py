"""Names shared by the NT2C plugin's protocols, forms and tests."""

NT2C_DEVICE_VAR = "NT2C_DEVICE"  # auto (default), cpu or cuda: where steps run when no GPU is asked for

# The dedicated environment (``scipion3 installb nt2c``) used when nt2c_core cannot run in
# Scipion's own Python (older than 3.10, or without torch): its folder, the torch requirement
# pip installs there, the Python that creates it, and which route the protocols take.
NT2C_HOME_VAR = "NT2C_HOME"
NT2C_TORCH_VAR = "NT2C_TORCH"
NT2C_PYTHON_VAR = "NT2C_PYTHON"
NT2C_ROUTE_VAR = "NT2C_ROUTE"
ROUTES = ("auto", "in-process", "isolated")  # auto: in-process when nt2c_core and torch import

BIN_CHOICES = ["1", "2", "4"]
OUTPUT_MICROGRAPHS = "outputMicrographs"
OUTPUT_MODEL = "outputModel"

# help of the simulated ice-thickness gradient (nt2c_core.settings.SimulationConfig.ice_gradient), simulate and
# one-click
ICE_GRADIENT_HELP = (
    "Uneven ice in the simulated micrographs: the largest relative change of the ice thickness "
    "from a micrograph's centre to its edge (0.3 = up to +-30 %: a ramp in a random direction, "
    "its amplitude drawn up to this value per micrograph). The ice texture follows the local "
    "thickness and the intensity falls with it; the clean target stays flat. 0 = flat ice, the "
    "default: training on ramps of up to +-30 % lowered the picking precision on real ribosome "
    "micrographs (EMPIAR-10028)."
)
# help of the fine stage's data-consistency band (nt2c_core.settings.CONSISTENCY_REFERENCES), fine and one-click forms
CONSISTENCY_BAND_HELP = (
    "general: at the particle scale the fine model's output must lie between the raw micrograph "
    "and the shipped general model's output, so it may remove as much particle-scale noise as "
    "the general model does (the default; +0.35 dB against the truth on the demo); none: it "
    "must equal the raw micrograph there (keeps that noise)."
)
