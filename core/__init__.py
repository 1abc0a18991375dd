"""IQA-MAP engine: pure torch, no ComfyUI import.

Submodules: ``models`` (denoiser interface and adapters), ``edict`` and ``ddim``
(samplers), ``priors`` (NR-IQA models as differentiable priors), ``objective``
and ``optim`` (fidelity terms, optimisers), ``map`` (the MAP ascent), ``tiling``
(the ascent on large photos, tile by tile), ``select`` and ``qmap`` (IQA-guided
selection, quality maps).
"""
