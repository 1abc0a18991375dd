"""S-CNN (the synthetic branch of DBCNN, Zhang et al. TCSVT 2020) as a prior: the probability of "clean".

S-CNN classifies an RGB photo into 39 classes of synthetic distortion type and level; class 19
is the undistorted one (clean photos are classed 19, blur 2, noise 17/18, strong JPEG 20/21).
The prior is the softmax probability of class 19 (0-1, higher = better): a learned judge built
on other features than NIQE/BRISQUE and than CNNIQA, used as a held-out judge of SR fine-tuning.
It rewards any sharp, noise-free texture and does not see a periodic grid (docs/sr.md).

The weights are third-party (MIT, ``zwx8981/DBCNN-PyTorch``) and not shipped: ``scnn`` loads
``dbcnn_scnn_synthetic.safetensors`` from the weights folder (``--weights-dir`` /
``$IQA_MAP_WEIGHTS``), ``scnn:<file>`` any file of this layout.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .local import ARCHS, Arch, LocalPrior

FILE_NAME = "dbcnn_scnn_synthetic.safetensors"
CLEAN_CLASS = 19
_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 2)
_WIDTHS = (48, 48, 64, 64, 64, 64, 128, 128, 128)
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SCNNNet(nn.Module):
    """9 x [conv 3x3, BatchNorm, ReLU] -> global average pool -> 2 x [conv 1x1, BN, ReLU] -> linear 256->39;
    the key layout of the public model (``features.*``, ``projection.*``, ``classifier.*``). Returns
    P(class 19) per image."""

    patch = 32  # smallest side it judges (three stride-2 stages leave a 4x4 map)

    def __init__(self) -> None:
        super().__init__()
        layers, c = [], 3
        for w, s in zip(_WIDTHS, _STRIDES):
            layers += [nn.Conv2d(c, w, 3, s, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=False)]
            c = w
        self.features = nn.Sequential(*layers)
        self.projection = nn.Sequential(nn.Conv2d(128, 256, 1), nn.BatchNorm2d(256), nn.ReLU(),
                                        nn.Conv2d(256, 256, 1), nn.BatchNorm2d(256), nn.ReLU())
        self.classifier = nn.Linear(256, 39)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        x = self.features((img - self.mean) / self.std)
        x = self.projection(F.adaptive_avg_pool2d(x, 1))
        return self.classifier(x.flatten(1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.logits(img).softmax(-1)[:, CLEAN_CLASS]


ARCHS["scnn"] = Arch(SCNNNet, lower_better=False, native_range=(0.0, 1.0),
                     doc="S-CNN (DBCNN's synthetic branch): probability of the clean class 19")


def load_scnn(folder: Path | None, device=None) -> LocalPrior:
    """``scnn``: the S-CNN weights from the weights folder, with a message that says where to put them."""
    path = Path(folder) / FILE_NAME if folder is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"prior 'scnn' needs {FILE_NAME} (S-CNN of DBCNN, MIT licence, not shipped) in the "
                                "weights folder: give --weights-dir or set $IQA_MAP_WEIGHTS to the folder holding "
                                "it, or use scnn:/path/to/file.safetensors")
    return LocalPrior(path, arch="scnn", device=device, name="scnn")
