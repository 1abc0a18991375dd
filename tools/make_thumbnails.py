"""Refresh the example workflows' thumbnails (and the README's screenshot) from the browser test's screenshots.

    COMFYUI_PATH=~/ComfyUI python tools/make_thumbnails.py          # runs tests/test_browser.py first
    python tools/make_thumbnails.py --from DIR                        # screenshots already taken

Each thumbnail is the real front end showing the workflow's graph after a run
(``example_workflows/<name>.jpg``, where ComfyUI's template browser looks for
it); ``docs/comfyui_screenshot.jpg`` is the CPU workflow's, for the README.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
README_SHOT = ("iqa_map_cpu_builtin", REPO / "docs" / "comfyui_screenshot.jpg")
THUMB_WIDTH, SHOT_WIDTH, QUALITY = 960, 1600, 85


def _jpeg(png: Path, dest: Path, width: int) -> None:
    from PIL import Image

    img = Image.open(png).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.save(dest, "JPEG", quality=QUALITY, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="shots", type=Path, help="a folder of screenshots from tests/test_browser.py")
    args = ap.parse_args(argv)
    shots = args.shots
    if shots is None:
        if not os.environ.get("COMFYUI_PATH"):
            sys.exit("set COMFYUI_PATH to a ComfyUI checkout (or give --from DIR)")
        shots = Path(tempfile.mkdtemp(prefix="iqa_map_shots_"))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "browser", "tests/test_browser.py"],
                             cwd=REPO, env={**os.environ, "IQA_MAP_SCREENSHOTS": str(shots)})
        if run.returncode != 0:
            sys.exit("the browser test failed: no thumbnails written")
    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    missing = [n for n in names if not (shots / f"{n}.png").is_file()]
    if missing:
        sys.exit(f"no screenshot for {', '.join(missing)} in {shots}")
    for name in names:
        _jpeg(shots / f"{name}.png", EXAMPLES / f"{name}.jpg", THUMB_WIDTH)
        print("wrote", EXAMPLES / f"{name}.jpg")
    _jpeg(shots / f"{README_SHOT[0]}.png", README_SHOT[1], SHOT_WIDTH)
    print("wrote", README_SHOT[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
