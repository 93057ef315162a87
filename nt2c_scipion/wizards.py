"""NT2C wizards. The denoising protocols need none; the training protocols' wizards (SSIM
threshold preview, patch size from the structure) come with them."""
