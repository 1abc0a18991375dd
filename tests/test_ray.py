"""Batch runs on a local Ray cluster (started by the tests on 127.0.0.1, bounded in time).

Skipped, saying why, when Ray is not installed (``pip install 'iqa-map[ray]'``; ``make test`` installs it).
"""
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_map.cli import main
from iqa_map.core.map import batch

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'iqa-map[ray]'")
pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
FAST = ["--prior", "niqe", "--prior", "brisque", "--steps", "2", "--strength", "0.3", "--iterations", "2",
        "--optimizer", "adam", "--lr", "0.01", "--fidelity", "mse", "--device", "cpu"]


@pytest.fixture(scope="module")
def cluster():
    # Workers import the test helpers (ray_crash_worker) the way the driver does.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    batch.connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


def _photos(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.random((1, 1, 3)) * 0.6 + 0.2
        Image.fromarray(((base + 0.2 * rng.random((40, 48, 3))).clip(0, 1) * 255).astype(np.uint8)).save(
            folder / f"p{i}.png")
    return folder


def _outputs(out: Path) -> list:
    return sorted(p.name for p in out.glob("*.png"))


def test_compare_on_ray_equals_the_local_run_and_resumes(cluster, tmp_path, capsys):
    photos = _photos(tmp_path / "in")
    t0 = time.time()
    assert main(["compare", str(photos), "-o", str(tmp_path / "ray"), *FAST, "--ray", "local", "--workers", "2"]) == 0
    assert time.time() - t0 < 600
    assert main(["compare", str(photos), "-o", str(tmp_path / "here"), *FAST]) == 0
    expected = sorted(f"p{i}_{a}.png" for i in range(6) for a in ("niqe", "brisque"))
    assert _outputs(tmp_path / "ray") == expected == _outputs(tmp_path / "here")  # each exactly once
    assert len(list((tmp_path / "ray" / "rows").glob("*.json"))) == 12
    assert not list(tmp_path.rglob("*.part"))
    on_ray, here = (json.loads((tmp_path / d / "comparison.json").read_text()) for d in ("ray", "here"))
    assert on_ray == here and on_ray["photos"] == 6
    assert on_ray["matrix"]["niqe"]["niqe"]["mean"] != on_ray["matrix"]["input"]["niqe"]["mean"]  # it did enhance
    # A second run finds everything done and touches nothing.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.png")}
    capsys.readouterr()
    assert main(["compare", str(photos), "-o", str(tmp_path / "ray"), *FAST, "--ray", "local"]) == 0
    assert "12 of 12 (photo, prior) results already" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.png")}


def test_a_worker_lost_mid_task_is_restarted_and_the_task_retried(cluster, tmp_path):
    from ray_crash_worker import CrashOnceWorker

    tasks = [str(i) for i in range(6)]
    results = dict(batch.run(CrashOnceWorker, {"marker_dir": str(tmp_path), "crash_on": "3"}, tasks,
                             ray_address="local", workers=2))
    assert sorted(results) == tasks and all(results[t] == int(t) ** 2 for t in tasks)
    assert (tmp_path / "crashed-3").exists()  # the worker process did die on task 3


def test_enhance_on_ray_writes_every_photo_once(cluster, tmp_path):
    photos = _photos(tmp_path / "in", 4)
    fast = ["--prior", "brisque", *FAST[4:]]
    assert main(["enhance", str(photos), "-o", str(tmp_path / "out"), *fast, "--ray", "local", "--workers", "2",
                 "--report", str(tmp_path / "r.json")]) == 0
    assert _outputs(tmp_path / "out") == [f"p{i}_enhanced.png" for i in range(4)]
    assert len(json.loads((tmp_path / "r.json").read_text())) == 4


def test_without_ray_the_option_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RuntimeError, match="pip install 'iqa-map\\[ray\\]'"):
        batch.import_ray()


def test_the_html_report_renders_in_chromium(cluster, tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no chromium / chromedriver: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    photos = _photos(tmp_path / "in", 3)
    assert main(["compare", str(photos), "-o", str(tmp_path / "c"), *FAST]) == 0
    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get((tmp_path / "c" / "comparison.html").as_uri())
        cells = d.execute_script("return document.querySelectorAll('td').length")
        images = d.execute_script("return Array.from(document.images).filter(i => i.naturalWidth > 0).length")
        assert cells == 3 * 2 and images == 3 * 3  # the matrix; input + 2 outputs for each of the 3 photos
        out = Path(os.environ.get("IQA_MAP_SCREENSHOTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(out / "comparison_report.png"))
    finally:
        d.quit()


def test_upscale_on_ray_equals_the_local_run(cluster, tmp_path):
    import torch
    from test_sr import tiny_state

    torch.save(tiny_state(), tmp_path / "2x.pth")
    photos = _photos(tmp_path / "in", 4)
    common = ["--model", str(tmp_path / "2x.pth"), "--prior", "niqe", "--device", "cpu"]
    assert main(["upscale", str(photos), "-o", str(tmp_path / "ray"), *common, "--ray", "local", "--workers",
                 "2", "--report", str(tmp_path / "ray.json")]) == 0
    assert main(["upscale", str(photos), "-o", str(tmp_path / "here"), *common, "--report",
                 str(tmp_path / "here.json")]) == 0
    assert _outputs(tmp_path / "ray") == [f"p{i}_x2.png" for i in range(4)] == _outputs(tmp_path / "here")
    for i in range(4):
        assert (tmp_path / "ray" / f"p{i}_x2.png").read_bytes() == (tmp_path / "here" / f"p{i}_x2.png").read_bytes()


def test_the_driver_holds_a_bounded_window_of_tasks(cluster, tmp_path):
    """Tasks are drawn from the iterator as workers free up (two in flight each), never all at once: the
    driver's memory does not grow with the number of photos."""
    from ray_crash_worker import CrashOnceWorker

    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield str(i)

    run = batch.run(CrashOnceWorker, {"marker_dir": str(tmp_path), "crash_on": "none"}, tasks(),
                    ray_address="local", workers=2)
    first = next(run)
    assert first[1] == int(first[0]) ** 2 and len(pulled) <= 2 * 2 + 1
    assert len(list(run)) == 39 and len(pulled) == 40


def test_killing_a_worker_of_a_running_compare_loses_nothing(cluster, tmp_path):
    """A worker process killed from outside while ``compare --ray`` runs: the job completes, every output and
    row exactly once, nothing partial."""
    import signal
    import threading

    import psutil

    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    code = {}
    job = threading.Thread(target=lambda: code.update(rc=main(["compare", str(photos), "-o", str(out), *FAST,
                                                               "--ray", "local", "--workers", "2"])))
    job.start()
    t0, killed = time.time(), None
    while killed is None and time.time() - t0 < 300 and job.is_alive():
        if list((out / "rows").glob("*.json")):  # the workers are busy now
            for p in psutil.process_iter(["cmdline"]):
                if any("CompareWorker" in part for part in (p.info["cmdline"] or [])):
                    killed = p.pid
                    os.kill(p.pid, signal.SIGKILL)
                    break
        time.sleep(0.2)
    job.join(600)
    assert killed is not None, "no worker process was found to kill"
    assert code.get("rc") == 0
    expected = sorted(f"p{i}_{a}.png" for i in range(6) for a in ("niqe", "brisque"))
    assert _outputs(out) == expected and len(list((out / "rows").glob("*.json"))) == 12
    assert not list(out.rglob("*.part"))
    assert json.loads((out / "comparison.json").read_text())["photos"] == 6
