"""Start-up time of the ``fixative`` command: ``fixative --help`` and the subcommands' ``--help``.

Each command runs ``--runs`` times as a new process; the table gives the median and the worst wall-clock
seconds and the median CPU seconds of the child (user + system), and whether torch was imported (it
must not be: the help text comes from torch-free modules). The target is under 0.5 s for ``fixative --help``.

    python benchmarks/startup.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["protect", "--help"], ["verify", "--help"], ["models", "--help"], ["eval", "--help"],
            ["gui", "--help"])
PROBE = ("import sys, runpy; sys.argv = ['fixative', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('fixative', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")


def time_once(argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one ``fixative ARGV`` process (the installed console script)."""
    exe = shutil.which("fixative") or sys.exit("the fixative command is not on PATH: pip install -e . first")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([exe, *argv], check=True, stdout=subprocess.DEVNULL, env=os.environ)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_torch(argv: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return done.stderr.strip().endswith("TORCH") and not done.stderr.strip().endswith("NO-TORCH")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per command (default 10)")
    args = parser.parse_args()
    print(f"{'command':28s} {'median wall s':>13s} {'worst wall s':>12s} {'median CPU s':>12s}  torch")
    for argv in COMMANDS:
        time_once(argv)  # warm the file cache
        runs = [time_once(argv) for _ in range(args.runs)]
        wall = [w for w, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        print(f"{'fixative ' + ' '.join(argv):28s} {statistics.median(wall):13.3f} {max(wall):12.3f} {cpu:12.3f}  "
              f"{'imported' if imports_torch(argv) else 'no'}")


if __name__ == "__main__":
    main()
