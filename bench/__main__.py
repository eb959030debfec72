"""Run every benchmark under bench/ and write one markdown report.

    python -m bench [--out DIR] [--only NAME]

Each bench/bench_*.py is a standalone script that prints its figures (medians over repeated
runs, ratios measured in the same run). This runner records the machine, runs each script in
its own process and collects the printed figures into DIR/report.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/bench", help="report directory (default out/bench)")
    parser.add_argument("--only", action="append", default=[], help="run only bench_NAME.py (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    sections = []
    failed = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(HERE.parent)}
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        command = [sys.executable, str(script)]
        if "--json" in script.read_text():  # scripts that can also save their figures as JSON
            command += ["--json", str(out / f"{script.stem}.json")]
        result = subprocess.run(
            command,
            capture_output=True, text=True, env=env,
        )
        took = time.perf_counter() - start
        if result.returncode != 0:
            failed.append(script.name)
            body = f"FAILED (exit {result.returncode})\n\n```\n{result.stderr[-3000:]}\n```"
        else:
            body = f"```\n{result.stdout.strip()}\n```"
        sections.append(f"## {script.stem}  ({took:.0f} s)\n\n{body}\n")
        print(result.stdout, flush=True)
    report = out / "report.md"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report.write_text(f"# tflite-edge benchmark report\n\n{stamp} on {machine()}\n\n" + "\n".join(sections))
    print(f"wrote {report}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
