"""Best-of-N by a built-in prior versus a random pick: the issue-7 selection benchmark.

    python -m benchmarks.bench_select [--limit N] [--n 8] [--crop 96] [--perturb 0.02]

Each dev photo gets the seeded blur+noise+JPEG mix of bench_map; latent MAP with
the built-in model runs N times with N seeds (the seed drives the perturbation
added to the latent each step, so the N results differ). One result is picked
(i) by the selection prior (argmax), (ii) at random (seeded), and the expected
value of a random pick (the mean over the N) is reported too. Scored by held-out
NR metrics that were neither optimised nor used for selection, and by PSNR
against the clean original. Writes JSON to out/bench/select.json (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv=None) -> None:
    from benchmarks.common import add_units_option
    from iqa_map.core.map.settings import OPTIMISERS, PRESETS

    FAST = PRESETS["fast"]  # the benchmarks' defaults are the fast preset's

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--n", type=int, default=8, help="candidates (seeds) per photo")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--perturb", type=float, default=0.02)
    ap.add_argument("--prior", default="builtin", help="optimised prior")
    ap.add_argument("--select-by", default="builtin,piqe", help="priors that pick the best candidate (comma list; "
                    "each is reported, and a held-out metric is only held out for the judges other than itself)")
    ap.add_argument("--held-out", default="cnniqa,piqe")
    ap.add_argument("--steps", type=int, default=FAST["steps"], help="default: the fast preset's")
    ap.add_argument("--strength", type=float, default=FAST["strength"])
    ap.add_argument("--iterations", type=int, default=FAST["iterations"])
    ap.add_argument("--optimizer", default=FAST["optimizer"], choices=list(OPTIMISERS),
                    help="the README figures were measured with adam (lr 0.003)")
    ap.add_argument("--lr", type=float, default=None)
    add_units_option(ap, "the README's figures were measured in ve")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "select.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from benchmarks.bench_map import degrade
    from benchmarks.common import centre_crop, dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.quality import select as S
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.models import load_builtin

    files = dev_files(args.limit)
    prior = priors.load(args.prior)
    judges = {n: priors.load(n) for n in args.select_by.split(",")}
    cnniqa = DATA / "weights" / "cnniqa_live_gray.safetensors"
    held = {n: priors.load(f"cnniqa:{cnniqa}") if n == "cnniqa" else priors.load(n) for n in args.held_out.split(",")}
    den = load_builtin()
    settings = M.MapSettings(steps=args.steps, strength=args.strength, iterations=args.iterations, lr=args.lr,
                             optimizer=args.optimizer, units=args.units,
                             perturb=args.perturb)
    rng = np.random.default_rng(0)
    rows, t0 = [], time.perf_counter()
    for i, f in enumerate(files):
        clean = centre_crop(load_image(f), args.crop)
        noisy = degrade(clean, seed=i)
        cands = torch.cat([M.ascend(den, noisy, prior, settings, seed=s).image for s in range(args.n)])
        sels = {n: S.select(j, cands) for n, j in judges.items()}
        pick = int(rng.integers(args.n))
        with torch.no_grad():
            metrics = {n: p.native(cands).float().tolist() for n, p in held.items()}
        metrics["psnr"] = [M.psnr(cands[k:k + 1], clean) for k in range(args.n)]
        row = {"image": f.name, "best": {n: s.index for n, s in sels.items()}, "random": pick,
               "scores": {n: s.scores.tolist() for n, s in sels.items()}, "metrics": metrics,
               "spread": {k: float(np.std(v)) for k, v in metrics.items()}}
        rows.append(row)
        print(f"[{i + 1}/{len(files)}] {f.name} best {row['best']} random {pick} "
              + " ".join(f"{k} {np.mean(v):.2f}" for k, v in metrics.items()), file=sys.stderr, flush=True)
    lower = {n: p.lower_better for n, p in held.items()}
    lower["psnr"] = False
    summary = {"images": len(rows), "settings": vars(args), "seconds": time.perf_counter() - t0, "metrics": {}}
    for judge in judges:
        for k in lower:
            best = np.array([r["metrics"][k][r["best"][judge]] for r in rows])
            rand = np.array([r["metrics"][k][r["random"]] for r in rows])
            expect = np.array([np.mean(r["metrics"][k]) for r in rows])
            sign = -1 if lower[k] else 1
            summary["metrics"][f"{judge}|{k}"] = {
                "judge": judge, "metric": k, "held_out": k != judges[judge].name.split(":")[0],
                "lower_better": lower[k], "best_of_n": float(best.mean()), "random_pick": float(rand.mean()),
                "random_expected": float(expect.mean()),
                "best_beats_random_expected": float(np.mean(sign * (best - expect) > 0)),
                "mean_spread": float(np.mean([r["spread"][k] for r in rows]))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    print(f"| picked by | metric | best of {args.n} | random pick | random (expected) | best better than "
          "expected | spread over seeds |")
    print("|---|---|---|---|---|---|---|")
    for v in summary["metrics"].values():
        k = v["metric"] + ("" if v["held_out"] else " (the judge itself)")
        print(f"| {v['judge']} | {k} ({'lower' if v['lower_better'] else 'higher'} better) | {v['best_of_n']:.3f} | "
              f"{v['random_pick']:.3f} | {v['random_expected']:.3f} | {100 * v['best_beats_random_expected']:.0f} % | "
              f"{v['mean_spread']:.3f} |")


if __name__ == "__main__":
    main()
