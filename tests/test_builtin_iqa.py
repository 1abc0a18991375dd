"""The built-in NIQE, BRISQUE, PIQE, NLPD and SSIM (the project's own code) against pyiqa, and without it.

pyiqa is optional for users but part of the test install (``.[test]``), so the equality tests run in CI:
the built-ins must give pyiqa's values (<= 1e-6 relative) on every dev photo and the calibration set.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iqa_map.core.priors import imgproc

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEV = SHARED / "images" / "dev"
CALIB = SHARED / "iqa_calibration"
DATA = REPO / "core" / "priors" / "data"
needs_shared = pytest.mark.skipif(not DEV.is_dir() or not CALIB.is_dir(), reason=f"shared data not found at {SHARED}")
REL = 1e-6


def photos() -> list[Path]:
    return (sorted(DEV.glob("*.png")) + sorted((CALIB / "dist_dir").iterdir())
            + sorted((CALIB / "ref_dir").iterdir()))


@pytest.fixture(scope="module")
def pyiqa():
    return pytest.importorskip("pyiqa")


@needs_shared
@pytest.mark.slow
def test_builtin_priors_equal_pyiqa_on_dev_photos_and_calibration_set(pyiqa):
    """Every dev photo (68) and the calibration set (5 distorted + 5 reference): NIQE, BRISQUE, PIQE."""
    from iqa_map.core.priors.builtin import PRIOR_CLASSES
    from iqa_map.core.priors.calibration import read_image
    from iqa_map.core.priors.pyiqa_backend import BUILTIN_FILES

    files = photos()
    assert len(files) >= 78
    ours = {n: PRIOR_CLASSES[n]() for n in BUILTIN_FILES}
    refs = {n: pyiqa.create_metric(n, device="cpu", **BUILTIN_FILES[n]) for n in BUILTIN_FILES}
    worst = {n: 0.0 for n in BUILTIN_FILES}
    for f in files:
        img = read_image(f)
        with torch.no_grad():
            for n in BUILTIN_FILES:
                a, b = float(refs[n](img)), float(ours[n].native(img))
                worst[n] = max(worst[n], abs(a - b) / max(abs(a), 1e-9))
                assert b == pytest.approx(a, rel=REL), f"{n} on {f.name}: ours {b} vs pyiqa {a}"
    print("largest relative differences:", worst)


@needs_shared
def test_nlpd_and_ssim_equal_pyiqa_on_photo_pairs(pyiqa):
    """Photo vs a damaged copy (blur, noise, JPEG), and vs itself."""
    from iqa_map.core.quality.fullref import NLPD, ssim
    from iqa_map.core.priors.calibration import read_image
    from iqa_map.core.priors.distortions import distort

    ref_nlpd = pyiqa.create_metric("nlpd", device="cpu")
    ref_ssim = pyiqa.create_metric("ssim", device="cpu")
    for f in sorted(DEV.glob("*.png"))[:3] + sorted((CALIB / "dist_dir").iterdir())[:1]:
        x = read_image(f)
        for kind, level in (("blur", 2), ("noise", 3), ("jpeg", 2)):
            y = distort(x, kind, level)
            with torch.no_grad():
                assert float(NLPD()(y, x)) == pytest.approx(float(ref_nlpd(y, x)), rel=REL), (f.name, kind)
                assert float(ssim(y, x)) == pytest.approx(float(ref_ssim(y, x)), rel=REL), (f.name, kind)
        assert float(NLPD()(x, x)) == 0.0 and float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("size,scale", [((37, 53), 0.5), ((64, 48), 0.75), ((20, 31), 2.0), ((96, 97), 0.5)])
def test_imresize_is_matlabs_bicubic(pyiqa, size, scale):
    """Against pyiqa's port of MATLAB imresize (single precision): within float32 rounding, any size and scale."""
    from pyiqa.matlab_utils import imresize

    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(1))
    ours, ref = imgproc.imresize(x, scale), imresize(x, scale=scale)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-6)


def test_imresize_keeps_constants_and_halves_exactly():
    """Properties of MATLAB's bicubic: weights sum to 1 (a constant stays constant), and the output size is ceil."""
    x = torch.full((1, 1, 33, 50), 0.25, dtype=torch.float64)
    y = imgproc.imresize(x, 0.5)
    assert y.shape[-2:] == (17, 25) and torch.allclose(y, x[..., :17, :25])
    ramp = torch.arange(16, dtype=torch.float64).view(1, 1, 1, 16).expand(1, 1, 4, 16)
    half = imgproc.imresize(ramp, 0.5, antialias=False)[0, 0, 0]
    assert torch.allclose(half[1:-1], torch.arange(2.5, 14, 2, dtype=torch.float64)[: half.numel() - 2])


