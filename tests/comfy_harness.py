"""A real ComfyUI, headless on the CPU, with this pack in custom_nodes: start, talk to it, stop.

Set ``COMFYUI_PATH`` to a ComfyUI checkout (and ``COMFYUI_PYTHON`` to a Python
with its requirements and this pack's, default: the one running pytest).
Everything ComfyUI writes goes to a temporary base directory.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "comfy_scripts"


def comfyui_path() -> Path:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH is not set: ComfyUI integration tests need a ComfyUI checkout "
                    "(see README, 'Testing inside ComfyUI')")
    p = Path(path).expanduser()
    if not (p / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={p} is not a ComfyUI checkout (no main.py)")
    return p


def comfy_python() -> str:
    return os.environ.get("COMFYUI_PYTHON", sys.executable)


@functools.lru_cache(maxsize=None)
def _pack_on_path() -> str:
    """A folder holding the pack as ``iqa_map``, so the in-process scripts import it as the library does
    without ``pip install -e`` into ComfyUI's Python (ComfyUI itself loads it from custom_nodes)."""
    root = Path(tempfile.mkdtemp(prefix="iqa_map_pack_"))
    os.symlink(REPO, root / "iqa_map")
    return str(root)


def run_script(script: str, *args, timeout=600) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (_pack_on_path(), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path()), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    return subprocess.run([comfy_python(), str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(comfyui_path()))


def build_models(models: Path, script: str = "build_tiny_models.py") -> None:
    out = run_script(script, models)
    if out.returncode != 0:
        raise RuntimeError(f"building the tiny models failed:\n{out.stdout}\n{out.stderr[-4000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path):
        self.base, self.port = base, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        # The pack under a folder name that is not a Python identifier, as users clone it.
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        os.symlink(REPO, base / "custom_nodes" / "ComfyUI-IQA-MAP")
        (base / "input").mkdir(exist_ok=True)
        shutil.copy(comfyui_path() / "input" / "example.png", base / "input" / "example.png")
        build_models(base / "models")
        cmd = [comfy_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(base), "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
        self.log = open(self.log_path, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=str(comfyui_path()), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self._wait_up(240)

    def _wait_up(self, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        raise TimeoutError(f"ComfyUI did not start in {timeout} s:\n{self.text()[-4000:]}")

    def text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict | None = None):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')[:4000]}") from None
        return json.loads(body) if body else None

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": "iqa-map-tests"})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API format ``/prompt`` takes, as the front end does.

    Widget values are matched to the node's widget inputs in declaration order;
    seed inputs carry an extra 'control after generate' value and image-upload
    combos an extra upload value, which are skipped.
    """
    links = {lk[0]: lk for lk in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        info = object_info[node["type"]]
        connected = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs, values = {}, list(node.get("widgets_values", []))
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
                if name in connected:
                    lk = connected[name]
                    inputs[name] = [str(lk[1]), lk[2]]
                    if is_widget and values:
                        values.pop(0)  # a widget converted to an input keeps its slot in widgets_values
                    continue
                if not is_widget or not values:
                    continue
                inputs[name] = values.pop(0)
                if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                    values.pop(0)
                if opts.get("image_upload"):
                    values.pop(0)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


#: How the shipped workflows run against the tiny random-weight models, small and short (the CPU workflows run
#: as shipped): class_type -> {input: value}.
SMALL = {
    "CheckpointLoaderSimple": {"ckpt_name": "tiny_sd15.safetensors"},
    "UpscaleModelLoader": {"model_name": "tiny_compact_x4.pth"},
    "ImageScale": {"width": 64, "height": 64},
    "IQAMAP_LatentMAPAscent": {"iterations": 2},
    "IQAMAP_DDIMInvert": {"steps": 2},
    "IQAMAP_IQAFineTuneUpscaler": {"steps": 2, "crop": 8, "batch": 1},
    "KSampler": {"steps": 2},
}


#: The flow-matching workflows' files -> the random-weight stand-ins tests/comfy_scripts/build_flow_models.py writes.
FLOW_FILES = {"UNETLoader": {"unet_name": "tiny_flux_dev.safetensors"},
              "VAELoader": {"vae_name": "tiny_flux_ae.safetensors"}}


def uses_flow_models(prompt: dict) -> bool:
    return any(n["class_type"] in ("UNETLoader", "DualCLIPLoader", "VAELoader")
               or "sd3" in str(n["inputs"].get("ckpt_name", "")).lower() for n in prompt.values())


def small(prompt: dict) -> dict:
    """An API-format prompt with :data:`SMALL` applied, its flow-matching files replaced by the tiny ones.

    DualCLIPLoader (CLIP-L + T5-XXL for Flux) becomes a CLIPLoader of one CLIP-L: T5-XXL's size is fixed by
    ComfyUI's config (4.7B parameters at random), and the tiny Flux takes CLIP-L's 768-d text features."""
    for node in prompt.values():
        sd3 = "sd3" in str(node["inputs"].get("ckpt_name", "")).lower()
        node["inputs"].update(SMALL.get(node["class_type"], {}))
        node["inputs"].update(FLOW_FILES.get(node["class_type"], {}))
        if sd3:
            node["inputs"]["ckpt_name"] = "tiny_sd3.safetensors"
        if node["class_type"] == "DualCLIPLoader":
            node.update(class_type="CLIPLoader", inputs={"clip_name": "tiny_clip_l.safetensors",
                                                         "type": "stable_diffusion"})
    return prompt


def widget_slots(node_type: str, object_info: dict) -> dict:
    """``{widget name: index in widgets_values}`` as the front end lays them out (see :func:`ui_to_api`)."""
    slots, k = {}, 0
    info = object_info[node_type]["input"]
    for section in ("required", "optional"):
        for name, spec in info.get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")):
                continue
            slots[name] = k
            k += 1 + bool(kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")))
            k += bool(opts.get("image_upload"))
    return slots


def small_ui(ui: dict, object_info: dict) -> dict:
    """A UI-format workflow with :data:`SMALL` applied to its widget values (for the browser)."""
    for node in ui["nodes"]:
        changes = SMALL.get(node["type"], {})
        slots = widget_slots(node["type"], object_info) if changes else {}
        for name, value in changes.items():
            node["widgets_values"][slots[name]] = value
    return ui
