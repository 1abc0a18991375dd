"""The classical built-in priors (NIQE, BRISQUE, PIQE) in IQA-MAP's own code, with shipped parameters.

No third-party IQA package is involved: the metrics are in :mod:`.nss` and :mod:`.piqe`, their
parameter files in ``data/`` (origin and terms in ``data/PROVENANCE.md``). pyiqa, when installed,
gives the same values (tests).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import Calibration, Prior

DATA = Path(__file__).with_name("data")
NIQE_FILE = DATA / "niqe_pris_params.mat"
BRISQUE_SVR_FILE = DATA / "brisque_live_svr.pth"
BRISQUE_RANGE_FILE = DATA / "brisque_live_range.json"
#: Smallest image side each built-in handles (NIQE: two 96-pixel blocks; smaller inputs are upsampled).
MIN_SIZE = {"niqe": 192, "brisque": 64, "piqe": 32}
#: Native score ranges, as documented for the metrics.
NATIVE_RANGE = {"niqe": (0.0, None), "brisque": (0.0, 150.0), "piqe": (0.0, 100.0)}


def flat_score(name: str) -> float:
    """What a textureless image scores: the centre of the shipped calibration (calibrated 50, a typical
    photo), so that "no texture to judge" reads as neither good nor bad."""
    from .calibration import lookup
    return lookup(name).C


class _Builtin(Prior):
    lower_better = True

    def __init__(self, name: str, device=None, calibration: Calibration | None = None) -> None:
        super().__init__(calibration)
        self.name = name
        self.native_range = NATIVE_RANGE[name]
        self.min_size = MIN_SIZE[name]
        # An anchor buffer: moving the prior moves its parameters, and `device` finds it.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        if device is not None:
            self.to(device)


class NiqePrior(_Builtin):
    """NIQE with the standard pristine model, total on flat images (see :mod:`.nss`)."""

    def __init__(self, name: str = "niqe", device=None, calibration: Calibration | None = None) -> None:
        import scipy.io

        super().__init__("niqe", None, calibration)
        params = scipy.io.loadmat(str(NIQE_FILE))
        self.register_buffer("mu_pris", torch.from_numpy(params["mu_prisparam"].astype("float64")).reshape(-1))
        self.register_buffer("cov_pris", torch.from_numpy(params["cov_prisparam"].astype("float64")))
        self.flat_score = flat_score("niqe")
        if device is not None:
            self.to(device)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        from . import nss
        return nss.niqe(img, self.mu_pris, self.cov_pris, self.flat_score)


class BrisquePrior(_Builtin):
    """BRISQUE with the LIVE-trained SVR, total on flat images (see :mod:`.nss`)."""

    def __init__(self, name: str = "brisque", device=None, calibration: Calibration | None = None) -> None:
        super().__init__("brisque", None, calibration)
        sv_coef, sv = torch.load(BRISQUE_SVR_FILE, map_location="cpu", weights_only=True)
        spec = json.loads(BRISQUE_RANGE_FILE.read_text())
        self.register_buffer("sv_coef", sv_coef.double())
        self.register_buffer("sv", sv.double())
        self.register_buffer("ranges", torch.tensor(spec["ranges"], dtype=torch.float64))
        self.gamma, self.rho = float(spec["gamma"]), float(spec["rho"])
        self.flat_score = flat_score("brisque")
        if device is not None:
            self.to(device)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        from . import nss
        return nss.brisque(img, self.sv_coef, self.sv, self.gamma, self.rho, self.flat_score, self.ranges)


class PiqePrior(_Builtin):
    """PIQE with a usable gradient (see :mod:`.piqe`)."""

    def __init__(self, name: str = "piqe", device=None, calibration: Calibration | None = None) -> None:
        super().__init__("piqe", device, calibration)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        from .piqe import piqe
        return piqe(img)


PRIOR_CLASSES = {"niqe": NiqePrior, "brisque": BrisquePrior, "piqe": PiqePrior}
