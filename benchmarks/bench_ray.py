"""Batch throughput on Ray: ``iqa-map enhance`` over N photos here, and on a local Ray cluster with 1 and 2
workers (built-in model, 1 torch thread per worker), so the scaling efficiency and Ray's overhead per photo
are measured on the same photos and settings.

    python -m benchmarks.bench_ray --photos 8 --crop 128

Each run writes into a fresh output folder (nothing is skipped); the times are the command's wall clock,
model loading and Ray's start-up included (reported apart: the cluster's start, and a run of 0 photos).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, centre_crop, dev_files


def _timed(argv) -> float:
    from iqa_map.cli import main

    t0 = time.perf_counter()
    if main(argv) != 0:
        sys.exit(f"failed: {' '.join(argv)}")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "ray.json"))
    args = ap.parse_args(argv)

    import torch

    from iqa_map.core.map import batch
    from iqa_map.core.io.imageio import load_image, save_image

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    photos = tmp / "in"
    photos.mkdir()
    for f in dev_files(args.photos):
        save_image(centre_crop(load_image(f), args.crop), photos / f.name)
    common = ["--preset", args.preset, "--prior", "builtin", "--device", "cpu"]
    results = {"photos": args.photos, "crop": args.crop, "preset": args.preset}
    results["local_s"] = _timed(["enhance", str(photos), "-o", str(tmp / "local"), *common])
    t0 = time.perf_counter()
    batch.connect("local", num_cpus=2)
    results["ray_start_s"] = time.perf_counter() - t0
    for w in (1, 2):
        results[f"ray_{w}_workers_s"] = _timed(["enhance", str(photos), "-o", str(tmp / f"ray{w}"), *common,
                                                "--ray", "local", "--workers", str(w)])
    n = args.photos
    results["photos_per_minute"] = {k: 60 * n / results[k] for k in ("local_s", "ray_1_workers_s", "ray_2_workers_s")}
    results["scaling_efficiency_2_workers"] = results["ray_1_workers_s"] / (2 * results["ray_2_workers_s"])
    results["ray_overhead_s_per_photo"] = (results["ray_1_workers_s"] - results["local_s"]) / n
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
