"""Diffusion models behind one denoiser interface (:class:`Denoiser`)."""
from .base import Denoiser, karras_sigmas
from .builtin import BuiltinDenoiser, load_builtin
from .diffusers_adapter import DiffusersDenoiser, from_diffusers
from .flow import FlowDenoiser, FlowSchedule, from_velocity
from .network import NetworkDenoiser, from_denoiser

__all__ = ["Denoiser", "BuiltinDenoiser", "DiffusersDenoiser", "NetworkDenoiser", "from_diffusers", "from_denoiser",
           "load_builtin", "karras_sigmas", "FlowDenoiser", "FlowSchedule", "from_velocity"]
