"""Start-up time of the command line and the desktop app's first import, in fresh processes:
`selfsup --help`, `selfsup methods` (cold: empty cache folder; warm: its rows cached), and
importing the app's main window module. The peer is a bare `python -c "import torch"`, the
cost every command would pay if it imported torch up front.

    python bench/bench_startup.py [--repeats 5] [--allow-load]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import finish, guard  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"]
CASES = {
    "selfsup --help": CLI + ["--help"],
    "selfsup methods (warm cache)": CLI + ["methods"],
    "import app.gui.main_window": [sys.executable, "-c", "import app.gui.main_window"],
    "python -c 'import torch' (peer)": [sys.executable, "-c", "import torch"],
}


def seconds(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--allow-load", action="store_true", help="run on a busy machine (stamped)")
    args = ap.parse_args()
    info = guard(args.allow_load)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SELFSUP_CACHE": cache, "QT_QPA_PLATFORM": "offscreen"}
        rows = {"selfsup methods (cold cache)": [seconds(CLI + ["methods"], env)]}
        for name, cmd in CASES.items():
            seconds(cmd, env)  # the page cache holds the files after the first run
            rows[name] = [seconds(cmd, env) for _ in range(args.repeats)]
    finish(info)
    print("| command | median s | min s | max s |\n|---|---|---|---|")
    for name, ts in rows.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")


if __name__ == "__main__":
    main()
