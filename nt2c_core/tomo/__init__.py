"""Cryo-ET: tomogram simulation with ground truth (:mod:`.simulate`), weighted back-projection
(:mod:`.reconstruct`), the tomogram's own noise (:mod:`.noise`) and NMSG single-volume denoising
(:mod:`.nmsg`). Volumes are numpy arrays (z, y, x), as mrcfile reads them; the tilt axis is y."""
