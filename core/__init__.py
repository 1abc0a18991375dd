"""IQA-MAP engine: pure torch, no ComfyUI import.

Submodules: ``models`` (denoiser interface and adapters), ``edict`` and ``ddim``
(samplers), ``priors`` (NR-IQA models as differentiable priors).
"""
