"""Write ``core/priors/data/pyiqa_metrics.json``: the metric names of the installed pyiqa.

Load IQA Prior lists pyiqa's metrics even where pyiqa is not installed (and then says what to
install when one is chosen); this snapshot is where those names come from. Re-run after moving
the pyiqa version the tests install::

    python tools/snapshot_pyiqa_metrics.py
"""
from __future__ import annotations

import json

from iqa_map.core.priors.pyiqa_backend import SNAPSHOT_FILE, snapshot


def main() -> None:
    data = snapshot()
    SNAPSHOT_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{SNAPSHOT_FILE}: {len(data['metrics'])} metrics of pyiqa {data['pyiqa_version']}")


if __name__ == "__main__":
    main()
