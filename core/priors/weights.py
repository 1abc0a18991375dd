"""Offline-first weights for pyiqa models.

pyiqa fetches checkpoints at first use from Hugging Face / GitHub. On an
offline machine that means a long network timeout and a traceback that does
not say which file is missing. Here every pyiqa download goes through
:func:`offline_weights`: a file already in the user's weights folder (or in
pyiqa's own cache) is used as is; otherwise the host is probed for a few
seconds, and if it cannot be reached a :class:`WeightsMissingError` names the
file, the folder to put it in and the URL to get it from. Downloads that do
happen land in the weights folder (or pyiqa's cache when no folder is set),
nowhere else.

The hooks are installed only for the duration of a load and are undone
afterwards, so no global state leaks into the host application.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

ENV_VAR = "IQA_MAP_WEIGHTS"
PROBE_TIMEOUT_S = 3.0


class WeightsMissingError(FileNotFoundError):
    """A checkpoint is not on disk and cannot be downloaded."""

    def __init__(self, filename: str, folder: Path | None, url: str, reason: str = "") -> None:
        where = folder if folder is not None else f"{pyiqa_cache_dir()} (pyiqa's cache; or set {ENV_VAR})"
        msg = (f"weights file '{filename}' is missing and could not be downloaded"
               f"{f' ({reason})' if reason else ''}. Download it from {url} and put it into {where}.")
        super().__init__(msg)
        self.message, self.filename, self.folder, self.url = msg, filename, folder, url

    def __str__(self) -> str:
        return self.message


def resolve_weights_dir(weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The weights folder: the argument, else ``$IQA_MAP_WEIGHTS``, else None (pyiqa's cache only)."""
    value = weights_dir if weights_dir is not None else os.environ.get(ENV_VAR) or None
    return Path(value).expanduser().resolve() if value is not None else None


def pyiqa_cache_dir() -> Path:
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    return Path(DEFAULT_CACHE_DIR)


def _host_reachable(url: str, timeout: float) -> bool:
    """TCP connect to the URL's host, bounded by ``timeout`` even when DNS itself hangs."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


class _Resolver:
    """Finds checkpoint files locally and gates every download behind a quick probe."""

    def __init__(self, folder: Path | None, probe_timeout: float) -> None:
        self.folder, self.probe_timeout = folder, probe_timeout
        self._reachable: dict[str, bool] = {}
        self.hf_offline = False

    def local(self, filename: str, *candidates: str | os.PathLike | None) -> Path | None:
        dirs = [self.folder, *candidates, pyiqa_cache_dir()]
        for d in dirs:
            if d is not None and (Path(d) / filename).is_file():
                return Path(d) / filename
        return None

    def require_network(self, url: str, filename: str) -> None:
        host = urlparse(url).hostname or url
        if host not in self._reachable:
            self._reachable[host] = _host_reachable(url, self.probe_timeout)
        if not self._reachable[host]:
            raise WeightsMissingError(filename, self.folder, url, f"{host} unreachable")

    # -- replacements --------------------------------------------------------------
    def load_file_from_url(self, orig):
        def load_file_from_url(url, model_dir=None, progress=True, file_name=None):
            filename = file_name or os.path.basename(urlparse(url).path)
            found = self.local(filename, model_dir)
            if found is not None:
                return str(found)
            self.require_network(url, filename)
            return orig(url, model_dir=str(self.folder) if self.folder else model_dir,
                        progress=progress, file_name=file_name)
        return load_file_from_url

    def load_state_dict_from_url(self, orig):
        def load_state_dict_from_url(url, model_dir=None, map_location=None, progress=True,
                                     check_hash=False, file_name=None, weights_only=False):
            import torch
            filename = file_name or os.path.basename(urlparse(url).path)
            hub_ckpt = Path(torch.hub.get_dir()) / "checkpoints"
            found = self.local(filename, model_dir, hub_ckpt)
            if found is not None:
                return torch.load(found, map_location=map_location, weights_only=weights_only)
            self.require_network(url, filename)
            return orig(url, model_dir=str(self.folder) if self.folder else model_dir,
                        map_location=map_location, progress=progress, check_hash=check_hash,
                        file_name=file_name, weights_only=weights_only)
        return load_state_dict_from_url

    def clip_download(self, orig):
        def _download(url, root):
            filename = os.path.basename(url)
            found = self.local(filename, root)
            if found is not None:
                return str(found)
            self.require_network(url, filename)
            return orig(url, str(self.folder) if self.folder else root)
        return _download


def _patch_everywhere(stack: contextlib.ExitStack, orig, replacement, prefixes) -> None:
    """Replace ``orig`` wherever a loaded module imported it by name (``from x import f``)."""
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith(prefixes):
            continue
        for attr, value in list(vars(mod).items()):
            if value is orig:
                setattr(mod, attr, replacement)
                stack.callback(setattr, mod, attr, orig)


@contextlib.contextmanager
def offline_weights(weights_dir: str | os.PathLike | None = None, probe_timeout: float = PROBE_TIMEOUT_S):
    """Route pyiqa's checkpoint downloads through the weights folder; fail fast when offline.

    Hugging Face backed parts (timm backbones, transformers) are put in offline
    mode for the duration when huggingface.co cannot be reached, so they fail
    from their cache in seconds instead of retrying the network.
    """
    import torch.hub
    import pyiqa.archs  # noqa: F401  (imports every arch module, so all references get patched)
    import pyiqa.archs.arch_util  # noqa: F401  (patched below)
    import pyiqa.utils.download_util as du

    folder = resolve_weights_dir(weights_dir)
    resolver = _Resolver(folder, probe_timeout)
    prefixes = ("pyiqa", "torchvision", "timm", "torch.hub")
    with contextlib.ExitStack() as stack:
        _patch_everywhere(stack, du.load_file_from_url, resolver.load_file_from_url(du.load_file_from_url), prefixes)
        _patch_everywhere(stack, torch.hub.load_state_dict_from_url,
                          resolver.load_state_dict_from_url(torch.hub.load_state_dict_from_url), prefixes)
        clip_model = sys.modules.get("pyiqa.archs.clip_model")
        if clip_model is not None:
            _patch_everywhere(stack, clip_model._download, resolver.clip_download(clip_model._download), prefixes)
        if not _host_reachable("https://huggingface.co", probe_timeout):
            resolver.hf_offline = True
            stack.enter_context(hf_offline())
        yield resolver


@contextlib.contextmanager
def hf_offline():
    """Offline mode for huggingface_hub / transformers, restored on exit."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    try:
        import huggingface_hub.constants as hfc
    except ImportError:  # pragma: no cover - huggingface_hub comes with pyiqa's deps
        hfc = None
    saved_const = getattr(hfc, "HF_HUB_OFFLINE", None)
    try:
        os.environ.update({k: "1" for k in keys})
        if hfc is not None:
            hfc.HF_HUB_OFFLINE = True
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hfc is not None:
            hfc.HF_HUB_OFFLINE = saved_const
