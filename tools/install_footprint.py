"""What installing the pack does to a ComfyUI environment, measured with pip's own resolver.

For each transformers line (4.x and 5.x) it resolves, with ``pip install --dry-run --ignore-installed
--report``, (a) ComfyUI's requirements and (b) the same plus this pack's ``requirements.txt`` (optionally
plus the light pyiqa install of docs/install.md), and prints the packages the pack adds, the versions of
ComfyUI's set it changes, and whether it brings a second OpenCV. Nothing is installed. Needs the package
index (PyPI); takes a minute or two per resolution.

    python tools/install_footprint.py --comfyui /path/to/ComfyUI [--light-pyiqa] [--json out.json]

Exit status 1 when a target is missed (more than --max-added packages, a changed version, two OpenCVs).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRANSFORMERS = {"4.x": "transformers>=4.50.3,<5", "5.x": "transformers>=5,<6"}
OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def resolve(requirement_files: list[Path], extra: list[str], python: str) -> dict[str, str]:
    """{package: version} pip would install into an empty environment for these requirements."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        for f in requirement_files:
            cmd += ["-r", str(f)]
        cmd += extra
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"pip could not resolve {[str(f) for f in requirement_files] + extra}:\n{run.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return {_canon(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


def light_pyiqa_requirements() -> list[str]:
    """The light install's second command (the first, pyiqa --no-deps, adds pyiqa alone), with the OpenCV that
    ``import pyiqa`` needs: ComfyUI's own set has none, so it is the only one."""
    sys.path.insert(0, str(REPO.parent))
    from iqa_map.core.priors.pyiqa_backend import LIGHT_INSTALL, LIGHT_OPENCV
    return LIGHT_INSTALL[1].split() + [LIGHT_OPENCV]


def compare(base: dict[str, str], withpack: dict[str, str]) -> dict:
    added = sorted(set(withpack) - set(base))
    changed = sorted((n, base[n], withpack[n]) for n in set(base) & set(withpack) if base[n] != withpack[n])
    opencv = sorted(n for n in withpack if n in OPENCV)
    return {"base": len(base), "with_pack": len(withpack), "added": {n: withpack[n] for n in added},
            "changed": [{"package": n, "from": a, "to": b} for n, a, b in changed], "opencv": opencv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (its requirements.txt)")
    ap.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    ap.add_argument("--light-pyiqa", action="store_true", help="also resolve the pack plus the light pyiqa install")
    ap.add_argument("--max-added", type=int, default=8)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    comfy = args.comfyui / "requirements.txt"
    results, ok = {}, True
    for line, pin in TRANSFORMERS.items():
        base = resolve([comfy], [pin], args.python)
        withpack = resolve([comfy, args.requirements], [pin], args.python)
        r = results[line] = compare(base, withpack)
        print(f"transformers {line} ({base.get('transformers')}): ComfyUI alone {r['base']} packages; "
              f"with the pack {r['with_pack']}")
        print(f"  added ({len(r['added'])}): " + ", ".join(f"{n} {v}" for n, v in r["added"].items()))
        print("  changed: " + (", ".join(f"{c['package']} {c['from']} -> {c['to']}" for c in r["changed"]) or "none"))
        print("  OpenCV packages: " + (", ".join(r["opencv"]) or "none"))
        ok &= len(r["added"]) <= args.max_added and not r["changed"] and len(r["opencv"]) <= 1
        if args.light_pyiqa:
            light = resolve([comfy, args.requirements], [pin, *light_pyiqa_requirements()], args.python)
            lr = r["light_pyiqa"] = compare(base, light)
            lr["added"]["pyiqa"] = "(--no-deps)"
            print(f"  with the light pyiqa install, added ({len(lr['added'])}): "
                  + ", ".join(f"{n} {v}" for n, v in lr["added"].items()))
            print("    changed: " + (", ".join(f"{c['package']} {c['from']} -> {c['to']}" for c in lr["changed"])
                                     or "none") + "; OpenCV: " + (", ".join(lr["opencv"]) or "none"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print("targets (<= %d added, no version changed, at most one OpenCV): %s" % (args.max_added, "met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
