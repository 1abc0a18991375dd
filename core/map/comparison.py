"""Dataset-level comparison of NR-IQA priors: each photo enhanced under each prior A, every output scored by
every prior B. The "optimised for A, scored by B" matrix averaged over photos with paired bootstrap confidence
intervals, the photos on which the judges disagree most, and the report as JSON, CSV and one offline HTML page.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io.files import write_text

INPUT = "input"  # the row of the photos as given


def summarise(rows: Sequence[dict], priors: Sequence[str], n_boot: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict:
    """``rows``: one per photo and optimised prior, ``{"photo", "optimised_for", "scores": {B: score},
    "input_scores": {B: score}, "output"}``. Returns the matrix (mean and CI per cell, rows ``input`` + the
    priors), the per-photo table and the disagreement ranking; deterministic for a seed."""
    photos = sorted({r["photo"] for r in rows})
    by = {(r["photo"], r["optimised_for"]): r for r in rows}
    missing = [(p, a) for p in photos for a in priors if (p, a) not in by]
    if missing:
        raise ValueError(f"the comparison lacks {len(missing)} result(s), e.g. {missing[0]}")
    row_names = [INPUT, *priors]
    # cube[i, a, b]: photo i, row a (input or optimised for a), scored by b
    cube = np.array([[[by[(p, priors[0])]["input_scores"][b] if a == INPUT else by[(p, a)]["scores"][b]
                       for b in priors] for a in row_names] for p in photos], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(photos), size=(n_boot, len(photos)))  # paired: one resample for every cell
    boots = cube[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
    mean = cube.mean(axis=0)
    matrix = {a: {b: {"mean": float(mean[i, j]), "ci": [float(lo[i, j]), float(hi[i, j])]}
                  for j, b in enumerate(priors)} for i, a in enumerate(row_names)}
    per_photo = [{"photo": p, "optimised_for": a, **{b: float(cube[k, i, j]) for j, b in enumerate(priors)}}
                 for k, p in enumerate(photos) for i, a in enumerate(row_names)]
    return {"rows": "optimised for", "columns": "scored by", "photos": len(photos), "priors": list(priors),
            "bootstrap": {"resamples": n_boot, "level": level, "seed": seed}, "matrix": matrix,
            "per_photo": per_photo, "disagreement": _disagreement(cube[:, 1:], photos, priors)}


def _disagreement(outs: np.ndarray, photos, priors) -> list:
    """Per photo: which output each judge prefers; photos whose judges name the most different winners first
    (ties: the widest spread of the judges' margins)."""
    out = []
    for k, p in enumerate(photos):
        winners = {b: priors[int(np.argmax(outs[k, :, j]))] for j, b in enumerate(priors)}
        spread = float(np.std([outs[k, :, j].max() - outs[k, :, j].min() for j in range(len(priors))]))
        out.append({"photo": p, "winners": winners, "distinct": len(set(winners.values())), "spread": spread})
    return sorted(out, key=lambda d: (-d["distinct"], -d["spread"], d["photo"]))


def write(report: dict, folder: Path, outputs: dict, inputs: dict, top: int = 6, stem: str = "comparison") -> dict:
    """``<stem>.json``, ``<stem>.csv`` (per photo) and ``<stem>.html`` (offline: images inline) in ``folder``;
    ``outputs[(photo, prior)]`` and ``inputs[photo]`` are image paths. Returns the paths."""
    folder = Path(folder)
    paths = {k: folder / f"{stem}.{k}" for k in ("json", "csv", "html")}
    write_text(paths["json"], json.dumps(report, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["photo", "optimised_for", *report["priors"]], lineterminator="\n")
    w.writeheader()
    w.writerows(report["per_photo"])
    write_text(paths["csv"], buf.getvalue())
    write_text(paths["html"], _html(report, outputs, inputs, top))
    return paths


def contact_sheet(report: dict, photo: str, outputs: dict, inputs: dict):
    """One photo's input and outputs side by side (a PIL image), each labelled with every judge's score."""
    from ..io.drawing import contact_sheet as sheet, same_size
    from ..io.imageio import load_image

    priors = report["priors"]
    scores = {r["optimised_for"]: r for r in report["per_photo"] if r["photo"] == photo}
    images = [load_image(inputs[photo])] + [load_image(outputs[(photo, a)]) for a in priors]
    labels = [("input" if a == INPUT else f"optimised for {a}") + "\n"
              + " ".join(f"{b}={scores[a][b]:.1f}" for b in priors) for a in [INPUT, *priors]]
    return sheet(same_size(images), labels, columns=min(len(images), 4))


def _thumb(path, side: int = 160) -> str:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _colour(v: float, lo: float, hi: float) -> str:
    t = 0.5 if hi <= lo else (v - lo) / (hi - lo)
    return f"hsl({int(10 + 110 * t)}, 60%, {int(82 - 22 * t)}%)"  # red (worse) to green (better)


def _html(report: dict, outputs: dict, inputs: dict, top: int) -> str:
    priors, m = report["priors"], report["matrix"]
    esc = html.escape
    head = "".join(f"<th>{esc(b)}</th>" for b in priors)
    body = []
    for a, cells in m.items():
        tds = []
        for j, b in enumerate(priors):
            column = [m[r][b]["mean"] for r in m]
            c = cells[b]
            tds.append(f'<td style="background:{_colour(c["mean"], min(column), max(column))}">{c["mean"]:.2f}'
                       f'<br><small>[{c["ci"][0]:.2f}, {c["ci"][1]:.2f}]</small></td>')
        body.append(f"<tr><th>{esc(a)}</th>{''.join(tds)}</tr>")
    cards = []
    for d in report["disagreement"][:top]:
        p = d["photo"]
        imgs = [f'<figure><img src="{_thumb(inputs[p])}"><figcaption>input</figcaption></figure>']
        imgs += [f'<figure><img src="{_thumb(outputs[(p, a)])}"><figcaption>optimised for {esc(a)}<br>'
                 + ", ".join(f"{esc(b)} prefers it" for b, w in d["winners"].items() if w == a)
                 + "</figcaption></figure>" for a in priors]
        cards.append(f"<section><h3>{esc(p)}: {d['distinct']} different winners</h3>{''.join(imgs)}</section>")
    b = report["bootstrap"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>IQA-MAP prior comparison</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:6px 10px;text-align:center}}figure{{display:inline-block;margin:4px}}
figcaption{{font-size:12px;max-width:170px}}small{{color:#444}}</style></head><body>
<h1>Optimised for A (rows), scored by B (columns)</h1>
<p>{report['photos']} photos; mean calibrated score (0-100, higher is better) with a {int(b['level'] * 100)} %
paired bootstrap interval ({b['resamples']} resamples, seed {b['seed']}).</p>
<table><tr><th>optimised for \\ scored by</th>{head}</tr>{''.join(body)}</table>
<h2>Where the judges disagree most</h2>{''.join(cards)}</body></html>
"""
