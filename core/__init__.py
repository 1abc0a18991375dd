"""IQA-MAP engine: pure torch, no ComfyUI import.

Sub-packages, by concept:

* ``models``: the denoiser interface and its adapters (built-in, diffusers, flow models), codecs;
* ``sampling``: EDICT and DDIM samplers, inversion, float64 where the device has it;
* ``priors``: NR-IQA models as differentiable priors (built-in, pyiqa, fusion, calibration);
* ``map``: the MAP ascent (settings, objective, optimisers, the loop and its report, tiling, the
  ``enhance`` pipeline and its progress view, batch runs, cross-prior comparison); ``from iqa_map.core import map``
  gives the method;
* ``quality``: quality maps, regions, IQA-guided selection, full-reference metrics;
* ``sr``: IQA-augmented super-resolution (upscalers, targets, LoRA fine-tuning, its guard);
* ``io``: photo files (orientation, alpha, colour profile; 16-bit PNG and TIFF), drawings (contact
  sheets, heat maps) and files written atomically, with their hashes.

Modules: ``options`` (settings as data: the metadata the CLI options and node inputs are generated from),
``tiles`` (tile windows and blending), ``autograd`` (gradients inside inference mode),
``runtime`` (stopping a run: interruption, out-of-memory retries).
"""
