"""ComfyUI glue over ``core``: thin node classes, the MODEL/VAE adapters, nothing of the method itself.

Importing this never imports pyiqa, diffusers or ComfyUI at module level, so a
missing dependency or weight cannot break ComfyUI's start-up: the node that
needs it reports the problem when it runs. ComfyUI loads the nodes through
:mod:`.v3`; :data:`NODES` is the same set as plain classes, for tests and tools.
"""
from . import comfy
from .map_nodes import DDIMInvert, Decode, LatentMAPAscent
from .model_nodes import DenoiserAsDiffusionModel, LoadBuiltinPriorModel
from .prior_nodes import FusePriors, IQAScore, LoadIQAPrior
from .regional_nodes import IQARegionalPrompt
from .select_nodes import IQAQualityMap, IQASelect
from .sr_nodes import IQAFineTuneUpscaler

comfy.register_model_folder()

#: node id -> plain node class (menu order).
NODES = {cls.SCHEMA.node_id: cls for cls in (
    LoadIQAPrior, FusePriors, DDIMInvert, LatentMAPAscent, Decode, IQAScore, IQASelect, IQAQualityMap,
    LoadBuiltinPriorModel, DenoiserAsDiffusionModel, IQAFineTuneUpscaler, IQARegionalPrompt)}
#: node id -> the name the menu shows.
DISPLAY_NAMES = {key: cls.SCHEMA.display_name for key, cls in NODES.items()}
