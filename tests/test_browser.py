"""The pack in ComfyUI's real front end, in Debian's chromium (no browser download), driven by selenium.

    apt-get install chromium chromium-driver
    COMFYUI_PATH=~/ComfyUI make test-browser

For every example workflow: open the UI, load the workflow, queue it, wait for it to
finish, check that IQA Score / IQA Select show their text on the node (the pack's
front-end extension) and that the browser console has no error from the pack, then
save a screenshot of the graph after the run. ``IQA_MAP_SCREENSHOTS=DIR`` keeps the
screenshots there (tools/make_thumbnails.py turns them into the workflows'
thumbnails). CPU workflows run as shipped, the SD ones on the random-weight
checkpoint the integration tests build, at small size (comfy_harness.SMALL).
"""
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from comfy_harness import REPO, ComfyServer, build_models, comfyui_path, small, small_ui, ui_to_api, uses_flow_models

pytestmark = pytest.mark.browser
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
EXTENSION = "iqa_map.ShowScore"  # web/js/iqa_score.js
SHOWS_TEXT = ("IQAMAP_IQAScore", "IQAMAP_IQASelect")
OURS = ("ComfyUI-IQA-MAP", "iqa_map", "IQAMAP_", "iqa_score")


def _browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium / chromedriver: apt-get install chromium chromium-driver")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    return chromium, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfyui_path()
    _browser_paths()
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_browser"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_paths()
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(120)
    d.set_script_timeout(120)
    ready = ("return !!(window.app && window.app.graph && window.app.extensionManager && window.app.extensions "
             "&& window.app.extensions.length)")
    d.get(server.url)
    _until(lambda: d.execute_script(ready), 120, "the app")
    # A clean canvas for screenshots: no minimap, no first-run template browser (then reload to apply).
    for setting, value in (("Comfy.Minimap.Visible", False), ("Comfy.TutorialCompleted", True)):
        d.execute_async_script("const done = arguments[arguments.length - 1];"
                               "app.extensionManager.setting.set(arguments[0], arguments[1]).then(done, done)",
                               setting, value)
    d.refresh()
    _until(lambda: d.execute_script(ready), 120, "the app after a reload")
    _close_dialogs(d)
    yield d
    d.quit()


def _until(check, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def _close_dialogs(page) -> None:
    """Close what the front end opened by itself (a dialog's close button), so screenshots show the graph."""
    for _ in range(3):
        if not page.execute_script("return document.querySelectorAll('.p-dialog-mask').length"):
            return
        page.execute_script("document.querySelectorAll('.p-dialog-mask button').forEach(b => {"
                            "if (/close/i.test(b.getAttribute('aria-label') || '')) b.click(); })")
        time.sleep(1)
    assert not page.execute_script("return document.querySelectorAll('.p-dialog-mask').length"), "a dialog stays open"


def _history(server) -> dict:
    with urllib.request.urlopen(server.url + "/history", timeout=30) as r:
        return json.loads(r.read())


def _console(page) -> list:
    return page.get_log("browser")


def _ours(entries) -> list:
    """Console errors and warnings that come from the pack (its extension, its nodes)."""
    return [e["message"] for e in entries if e["level"] in ("SEVERE", "WARNING") and any(o in e["message"] for o in OURS)]


def test_the_pack_s_extension_loads_without_errors(page):
    names = page.execute_script("return app.extensions.map(e => e.name)")
    assert EXTENSION in names
    assert not _ours(_console(page))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_workflow_runs_in_the_browser(server, page, path, tmp_path):
    ui = json.loads(path.read_text())
    info = server.get("/object_info")
    # Flow-matching workflows are shown as shipped and run on stand-ins (comfy_harness.small: tiny files, one CLIP-L
    # for Flux's CLIP-L + T5-XXL), swapped in the prompt the front end makes, so the screenshot shows the real graph.
    flow = uses_flow_models(ui_to_api(ui, info))
    if flow and not (server.base / "models" / "vae" / "tiny_flux_ae.safetensors").is_file():
        build_models(server.base / "models", "build_flow_models.py")
    if "cpu" not in path.stem and not flow:
        ui = small_ui(ui, info)
    _console(page)  # what earlier tests logged is theirs
    before = set(_history(server))
    page.execute_async_script("const done = arguments[arguments.length - 1];"
                              "app.loadGraphData(arguments[0]).then(() => done(true), e => done(String(e)))", ui)
    loaded = page.execute_script("return app.graph._nodes.map(n => n.type)")
    assert sorted(loaded) == sorted(n["type"] for n in ui["nodes"])
    if flow:
        made = page.execute_async_script("const done = arguments[arguments.length - 1];"
                                         "app.graphToPrompt().then(p => done(p), e => done(String(e)))")
        assert isinstance(made, dict), made
        made["output"] = small(made["output"])
        queued = page.execute_async_script("const done = arguments[arguments.length - 1];"
                                           "window.comfyAPI.api.api.queuePrompt(0, arguments[0])"
                                           ".then(() => done(true), e => done(String(e)))", made)
        assert queued is True, queued
    else:
        page.execute_async_script("const done = arguments[arguments.length - 1];"
                                  "app.queuePrompt(0, 1).then(() => done(true), e => done(String(e)))")
    new = _until(lambda: [v for k, v in _history(server).items() if k not in before
                          and v.get("status", {}).get("completed") is not None], 900, f"{path.stem} to finish")
    status = new[0]["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-3000:] + server.text()[-3000:]
    time.sleep(1)  # the executed messages reach the nodes over the websocket
    shown = page.execute_script(
        "return app.graph._nodes.filter(n => arguments[0].includes(n.type)).map(n => [n.type, "
        "((n.widgets || []).find(w => w.name === 'iqa_score_text') || {}).value || ''])", list(SHOWS_TEXT))
    expected = sum(n["type"] in SHOWS_TEXT for n in ui["nodes"])
    assert len(shown) == expected and all(text.strip() for _, text in shown), shown
    assert not _ours(_console(page))
    _close_dialogs(page)
    page.execute_script("app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    time.sleep(1)
    out = Path(os.environ.get("IQA_MAP_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    assert page.save_screenshot(str(out / f"{path.stem}.png"))
