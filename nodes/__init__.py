"""ComfyUI glue over ``core``: thin node classes, the MODEL/VAE adapters, nothing of the method itself.

Importing this never imports pyiqa, diffusers or ComfyUI at module level, so a
missing dependency or weight cannot break ComfyUI's start-up: the node that
needs it reports the problem when it runs.
"""
from . import comfy
from .map_nodes import DDIMInvert, Decode, LatentMAPAscent
from .model_nodes import DenoiserAsDiffusionModel, LoadBuiltinPriorModel
from .prior_nodes import FusePriors, IQAScore, LoadIQAPrior
from .select_nodes import IQAQualityMap, IQASelect
from .regional_nodes import IQARegionalPrompt
from .sr_nodes import IQAFineTuneUpscaler

comfy.register_model_folder()

_NODES = {
    "IQAMAP_LoadIQAPrior": (LoadIQAPrior, "Load IQA Prior"),
    "IQAMAP_FusePriors": (FusePriors, "Fuse Priors"),
    "IQAMAP_DDIMInvert": (DDIMInvert, "DDIM Invert"),
    "IQAMAP_LatentMAPAscent": (LatentMAPAscent, "Latent MAP Ascent"),
    "IQAMAP_Decode": (Decode, "Decode"),
    "IQAMAP_IQAScore": (IQAScore, "IQA Score"),
    "IQAMAP_IQASelect": (IQASelect, "IQA Select"),
    "IQAMAP_IQAQualityMap": (IQAQualityMap, "IQA Quality Map"),
    "IQAMAP_LoadBuiltinPriorModel": (LoadBuiltinPriorModel, "Load Built-in Prior Model"),
    "IQAMAP_DenoiserAsDiffusionModel": (DenoiserAsDiffusionModel, "Denoiser as Diffusion Model"),
    "IQAMAP_IQAFineTuneUpscaler": (IQAFineTuneUpscaler, "IQA Fine-tune Upscaler"),
    "IQAMAP_IQARegionalPrompt": (IQARegionalPrompt, "IQA Regional Prompt"),
}
NODE_CLASS_MAPPINGS = {k: cls for k, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: name for k, (_, name) in _NODES.items()}
