"""Scipion objects of the NT2C plugin."""

import json

import pyworkflow.object as pwobj
from pwem.objects import EMObject


class NT2CModel(EMObject):
    """A trained NT2C model: a file (weights + JSON metadata, see ``nt2c_core.models.store``)
    plus the metadata fields that forms and validation need."""

    def __init__(self, filename=None, **kwargs):
        super().__init__(**kwargs)
        self._filename = pwobj.String(filename)
        self._kind = pwobj.String()
        self._pixelSize = pwobj.Float()
        self._metadata = pwobj.String()

    def getFileName(self):
        return self._filename.get()

    def setFileName(self, filename):
        self._filename.set(filename)

    def getKind(self):
        return self._kind.get()

    def getPixelSize(self):
        """Pixel size (Å) the model was trained for, or None."""
        return self._pixelSize.get()

    def getMetadata(self) -> dict:
        return json.loads(self._metadata.get() or "{}")

    def setMetadata(self, metadata: dict):
        self._metadata.set(json.dumps(metadata))
        self._kind.set(metadata.get("kind", "denoiser"))
        if metadata.get("pixel_size"):
            self._pixelSize.set(float(metadata["pixel_size"]))

    @classmethod
    def fromFile(cls, path) -> "NT2CModel":
        """The object of a model file written by nt2c_core (metadata read, weights not loaded)."""
        from nt2c_core.models.store import read_model_file

        model = cls(filename=str(path))
        model.setMetadata(json.loads(read_model_file(path)["metadata"]))
        return model

    def getFiles(self):
        return {self.getFileName()}

    def __str__(self):
        px = self.getPixelSize()
        return f"NT2C {self.getKind() or 'model'}" + (f" ({px:.3g} Å/px)" if px else "")
