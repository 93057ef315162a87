"""
@article{Li2022NT2C,
  title = {Noise-Transfer2Clean: denoising cryo-EM images based on noise modeling and transfer},
  author = {Li, Hongjia and Zhang, Hui and Wan, Xiaohua and Yang, Zhidong and Li, Chengmin and
            Li, Jintao and Han, Renmin and Zhu, Ping and Zhang, Fa},
  journal = {Bioinformatics},
  volume = {38},
  number = {7},
  pages = {2022--2029},
  year = {2022},
  doi = {10.1093/bioinformatics/btac052}
}

@article{Yang2024NMSG,
  title = {Self-supervised noise modeling and sparsity guided electron tomography volumetric image denoising},
  author = {Yang, Zhidong and Zang, Dawei and Li, Hongjia and Zhang, Zhao and Zhang, Fa and Han, Renmin},
  journal = {Ultramicroscopy},
  volume = {255},
  pages = {113860},
  year = {2024}
}

@article{Yang2024SaID,
  title = {Improved Denoising of Cryo-Electron Microscopy Micrographs with Simulation-Aware Pretraining},
  author = {Yang, Zhidong and Li, Hongjia and Zang, Dawei and Han, Renmin and Zhang, Fa},
  journal = {Journal of Computational Biology},
  year = {2024},
  doi = {10.1089/cmb.2024.0513}
}

@inproceedings{Zhang2024SR3,
  title = {Robust single-particle cryo-{EM} image denoising and restoration},
  author = {Zhang, Jing and Zhao, Tengfei and Hu, ShiYu and Zhao, Xin},
  booktitle = {ICASSP 2024 - IEEE International Conference on Acoustics, Speech and Signal Processing},
  year = {2024},
  eprint = {2401.01097},
  archivePrefix = {arXiv}
}
"""
