"""The command line: clear errors with a non-zero exit, image conversion, resumable batches."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_map.cli import main
from iqa_map.core.io.imageio import ImageError, load_image, save_image


def photo01(path, size=(40, 32), mode="RGB"):
    rng = np.random.default_rng(0)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray((rng.random((size[1], size[0])) * 255).astype(np.uint8)))
    elif mode == "I;16":
        im = Image.fromarray((rng.random((size[1], size[0])) * 65535).astype(np.uint16))
    im.save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_alpha_and_16bit_are_converted(tmp_path, mode):
    t = load_image(photo01(tmp_path / "x.png", mode=mode))
    assert t.shape == (1, 3, 32, 40) and t.dtype == torch.float32
    assert 0 <= float(t.min()) and float(t.max()) <= 1
    assert float(t.std()) > 0.05  # real content, not a blank conversion
    if mode == "I;16":
        raw = np.asarray(Image.open(tmp_path / "x.png"), dtype=np.float64) / 65535
        assert np.allclose(t[0, 0].numpy(), raw, atol=1e-6)


def test_bad_files_have_clear_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.png")
    good = photo01(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="at least 16x16"):
        load_image(photo01(tmp_path / "tiny.png", size=(8, 8)))
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_save_never_overwrites_an_input(tmp_path):
    src = photo01(tmp_path / "a.png")
    before = src.read_bytes()
    with pytest.raises(ImageError, match="refusing to overwrite"):
        save_image(torch.zeros(1, 3, 8, 8), src, protect=[src])
    assert src.read_bytes() == before


@pytest.mark.parametrize("argv,expect", [
    (["enhance", "{tmp}/missing.png", "-o", "{tmp}/out"], "no such file"),
    (["enhance", "{tmp}/notes.png", "-o", "{tmp}/out"], "not an image"),
    (["enhance", "{tmp}/cut.png", "-o", "{tmp}/out"], "truncated"),
    (["enhance", "{tmp}/tiny.png", "-o", "{tmp}/out"], "at least 16x16"),
    (["enhance", "{tmp}/good.png", "-o", "{tmp}/out", "--prior", "nique"], "unknown prior"),
    (["enhance", "{tmp}/good.png", "-o", "{tmp}/good.png/sub"], "cannot create output folder"),
    (["score", "{tmp}/good.png", "--prior", "brisk"], "unknown prior"),
    (["enhance", "{tmp}/good.png", "-o", "{tmp}/out", "--adaptive-fidelity", "--adaptive-floor", "0"],
     "--adaptive-floor"),
])
def test_cli_bad_input_exits_nonzero_with_message(tmp_path, capsys, argv, expect):
    (tmp_path / "notes.png").write_text("hello")
    good = photo01(tmp_path / "good.png", size=(64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    photo01(tmp_path / "tiny.png", size=(8, 8))
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code != 0
    assert expect in err, err
    assert "Traceback" not in err


def test_score_prints_builtin_scores(tmp_path, capsys):
    img = photo01(tmp_path / "p.png", size=(96, 96))
    assert main(["score", str(img), "--prior", "brisque", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[str(img)]) == {"brisque"}
    assert np.isfinite(rows[str(img)]["brisque"]["native"])


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "iqa_map", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "enhance" in out.stdout


def test_enhance_resumes_and_compare_writes_sheet_and_matrix(tmp_path, capsys):
    """End to end on the built-in model with tiny settings: outputs, skip-if-done, report, compare."""
    img = photo01(tmp_path / "p.png", size=(64, 48))
    fast = ["--steps", "2", "--strength", "0.3", "--iterations", "1", "--fidelity", "mse"]
    out = tmp_path / "out"
    assert main(["enhance", str(img), "-o", str(out), "--prior", "brisque", "--report", str(tmp_path / "r.json"),
                 "--monitor", "piqe", "--hack-reference", "peak", "--hack-margin", "7.5", "--units", "ve",
                 "--lr-schedule", "cosine", *fast]) == 0
    done = out / "p_enhanced.png"
    assert load_image(done).shape == (1, 3, 48, 64)
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["history"]) == 2 and report["settings"]["prior"] == "brisque"
    assert report["settings"]["monitors"] == ["piqe"] and "monitors" in report["history"][0]
    assert (report["settings"]["hack_reference"], report["settings"]["hack_margin"]) == ("peak", 7.5)
    # the recipe's momentum step, in the units asked for
    assert (report["settings"]["units"], report["settings"]["lr"]) == ("ve", 2.0)
    assert report["settings"]["lr_schedule"] == "cosine"
    stamp = done.stat().st_mtime_ns
    assert main(["enhance", str(img), "-o", str(out), "--prior", "brisque", *fast]) == 0
    assert "skipping 1 image" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == stamp

    cmp_dir = tmp_path / "cmp"
    assert main(["compare", str(img), "-o", str(cmp_dir), "--prior", "brisque", "--prior", "piqe", *fast]) == 0
    data = json.loads((cmp_dir / "p_compare.json").read_text())
    assert set(data["matrix"]) == {"input", "brisque", "piqe"}
    assert all(set(row) == {"brisque", "piqe"} for row in data["matrix"].values())
    sheet = Image.open(cmp_dir / "p_compare.png")
    assert sheet.width > 3 * 64  # input + two outputs side by side


def test_presets_set_the_starting_settings_and_explicit_options_win(tmp_path):
    from iqa_map.core.map import PRESETS, MapSettings

    img = photo01(tmp_path / "p.png", size=(64, 48))
    runs = {"fast": ["--preset", "fast", "--iterations", "1"],
            "default": ["--iterations", "1", "--steps", "3"],
            "recipe": ["--preset", "recipe", "--iterations", "1", "--steps", "3", "--strength", "0.5"]}
    for name, extra in runs.items():
        r = tmp_path / f"{name}.json"
        assert main(["enhance", str(img), "-o", str(tmp_path / name), "--prior", "brisque", "--fidelity", "mse",
                     "--report", str(r), *extra]) == 0
        rep = json.loads(r.read_text())
        got = {k: rep["settings"][k] for k in ("steps", "strength", "iterations", "optimizer")}
        base = {**{k: getattr(MapSettings, k) for k in got}, **PRESETS[name]}
        explicit = dict(zip(extra[0::2], extra[1::2]))
        for k in got:  # an option given on the command line, else the preset's value, else the default
            want = type(base[k])(explicit[f"--{k}"]) if f"--{k}" in explicit else base[k]
            assert got[k] == want, (name, k, got[k], want)
        assert rep["preset"] == name and len(rep["history"]) == 2
    assert PRESETS["fast"]["optimizer"] == "adam" and PRESETS["recipe"]["steps"] == 50


def test_enhance_with_a_stable_diffusion_folder(tmp_path):
    """--model <diffusers SD folder>: loaded offline, VAE codec, empty-prompt conditioning, full loop."""
    from tiny_models import save_tiny_sd_pipeline

    from iqa_map.core.models.loading import load_model

    pipe = save_tiny_sd_pipeline(tmp_path / "sd")
    m = load_model(str(pipe), device="cpu")
    assert m.codec.factor == 8 and m.cond.shape == (1, 8, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the dtype is passed under the installed diffusers' name
        half = load_model(str(pipe), device="cpu", dtype=torch.bfloat16)
    assert half.denoiser.dtype == half.codec.vae.dtype == torch.bfloat16
    img = photo01(tmp_path / "p.png", size=(60, 44))
    assert main(["enhance", str(img), "-o", str(tmp_path / "out"), "--model", str(pipe), "--prior", "brisque",
                 "--steps", "2", "--iterations", "1", "--fidelity", "mse", "--device", "cpu"]) == 0
    assert load_image(tmp_path / "out" / "p_enhanced.png").shape == (1, 3, 44, 60)
    # --dtype reaches the network (bf16: the CPU's half precision) and the report says which was used
    assert main(["enhance", str(img), "-o", str(tmp_path / "bf"), "--model", str(pipe), "--prior", "brisque",
                 "--steps", "2", "--iterations", "1", "--fidelity", "mse", "--device", "cpu", "--dtype", "bf16",
                 "--report", str(tmp_path / "bf.json")]) == 0
    report = json.loads((tmp_path / "bf.json").read_text())
    assert report["dtype"] == "bf16" and report["model"] == str(pipe)
    assert report["inversion_error"] < 1e-2 and np.isfinite(report["psnr_vs_input"])
    assert main(["enhance", str(img), "-o", str(tmp_path / "o2"), "--model", str(tmp_path / "nope")]) != 0
    # --prompt: the text encoder's embedding of it conditions the UNet (guidance 1); empty is the default
    described = load_model(str(pipe), device="cpu", prompt="a b")
    assert described.cond.shape == m.cond.shape and not torch.allclose(described.cond, m.cond)
    assert main(["enhance", str(img), "-o", str(tmp_path / "pr"), "--model", str(pipe), "--prior", "brisque",
                 "--steps", "2", "--iterations", "1", "--fidelity", "mse", "--device", "cpu", "--prompt", "a b",
                 "--report", str(tmp_path / "pr.json")]) == 0
    assert json.loads((tmp_path / "pr.json").read_text())["prompt"] == "a b"
    with pytest.raises(ValueError, match="not text-conditioned"):
        load_model("builtin", device="cpu", prompt="a photo")


def test_out_of_memory_says_what_to_change(tmp_path, capsys, monkeypatch):
    """A GPU out-of-memory error is a one-line error with the fix (fp16), not a traceback, exit != 0."""
    from iqa_map.core.models import loading

    def too_big(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total)")

    monkeypatch.setattr(loading, "load_model", too_big)
    img = photo01(tmp_path / "p.png", size=(64, 64))
    assert main(["enhance", str(img), "-o", str(tmp_path / "out"), "--prior", "brisque"]) != 0
    err = capsys.readouterr().err
    assert "out of memory" in err and "--dtype fp16" in err and "--tile" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "p_enhanced.png").exists()


def test_single_file_checkpoints_are_checked_and_say_what_they_need(tmp_path, capsys, monkeypatch):
    """Wrong files are refused from their header; a real-looking one without configs names --model-config."""
    import huggingface_hub.constants as hfc
    from safetensors.torch import save_file

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))  # whatever the machine has cached
    img = photo01(tmp_path / "p.png", size=(64, 64))
    sd1 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
           "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
           "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(77, 8)}
    files = {"lora.safetensors": {"lora_unet_down.alpha": torch.zeros(1)},
             "sdxl.safetensors": {**sd1, "conditioner.embedders.1.model.ln_final.weight": torch.zeros(8)},
             "sd1.safetensors": sd1}
    for name, tensors in files.items():
        save_file(tensors, str(tmp_path / name))
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    cases = [(["--model", str(tmp_path / "lora.safetensors")], "not a single-file Stable Diffusion checkpoint"),
             (["--model", str(tmp_path / "junk.safetensors")], "not a readable safetensors file"),
             (["--model", str(tmp_path / "sdxl.safetensors")], "SDXL"),
             (["--model", str(tmp_path / "sd1.safetensors")], "--model-config"),
             (["--model", str(tmp_path / "sd1.safetensors"), "--model-config", str(tmp_path)], "no model_index.json")]
    xl = tmp_path / "xl"
    xl.mkdir()
    (xl / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    cases.append((["--model", str(xl)], "SDXL pipeline"))
    for extra, expect in cases:
        code = main(["enhance", str(img), "-o", str(tmp_path / "out"), "--device", "cpu", *extra])
        err = capsys.readouterr().err
        assert code != 0 and expect in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "out" / "p_enhanced.png").exists()


def _save(path, t):
    Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def test_cli_rank_and_qmap(tmp_path, capsys, candidates):
    files = [_save(tmp_path / f"cand{i}.png", candidates[i:i + 1]) for i in range(4)]
    assert main(["rank", *map(str, files), "--prior", "piqe", "-o", str(tmp_path / "best.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.split("wrote")[0])
    assert [r["rank"] for r in out["ranking"]] == [1, 2, 3, 4] and (tmp_path / "best.png").is_file()
    scores = [r["score"] for r in out["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert set(out["ranking"][0]) == {"rank", "file", "score", "probability"}
    assert sorted(r["file"] for r in out["ranking"]) == sorted(map(str, files)) and out["selected"] in map(str, files)
    small = _save(tmp_path / "small.png", candidates[:1, :, :64, :64])
    assert main(["rank", str(files[0]), str(small), "--prior", "piqe"]) == 2
    assert "same size" in capsys.readouterr().err
    assert main(["qmap", str(files[2]), "-o", str(tmp_path / "maps"), "--window", "32", "--stride", "16"]) == 0
    assert {p.name for p in (tmp_path / "maps").iterdir()} == {"cand2_qmap_cnniqa-builtin.png", "cand2_qmap_cnniqa-builtin_heatmap.png"}