def test_symmetric_pad_and_luma():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert imgproc.symmetric_pad(x, 2, 2, 0, 0).flatten().tolist() == [1, 0, 0, 1, 2, 2, 1]
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(imgproc.luma_yiq(rgb, 255.0)) == 76.0  # round(0.299 * 255)
    w = imgproc.gaussian_window(7, 7 / 6)
    assert w.shape == (7, 7) and float(w.sum()) == pytest.approx(1.0, abs=1e-6) and torch.equal(w, w.t())


def test_every_parameter_file_has_a_provenance_line():
    """Each file in core/priors/data has a row in PROVENANCE.md naming its origin and terms; JSON files also carry one."""
    table = (DATA / "PROVENANCE.md").read_text()
    rows = {re.match(r"\| `([^`]+)`", line).group(1): line for line in table.splitlines() if line.startswith("| `")}
    for f in sorted(DATA.iterdir()):
        if f.name in ("PROVENANCE.md", "__init__.py") or f.name.startswith("."):
            continue
        key = next((k for k in rows if f.name == k or (f.suffix == ".sha256" and f.stem in k)), None)
        assert key is not None, f"{f.name} has no row in PROVENANCE.md"
        assert any(t in rows[key].lower() for t in ("licence", "apache", "gpl", "project", "unclear", "terms")), key
        if f.suffix == ".json" and f.name != "calibration.json":
            assert json.loads(f.read_text()).get("_provenance"), f.name


def test_pyiqa_metric_snapshot_matches_the_installed_pyiqa(pyiqa):
    """The names Load IQA Prior lists without pyiqa are pyiqa's: equal for the snapshot's version, else a subset."""
    from iqa_map.core.priors.pyiqa_backend import SNAPSHOT_FILE, snapshot

    shipped, live = json.loads(SNAPSHOT_FILE.read_text()), snapshot()
    if shipped["pyiqa_version"] == live["pyiqa_version"]:
        assert shipped["metrics"] == live["metrics"], "re-run tools/snapshot_pyiqa_metrics.py"
    else:
        assert set(shipped["metrics"]) <= set(live["metrics"])


def _without_pyiqa(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``import pyiqa`` fails, on one thread like this one (BRISQUE runs
    in single precision, where the thread count changes the order of sums: ~3e-5 relative, pyiqa's as well)."""
    pre = "import sys; sys.modules['pyiqa'] = None\nimport torch; torch.set_num_threads({threads})\n"
    post = "\nassert sys.modules['pyiqa'] is None and not [m for m in sys.modules if m.startswith('pyiqa.')]\n"
    env = {**os.environ, "PYTHONPATH": str(REPO.parent)}
    pre = pre.format(threads=torch.get_num_threads())
    return subprocess.run([sys.executable, "-c", pre + code + post], capture_output=True, text=True,
                          cwd=REPO.parent, timeout=timeout, env=env)


@needs_shared
def test_cli_scores_without_pyiqa_exactly_as_pyiqa(pyiqa, tmp_path):
    """`iqa-map score --json` with `import pyiqa` failing: NIQE, BRISQUE and PIQE equal pyiqa's on photos."""
    from iqa_map.core.priors.calibration import read_image
    from iqa_map.core.priors.pyiqa_backend import BUILTIN_FILES

    files = [sorted(DEV.glob("*.png"))[0], sorted((CALIB / "dist_dir").iterdir())[0]]
    out = tmp_path / "scores.json"
    code = ("import contextlib, io\nfrom iqa_map.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            f"    rc = main(['score', {str(files[0])!r}, {str(files[1])!r}, '--prior', 'niqe', '--prior', 'brisque',"
            " '--prior', 'piqe', '--json'])\n"
            f"assert rc == 0\nopen({str(out)!r}, 'w').write(buf.getvalue())\n")
    run = _without_pyiqa(code)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())
    for f in files:
        row = next(v for k, v in rows.items() if Path(k).name == f.name)
        img = read_image(f)
        for name in BUILTIN_FILES:
            ref = float(pyiqa.create_metric(name, device="cpu", **BUILTIN_FILES[name])(img))
            assert row[name]["native"] == pytest.approx(ref, rel=REL), (f.name, name)


@needs_shared
@pytest.mark.slow
def test_cli_enhance_builtin_runs_without_pyiqa(tmp_path):
    """`iqa-map enhance --model builtin --prior builtin` (NLPD fidelity) with `import pyiqa` failing."""
    from PIL import Image

    src = tmp_path / "crop.png"
    Image.open(sorted(DEV.glob("*.png"))[0]).convert("RGB").crop((0, 0, 192, 192)).save(src)
    code = ("from iqa_map.cli import main\n"
            f"assert main(['enhance', {str(src)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', 'builtin', "
            "'--prior', 'builtin', '--iterations', '3', '--steps', '4']) == 0\n")
    run = _without_pyiqa(code)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "crop_enhanced.png").is_file()
