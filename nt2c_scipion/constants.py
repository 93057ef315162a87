"""Names shared by the NT2C plugin's protocols, forms and tests."""

NT2C_DEVICE_VAR = "NT2C_DEVICE"  # auto (default), cpu or cuda: where steps run when no GPU is asked for

BIN_CHOICES = ["1", "2", "4"]
OUTPUT_MICROGRAPHS = "outputMicrographs"
OUTPUT_MODEL = "outputModel"
