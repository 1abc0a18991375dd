"""Every row of the README's "Bad input" table: what a user sees, what is left on disk, the exit code.

Each test is named after its row. The command-line tests call ``main()`` in-process with the fastest
enhance settings (2 steps at strength 0.3, 1 iteration, MSE fidelity, the built-in model); faults that
cannot be made for real on a test machine (a full disk, out of memory, Ctrl-C) are raised at the
point where they happen for real: inside the PNG write, inside the ascent.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_map.nodes import NODES as N
from iqa_map.cli import main

FAST = ["--steps", "2", "--strength", "0.3", "--iterations", "1", "--fidelity", "mse", "--prior", "brisque",
        "--device", "cpu"]


def _photo(path, size=(48, 40), seed=0, **save):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path, **save)
    return path


def _run(capsys, *argv):
    """Exit code, stdout, and stderr's lines that are not progress bars."""
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    err = [ln for ln in cap.err.splitlines() if ln.strip() and not ln.lstrip().startswith(("images:", "%|"))
           and "it/s]" not in ln and "s/it]" not in ln and "img/s]" not in ln and "s/img]" not in ln]
    return code, cap.out, err


def _one_error(err: list[str]) -> str:
    """The run printed exactly one error line, and no traceback."""
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in ln or ln.startswith("  File ") for ln in err), err
    return errors[0]


def _digest(paths) -> dict:
    return {str(p): hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest() for p in paths}


def _leftovers(*folders) -> list[str]:
    return [str(p) for d in folders for p in pathlib.Path(d).rglob("*.part")]


