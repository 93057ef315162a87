"""Names shared by the NT2C plugin's protocols, forms and tests."""

NT2C_DEVICE_VAR = "NT2C_DEVICE"
