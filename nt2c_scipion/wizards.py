"""NT2C wizards: the noise patch size of the one-click protocol from its atomic model's extent
and the micrographs' sampling rate."""

from pyworkflow.wizard import Wizard

from .protocols import ProtNT2C


def suggested_noise_patch(protocol: ProtNT2C) -> int:
    """Patch side [px] from the protocol's atomic model and input sampling (see
    ``nt2c_core.noise.extract.suggest_patch_size``)."""
    from nt2c_core.noise.extract import suggest_patch_size
    from nt2c_core.simulate.structure import load_structure

    mics = protocol.inputMicrographs.get()
    path = protocol._structurePath()
    if mics is None or not path:
        raise ValueError("Choose the micrographs and the atomic model first.")
    return suggest_patch_size(2 * load_structure(path).radius, mics.getSamplingRate())


class NT2CNoisePatchWizard(Wizard):
    """Fill 'Noise patch size' with two particle diameters (multiple of 32 px)."""

    _targets = [(ProtNT2C, ["noisePatch"])]

    def show(self, form, *args):
        form.setVar("noisePatch", suggested_noise_patch(form.protocol))