def _decodes_fully(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()  # the PNG's chunks and CRCs
    with Image.open(path) as im:
        im.load()  # every pixel decodes
        return im.size


# -- input files --------------------------------------------------------------------------------------

def test_missing_file(tmp_path, capsys):
    code, _, err = _run(capsys, "enhance", tmp_path / "missing.png", "-o", tmp_path / "out", *FAST)
    assert code == 2
    assert err == [f"error: {tmp_path / 'missing.png'}: no such file", "error: none of the inputs can be used"]
    assert not list((tmp_path / "out").glob("*.png"))
    # In a batch the others are still done; the exit code says one failed.
    good = _photo(tmp_path / "good.png")
    code, _, err = _run(capsys, "enhance", good, tmp_path / "missing.png", "-o", tmp_path / "out", *FAST)
    assert code == 1 and _one_error(err).endswith("missing.png: no such file"), err
    assert (tmp_path / "out" / "good_enhanced.png").is_file()


def test_not_an_image(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("these are my notes, not a photo")
    code, _, err = _run(capsys, "enhance", tmp_path / "notes.png", "-o", tmp_path / "out", *FAST)
    assert code == 2
    assert any("notes.png: not an image file PIL can read (use PNG, JPEG, TIFF, BMP or WebP)" in ln for ln in err)
    assert not any("Traceback" in ln for ln in err)


@pytest.fixture
def world_readable_dir():
    """A folder other users can reach (pytest's tmp_path is private to its owner)."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="iqa_map_perm_"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_unreadable_file_permission_denied(capsys, world_readable_dir):
    """A file without read permission. Root reads every file, so as root the run is made in a forked child
    that has dropped to the unprivileged user 'nobody' (uid 65534); skipped where that is not possible."""
    base = world_readable_dir
    locked = _photo(base / "locked.png")
    os.chmod(locked, 0)
    out = base / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    argv = ["enhance", str(locked), "-o", str(out), *FAST]
    if os.geteuid() != 0:
        code = main(argv)
        err = capsys.readouterr().err
    else:
        if not hasattr(os, "fork"):
            pytest.skip("running as root without os.fork: cannot drop to an unprivileged user")
        (base / "notes.png").write_text("x")
        main(["enhance", str(base / "notes.png"), "-o", str(out), *FAST])  # imports everything the run needs
        capsys.readouterr()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nobody, then the same command
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                sys.stderr = os.fdopen(w, "w")
                rc = main(argv)
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001 - the child must never return into pytest
                rc = 99
            os._exit(rc)
        os.close(w)
        with os.fdopen(r) as f:
            err = f.read()
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code == 99:
            pytest.skip("could not drop to the unprivileged user in a child process")
    assert code == 2, err
    assert "locked.png" in err and "permission denied" in err.lower(), err
    assert "damaged" not in err and "re-export" not in err, err  # the file is fine: its permissions are not


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file(tmp_path, capsys, fmt):
    """A real PNG / JPEG cut in half (an interrupted copy or download)."""
    whole = _photo(tmp_path / f"whole.{fmt}", size=(96, 80), **({"quality": 90} if fmt == "jpeg" else {}))
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = _run(capsys, "enhance", cut, "-o", tmp_path / "out", *FAST)
    assert code == 2
    assert any(f"cut.{fmt}: the image file is damaged or truncated" in ln and "re-export it" in ln for ln in err), err
    assert not list((tmp_path / "out").glob("*.png"))


def test_too_small(tmp_path, capsys):
    tiny = _photo(tmp_path / "tiny.png", size=(15, 40))
    code, _, err = _run(capsys, "enhance", tiny, "-o", tmp_path / "out", *FAST)
    assert code == 2
    assert any("tiny.png: image is 15x40; at least 16x16 pixels are needed" in ln for ln in err), err


# -- options ------------------------------------------------------------------------------------------

def test_unknown_prior(tmp_path, capsys):
    good = _photo(tmp_path / "good.png")
    code, _, err = _run(capsys, "enhance", good, "-o", tmp_path / "out", *FAST, "--prior", "nosuch")
    line = _one_error(err)
    assert code == 2 and "unknown prior 'nosuch'" in line and "Available: " in line and "builtin" in line
    code, _, err = _run(capsys, "enhance", good, "-o", tmp_path / "out", *FAST, "--prior", "nique")
    line = _one_error(err)
    assert code == 2 and "Did you mean " in line and "niqe" in line.split("Did you mean ")[1].split("?")[0], line
    assert not (tmp_path / "out" / "good_enhanced.png").exists()


def test_missing_pyiqa_weights_offline(offline, capsys):
    """A pyiqa deep metric (MUSIQ) with an empty --weights-dir and no network: fast, says where to put the file."""
    pytest.importorskip("pyiqa")
    good = _photo(offline / "good.png")
    folder = offline / "weights"
    t0 = time.monotonic()
    code, _, err = _run(capsys, "enhance", good, "-o", offline / "out", *FAST, "--prior", "musiq",
                        "--weights-dir", folder)
    assert time.monotonic() - t0 < 15, "a missing weights file must fail fast, never wait on the network"
    line = _one_error(err)
    assert code == 2
    assert "weights file 'musiq_koniq_ckpt" in line and "could not be downloaded" in line, line
    assert "Download it from https://" in line and f"put it into {folder}" in line, line
    assert not folder.exists(), "a failed load must not create files"


@pytest.mark.parametrize("kind", ["text-file", "video-folder", "incomplete-flux-folder"])
def test_unsupported_model(tmp_path, capsys, kind):
    good = _photo(tmp_path / "good.png")
    if kind == "text-file":
        model = tmp_path / "model.txt"
        model.write_text("not a model")
        expect = ["is not a model file (a .txt file)", "--model takes 'builtin'"]
    elif kind == "video-folder":
        model = tmp_path / "wan"
        model.mkdir()
        (model / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
        expect = ["is a WanPipeline pipeline", "Stable Diffusion 1.x/2.x, Flux.1 and SD3", "FluxPipeline",
                  "use the ComfyUI nodes"]
    else:  # a supported class whose components are missing
        model = tmp_path / "flux"
        model.mkdir()
        (model / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
        expect = ["could not load the FluxPipeline", "offline"]
    code, _, err = _run(capsys, "enhance", good, "-o", tmp_path / "out", *FAST, "--model", model)
    line = _one_error(err)
    assert code == 2 and all(e in line for e in expect), line
    assert not (tmp_path / "out" / "good_enhanced.png").exists()


# -- faults during a batch ----------------------------------------------------------------------------

def _batch(tmp_path, n=3):
    src = tmp_path / "in"
    src.mkdir()
    return src, [_photo(src / f"{c}.png", seed=i) for i, c in enumerate("abc"[:n])]


def _fault_on_second_write(monkeypatch, exc):
    """The 2nd output PNG's write puts half its bytes on disk, then raises ``exc`` (as a full disk does)."""
    real, calls = pathlib.Path.write_bytes, []

    def write_bytes(self, data):
        if self.name.endswith(".png.part"):
            calls.append(self.name)
            if len(calls) == 2:
                with open(self, "wb") as f:
                    f.write(data[: len(data) // 2])
                raise exc
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    return calls


def test_disk_full_mid_batch(tmp_path, capsys, monkeypatch):
    src, inputs = _batch(tmp_path)
    before = _digest(inputs)
    out, report = tmp_path / "out", tmp_path / "reports" / "r.json"
    calls = _fault_on_second_write(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code, _, err = _run(capsys, "enhance", src, "-o", out, "--report", report, *FAST)
    assert calls == ["a_enhanced.png.part", "b_enhanced.png.part"], "the fault was not injected"
    line = _one_error(err)
    assert code == 2
    assert line.startswith(f"error: the disk is full: no space left on the disk holding {out}"), line
    assert "free some space" in line and "run the same command again" in line, line
    assert not _leftovers(out, report.parent, src), "a half-written file was left"
    assert sorted(p.name for p in out.iterdir()) == ["a_enhanced.png"]
    assert _decodes_fully(out / "a_enhanced.png") == (48, 40)
    assert _digest(inputs) == before, "an input was changed"
    # the report of what finished
    assert any("1 of 3 image(s) finished" in ln for ln in err) and any(str(report) in ln for ln in err), err
    partial = json.loads(report.read_text())
    assert partial["input"] == str(inputs[0]) and partial["output"] == str(out / "a_enhanced.png")
    # space freed: the same command goes on where it stopped
    monkeypatch.undo()
    stamp = (out / "a_enhanced.png").stat().st_mtime_ns
    code, stdout, err = _run(capsys, "enhance", src, "-o", out, "--report", report, *FAST)
    assert code == 0, err
    assert "skipping 1 image(s) already enhanced" in stdout
    assert (out / "a_enhanced.png").stat().st_mtime_ns == stamp
    assert all(_decodes_fully(out / f"{c}_enhanced.png") == (48, 40) for c in "abc")
    full = json.loads(report.read_text())
    assert list(full) == [str(p) for p in inputs], "the resumed run's report covers every image"
    assert _digest(inputs) == before


@pytest.mark.parametrize("error", ["torch.OutOfMemoryError", "MemoryError"])
def test_out_of_memory_in_ascent(tmp_path, capsys, monkeypatch, error):
    from iqa_map.core.map import tiling

    real = tiling.ascend_tiled

    def ascend_tiled(*args, callback=None, **kwargs):
        def cb(info):
            if error == "MemoryError":
                raise MemoryError()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                         "capacity of 7.63 GiB of which 1.02 GiB is free.")
        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(tiling, "ascend_tiled", ascend_tiled)
    good = _photo(tmp_path / "good.png")
    code, _, err = _run(capsys, "enhance", good, "-o", tmp_path / "out", *FAST)
    line = _one_error(err)
    assert code == 2
    assert line.startswith("error: out of memory (") and "smaller --tile" in line, line
    assert "--dtype fp16" in line and "--device cpu" in line, line
    if error != "MemoryError":
        assert "CUDA out of memory. Tried to allocate 2.00 GiB" in line
    assert not (tmp_path / "out" / "good_enhanced.png").exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize("when", ["ascent", "write"])
def test_ctrl_c_mid_batch(tmp_path, capsys, monkeypatch, when):
    """Ctrl-C during the 2nd of 3 images: inside its ascent, or while its PNG is being written."""
    from iqa_map.core.map import tiling

    src, inputs = _batch(tmp_path)
    before = _digest(inputs)
    out, report = tmp_path / "out", tmp_path / "r.json"
    if when == "ascent":
        real, calls = tiling.ascend_tiled, []

        def ascend_tiled(*args, callback=None, **kwargs):
            calls.append(1)

            def cb(info):
                callback(info)
                if len(calls) == 2:
                    raise KeyboardInterrupt
            return real(*args, callback=cb, **kwargs)

        monkeypatch.setattr(tiling, "ascend_tiled", ascend_tiled)
    else:
        calls = _fault_on_second_write(monkeypatch, KeyboardInterrupt())
    code, _, err = _run(capsys, "enhance", src, "-o", out, "--report", report, *FAST)
    assert len(calls) == 2, "the interrupt was not injected"
    assert code == 130
    assert any(ln.startswith("interrupted (Ctrl-C); finished outputs are kept") for ln in err), err
    assert not any("Traceback" in ln for ln in err), err
    assert not _leftovers(out, src, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["a_enhanced.png"]
    assert _decodes_fully(out / "a_enhanced.png") == (48, 40)
    assert json.loads(report.read_text())["input"] == str(inputs[0])  # the report of what finished
    monkeypatch.undo()
    stamp = (out / "a_enhanced.png").stat().st_mtime_ns
    code, stdout, err = _run(capsys, "enhance", src, "-o", out, "--report", report, *FAST)
    assert code == 0 and "skipping 1 image(s) already enhanced" in stdout, err
    assert (out / "a_enhanced.png").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.iterdir()) == [f"{c}_enhanced.png" for c in "abc"]
    assert list(json.loads(report.read_text())) == [str(p) for p in inputs]
    assert _digest(inputs) == before


# -- the nodes (as plain Python; tests/test_comfyui.py runs one inside ComfyUI) -------------------------

def test_node_image_too_small():
    """An IMAGE below 16 px into Latent MAP Ascent: our message before the slow part, not one from inside torch."""
    with torch.inference_mode():
        model, vae = N["IQAMAP_LoadBuiltinPriorModel"].execute("cpu")
        prior, = N["IQAMAP_LoadIQAPrior"].execute("builtin", "default", "cpu")
        inv, = N["IQAMAP_DDIMInvert"].execute(model, {"samples": vae.encode(torch.rand(1, 8, 12, 3))}, "edict",
                                              steps=2, strength=0.3)
        with pytest.raises(ValueError) as e:
            N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=1)
    assert str(e.value) == ("the image is 12x8 pixels; Latent MAP Ascent needs at least 16x16: scale it up first "
                            "(e.g. Upscale Image) or use a larger photo")
    tb = e.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert "/nodes/map_nodes.py" in tb.tb_frame.f_code.co_filename.replace(os.sep, "/")


def test_node_pyiqa_weights_missing(offline, monkeypatch):
    """Load IQA Prior with a pyiqa model whose weights are not in models/iqa, offline: where to put the file."""
    pytest.importorskip("pyiqa")
    from iqa_map.nodes import comfy

    models_iqa = offline / "models" / "iqa"
    monkeypatch.setattr(comfy, "iqa_folder", lambda: str(models_iqa))
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as e:
        N["IQAMAP_LoadIQAPrior"].execute("musiq", "default", "cpu")
    assert time.monotonic() - t0 < 15
    msg = str(e.value)
    assert "weights file 'musiq_koniq_ckpt" in msg and f"put it into {models_iqa}" in msg, msg
    assert "Download it from https://" in msg


def test_node_weights_file_not_in_models_iqa():
    with pytest.raises(FileNotFoundError) as e:
        N["IQAMAP_LoadIQAPrior"].execute("builtin", "default", "cpu", weights_file="mine.safetensors")
    msg = str(e.value)
    assert "'mine.safetensors' is not in models/iqa" in msg and "refresh ComfyUI" in msg, msg
    assert "pyiqa" not in msg  # outside ComfyUI this once said pyiqa was missing


def test_readme_bad_input_table_names_these_tests():
    """Every row of the README's Bad input table names tests that exist, and every test here has its row."""
    import re

    from helpers import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Bad input\n", 1)[1].split("\n#", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| Input")]
    assert len(rows) >= 14
    here = {n for n in globals() if n.startswith("test_") and n != "test_readme_bad_input_table_names_these_tests"}
    comfy = set(re.findall(r"^def (test_\w+)", (REPO / "tests" / "test_comfyui.py").read_text(), re.MULTILINE))
    named = set()
    for row in rows:
        tests = re.findall(r"`(test_\w+)", row.rsplit("|", 2)[-2])
        assert tests, f"a row without a test: {row}"
        named |= set(tests)
    assert named <= here | comfy, named - here - comfy
    assert here <= named, f"tests without a row: {here - named}"
