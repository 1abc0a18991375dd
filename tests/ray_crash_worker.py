"""A batch worker for tests/test_ray.py whose process dies on one task, once (a marker file remembers)."""
import os
from pathlib import Path


class CrashOnceWorker:
    def __init__(self, marker_dir: str, crash_on: str):
        self.marker, self.crash_on = Path(marker_dir) / f"crashed-{crash_on}", crash_on

    def run(self, task: str) -> int:
        if task == self.crash_on and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # as a killed or out-of-memory worker process does
        return int(task) ** 2
