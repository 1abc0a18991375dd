"""Benchmark bookkeeping: shards of one run join, a long run checkpoints and resumes, anything else is refused."""
import json

import pytest
import torch

from benchmarks.common import checkpoint, load_shards, resume_rows


def _shard(path, images, start, **settings):
    rows = [{"index": start + i, "image": name} for i, name in enumerate(images)]
    summary = {"settings": {"start": start, "limit": len(images), "out": str(path), "crop": 128, **settings},
               "seconds": 10.0 * len(images)}
    path.write_text(json.dumps({"summary": summary, "rows": rows}))
    return path


def test_shards_of_one_run_join_in_index_order(tmp_path):
    b = _shard(tmp_path / "b.json", ["c.png"], 2)
    a = _shard(tmp_path / "a.json", ["a.png", "b.png"], 0)
    rows, settings, seconds = load_shards([b, a], "bench")
    assert [r["image"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert seconds == 30.0
    assert settings["merged"] == [str(b), str(a)]


def test_shards_with_different_settings_are_refused(tmp_path):
    a = _shard(tmp_path / "a.json", ["a.png"], 0)
    b = _shard(tmp_path / "b.json", ["b.png"], 1, iterations=20)
    with pytest.raises(SystemExit, match="different settings"):
        load_shards([a, b], "bench")
    assert load_shards([a, b], "bench", ignore=("iterations",))[0]


def test_an_image_in_two_shards_is_refused(tmp_path):
    a = _shard(tmp_path / "a.json", ["a.png", "b.png"], 0)
    b = _shard(tmp_path / "b.json", ["b.png"], 1)
    with pytest.raises(SystemExit, match="more than one file"):
        load_shards([a, b], "bench")


def test_bench_map_summary_counts_wins_per_judge_and_per_iteration():
    from benchmarks.bench_map import summarise

    def row(i, pix, lat, curve_pix, curve_lat):
        scores = lambda judge, psnr: {"prior": 0.0, "piqe": judge, "psnr": psnr, "ssim": 0.5}  # noqa: E731
        return {"index": i, "image": f"{i}.png", "prior": "p", "lower_better": {"piqe": True},
                "input": scores(50.0, 25.0), "pixel": scores(*pix), "builtin": scores(*lat),
                "curves": {"pixel": [{"piqe": v} for v in curve_pix], "builtin": [{"piqe": v} for v in curve_lat]}}

    # PIQE is lower-better natively; the curves hold comparable scores (higher better).
    rows = [row(0, (30.0, 24.0), (20.0, 24.5), [50, 80, 40], [50, 60, 70]),
            row(1, (10.0, 24.0), (20.0, 23.0), [50, 90, 30], [50, 95, 20])]
    s = summarise(rows, {}, 1.0)
    assert s["wins"]["builtin beats pixel"] == {"piqe": 0.5, "psnr": 0.5}
    assert s["wins"]["builtin improves on input"] == {"piqe": 1.0, "psnr": 0.0}
    assert [c["piqe"] for c in s["curve"]["builtin beats pixel"]] == [0.0, 0.5, 0.5]
    assert s["mean_curve"]["pixel"]["piqe"] == [50, 85, 35]
    # Oracle selection: each method's best iterate per judge (80 vs 60, 90 vs 95).
    assert s["oracle"]["builtin beats pixel"] == {"piqe": 0.5}
    assert s["mean_oracle"]["pixel"]["piqe"] == 85.0


def test_a_checkpointed_run_resumes_with_its_settings_only(tmp_path, capsys):
    out = tmp_path / "run.json"
    settings = {"start": 0, "limit": 3, "out": str(out), "crop": 128, "resume": False}
    assert resume_rows(str(out), settings, "bench") == ([], 0.0)  # nothing yet: a fresh run
    checkpoint(str(out), [{"index": 0, "image": "a.png"}], settings, 12.5)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    # A resumed run may differ in the shard options (and in --resume itself), not in what it measures.
    rows, seconds = resume_rows(str(out), {**settings, "limit": 68, "resume": True}, "bench")
    assert rows == [{"index": 0, "image": "a.png"}] and seconds == 12.5
    with pytest.raises(SystemExit, match="different settings"):
        resume_rows(str(out), {**settings, "crop": 96}, "bench")
    # An interrupted (partial) file still merges, with a warning.
    assert [r["image"] for r in load_shards([out], "bench")[0]] == ["a.png"]
    assert "partial" in capsys.readouterr().err


def test_bench_recipe_candidates_parse_with_optional_lambda_and_schedule():
    from benchmarks.bench_recipe import label, parse_candidate

    plain = parse_candidate("20/1/20/momentum/-")
    assert plain == {"steps": 20, "strength": 1.0, "iterations": 20, "optimizer": "momentum", "lr": None,
                     "fidelity_weight": None}  # no schedule key: same settings as files written before the option
    full = parse_candidate("10/1/30/momentum/0.5/10/cosine")
    assert (full["lr"], full["fidelity_weight"], full["lr_schedule"]) == (0.5, 10.0, "cosine")
    assert parse_candidate("10/1/30/adam/0.01/cosine")["fidelity_weight"] is None
    assert "cosine" in label(full) and "lambda 10" in label(full)
    with pytest.raises(ValueError, match="steps/strength"):
        parse_candidate("10/1/30")


def test_bench_sd_measures_a_saved_random_pipeline_through_the_product_loader(tmp_path, capsys):
    """The GPU benchmark's own machinery, at toy width on the CPU: a pipeline saved and loaded back
    with load_model, the defaults' loop, per-part timings, memory at two step counts."""
    from benchmarks import bench_sd

    out = tmp_path / "sd.json"
    bench_sd.main(["--scale", "tiny", "--size", "32", "--dtypes", "fp32", "--steps", "2", "--iterations", "1",
                   "--memory-steps", "1,3", "--device", "cpu", "--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    # inversion, then iterate 0 with its gradient, then the final iterate evaluated only
    assert row["denoiser_evals"] == 2 * 2 + 4 * 2 + 2 * 2
    assert row["inversion_error"] < 1e-6
    assert set(row["memory_by_steps"]) == {"1", "3"}
    parts = row["components"]
    assert parts["network_with_vjp"] > 0 and parts["iteration_estimate"] > 4 * parts["network"]
    assert "| fp32 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown dtype"):
        bench_sd.main(["--dtypes", "fp8", "--device", "cpu"])


def test_bench_map_runs_any_model_as_a_latent_method(tmp_path, capsys):
    """--methods pixel,model --model <SD folder>: the comparison the quality target needs, ready for real weights."""
    from helpers import need_shared
    from tiny_models import save_tiny_sd_pipeline

    from benchmarks import bench_map

    need_shared()
    pipe = save_tiny_sd_pipeline(tmp_path / "sd")
    out = tmp_path / "map.json"
    bench_map.main(["--methods", "pixel,model", "--model", str(pipe), "--limit", "1", "--crop", "40",
                    "--steps", "2", "--iterations", "1", "--held-out", "piqe", "--out", str(out)])
    summary = json.loads(out.read_text())["summary"]
    assert set(summary["mean"]) == {"input", "pixel", "model"} and "model beats pixel" in summary["wins"]
    assert summary["settings"]["model"] == str(pipe)
    with pytest.raises(SystemExit):
        bench_map.main(["--methods", "pixel,model", "--out", str(out)])  # no --model
    with pytest.raises(SystemExit):
        bench_map.main(["--methods", "pixel,sd15", "--out", str(out)])
    assert "unknown method(s) sd15" in capsys.readouterr().err


def test_seam_ratio_finds_a_step_only_where_tiles_begin():
    from benchmarks.bench_tiles import seam_ratio
    from iqa_map.core.map.tiling import Grid

    grid = Grid(64, 64, 32, 8, align=8)
    inp = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    smooth = inp + 0.02 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert 0.8 < seam_ratio(smooth, inp, grid) < 1.2
    stepped = smooth.clone()
    stepped[..., grid.cols[1]:] += 0.05  # the enhancement jumps where the second column of tiles begins
    assert seam_ratio(stepped, inp, grid) > 2


def test_tiles_figure_shows_the_photo_whose_pasted_tiles_step_most(tmp_path, capsys):
    from benchmarks import bench_tiles
    from iqa_map.core.map.tiling import Grid

    saved, grid = tmp_path / "saved", Grid(64, 64, 32, 8, align=8)
    with pytest.raises(SystemExit, match="quality --save"):
        bench_tiles.main(["figure", "--save", str(saved), "--tile", "32", "--overlap", "8"])
    saved.mkdir()
    for name, step in (("calm", 0.0), ("seamy", 0.1)):
        inp = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        out = inp + 0.01 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        pasted = out.clone()
        pasted[..., grid.rows[1]:, :] += step
        torch.save({"clean": inp, "input": inp, "whole": out, "tiled": out, "pasted": pasted,
                    "boxes": grid.boxes()}, saved / f"{name}.pt")
    fig, res = tmp_path / "fig.png", tmp_path / "fig.json"
    bench_tiles.main(["figure", "--save", str(saved), "--tile", "32", "--overlap", "8", "--figure", str(fig),
                      "--out", str(res)])
    assert json.loads(res.read_text())["result"]["image"] == "seamy" and fig.stat().st_size > 0
    with pytest.raises(SystemExit, match="other tiles"):
        bench_tiles.main(["figure", "--save", str(saved), "--tile", "48", "--overlap", "8", "--figure", str(fig),
                          "--out", str(res)])


def test_bench_sr_psnr_y_and_table():
    """PSNR-Y on BT.601 luma (16-235) with the border cropped, and the README table's '% better' column."""
    import math

    import torch

    from benchmarks.bench_sr import psnr_ssim_y, table

    hr = torch.rand(1, 3, 40, 40)
    p, s = psnr_ssim_y(hr, hr, 4)
    assert p == float("inf") and s == pytest.approx(1.0)
    off = hr.clone()
    off[..., 4:-4, 4:-4] += 0.1  # only inside the border counts: Y moves by 0.1 * (65.481+128.553+24.966)/255
    p, _ = psnr_ssim_y(off, hr, 4)
    assert p == pytest.approx(-20 * math.log10(0.1 * 219.0 / 255), abs=1e-3)
    def per(vals, texture):
        return [{"image": f"{i}.png", "psnr_y": 30.0, "ssim_y": 0.9, "niqe": v, "grid": 0.05, "texture": t,
                 "texture_hr": 3.0} for i, (v, t) in enumerate(zip(vals, texture))]
    rows = {"m/base": {"per_image": per([5, 5, 5, 5], [2.0] * 4), "train_seconds": 0, "lora_bytes": None,
                       "base_bytes": 100, "record": {}},
            "m/tuned": {"per_image": per([4, 6, 4, 4], [2.5, 2.5, 4.5, 1.0]), "train_seconds": 12, "lora_bytes": 8,
                        "base_bytes": 100, "record": {"guard": {"best_step": 25}}}}
    text = table({"rows": rows}, "niqe")
    tuned = next(line for line in text.splitlines() if line.startswith("| m/tuned"))
    assert "4.500 / 75 %" in tuned and "8.0 %" in tuned  # NIQE is lower-better: 3 of 4 photos improved
    # Flat-region texture: 2 of 4 photos no further from the HR photo's (3.0) than the base's (2.0); the kept step.
    assert "2.62 (3.00) / 50 %" in tuned and "| 25 |" in tuned and "0.050" in tuned


def test_bench_fewstep_reads_shorter_runs_off_the_longer_one(tmp_path, capsys):
    """bench_fewstep: one run per learning rate; its 1-iteration row is the best iterate among 0..1 of the 2-iteration
    run (as the loop keeps it), and every setting's output is written as a PNG to look at."""
    from helpers import need_shared

    from benchmarks import bench_fewstep

    need_shared()
    out = tmp_path / "fewstep.json"
    bench_fewstep.main(["--limit", "1", "--crop", "48", "--lrs", "0.2", "--iterations", "2", "--prefixes", "1",
                        "--out", str(out), "--images", str(tmp_path / "img")])
    row = json.loads(out.read_text())["rows"][0]
    assert set(row["runs"]) == {"0.2@1", "0.2@2"}
    assert row["runs"]["0.2@1"]["best_iteration"] <= 1 and row["runs"]["0.2@2"]["evals"] > 0
    assert row["runs"]["0.2@1"]["objective"] <= row["runs"]["0.2@2"]["objective"]
    stem = row["image"].rsplit(".", 1)[0]
    assert {p.name for p in (tmp_path / "img").iterdir()} == {
        f"{stem}_input.png", f"{stem}_clean.png", f"{stem}_lr0.2_it1.png", f"{stem}_lr0.2_it2.png"}
    assert "| 0.2 | 2 |" in capsys.readouterr().out
    trace = [{"objective": 1.0, "i": 0}, {"objective": 3.0, "i": 1}, {"objective": 3.0, "i": 2}]
    assert [bench_fewstep.best_prefix(trace, k)["i"] for k in (0, 1, 2)] == [0, 1, 1]  # the first best, as the loop
