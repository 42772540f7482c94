"""The hardening cases (issue 19), each run through the real command line, with what it said.

Builds every input in a temporary folder (tiny images, a 3x100000 strip, a 64x30000 strip for
Instagram, a symlink loop, malformed records and index entries, a stale index, two concurrent
runs, a renamed record, a target equal to the input, a corrupt target, SIGTERM, HEIC/AVIF, an
unwritable output folder, a weights file with code in it, the desktop app's Host/Origin gate) and
runs ``fixative`` (``python -m fixative``) on them with tiny settings (``--steps 2``, taef2 on
the CPU). For each case it prints the commands, their exit status and messages, and checks:

- no traceback and no "unexpected error" in anything printed;
- the inputs byte-identical before and after (SHA-256 of every input file);
- ``fixative verify`` OK on the output folder after the reruns (where the case has one).

    python benchmarks/hardening.py [--models-dir ../shared/models] [--keep DIR]

Exit status 0 when every check holds. Needs taef2 and LPIPS alex weights (``../shared/models``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout (or beside the folder of worktrees)
SHARED = next((p / "shared" for p in REPO.parents if (p / "shared").is_dir()), REPO.parent / "shared")
BAD_WORDS = ("Traceback", "unexpected error")


@dataclass
class Run:
    argv: list[str]
    code: int
    out: str
    err: str
    wall: float
    cpu: float

    def lines(self) -> list[str]:
        return [line for line in (self.err + self.out).splitlines() if line.strip()]


@dataclass
class Case:
    number: str
    title: str
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))
        print(f"    [{'ok' if ok else 'FAILED'}] {what}")

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)


class Bench:
    def __init__(self, work: Path, models: Path):
        self.work, self.models = work, models
        self.cases: list[Case] = []
        self.case: Case | None = None
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "FIXATIVE_CACHE_DIR": str(work / "cache")}

    # --- running ---------------------------------------------------------------------------------------

    def start(self, number: str, title: str) -> Case:
        self.case = Case(number, title)
        self.cases.append(self.case)
        print(f"\n== case {number}: {title}")
        return self.case

    def tiny(self) -> list[str]:
        return ["--models-dir", str(self.models), "--steps", "2", "--device", "cpu", "--precision", "fp32", "-q"]

    def popen(self, *args: str, prefix: tuple[str, ...] = (), python: tuple[str, ...] = ("-m", "fixative")):
        argv = [*prefix, sys.executable, *python, *args]
        return subprocess.Popen(argv, cwd=self.work, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True), argv

    def fixative(self, *args: str, show: bool = True, prefix: tuple[str, ...] = (),
                 python: tuple[str, ...] = ("-m", "fixative"), timeout: float = 900) -> Run:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc, argv = self.popen(*args, prefix=prefix, python=python)
        out, err = proc.communicate(timeout=timeout)
        return self._finish(proc, argv, out, err, started, before, show)

    def _finish(self, proc, argv, out, err, started, before, show=True) -> Run:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        run = Run(argv, proc.returncode, out, err, time.perf_counter() - started, cpu)
        if show:
            self.show(run)
        assert self.case is not None
        bad = [w for w in BAD_WORDS if w in run.out + run.err]
        self.case.checks.append((f"no traceback / unexpected error ({self.command(run)[:60]}...)", not bad))
        if bad:
            print(f"    [FAILED] printed {bad}")
        return run

    def command(self, run: Run) -> str:
        words = []
        for arg in run.argv:
            if arg == sys.executable:
                words.append("python")
            else:
                words.append(arg.replace(str(self.work) + "/", "").replace(str(self.models), "$MODELS"))
        text = " ".join(words)
        return text.replace("python -m fixative", "fixative")

    def show(self, run: Run) -> None:
        print(f"  $ {self.command(run)}")
        print(f"    exit {run.code}   ({run.wall:.1f} s wall, {run.cpu:.1f} s CPU)")
        for line in run.lines()[:14]:
            print(f"    | {line.replace(str(self.work) + '/', '')[:220]}")
        if len(run.lines()) > 14:
            print(f"    | ... ({len(run.lines()) - 14} more lines)")

    def interrupted(self, out: Path, sig: int, *args: str) -> Run:
        """``fixative protect ARGS --out OUT`` at 60 steps, sent ``sig`` half a second after its first output."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc, argv = self.popen("protect", *args, "--out", str(out), *[a if a != "2" else "60" for a in self.tiny()])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(out.glob("*.png")):
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        out_text, err_text = proc.communicate()
        return self._finish(proc, argv, out_text, err_text, started, before)

    def verify_ok(self, out: Path) -> None:
        run = self.fixative("verify", str(out))
        assert self.case is not None
        self.case.check(f"fixative verify {out.name}: OK", run.code == 0 and run.out.startswith("OK"))

    # --- inputs ----------------------------------------------------------------------------------------

    def image(self, path: Path, h: int, w: int, seed: int = 0, fmt: str | None = None, **kw) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        low = rng.random((max(2, h // 16), max(2, w // 16), 3))
        img = Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 6, (h, w, 3))
        arr = np.clip(np.asarray(img).astype(np.float64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(path, format=fmt, **kw)
        return path

    def photo(self, name: str, dest: Path, size: tuple[int, int] = (128, 96)) -> Path:
        """A real photo from ../shared/images, shrunk (the issue's red team used Wood, Storm...)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = SHARED / "images" / f"{name}.jpg"
        if source.is_file():
            with Image.open(source) as im:
                im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(dest)
        else:
            self.image(dest, size[1], size[0], seed=len(name))
        return dest


def digests(paths) -> dict[str, str]:
    out = {}
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.is_dir() else [path]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def unchanged(bench: Bench, before: dict[str, str], paths) -> None:
    after = digests(paths)
    same = before == after
    first = next(iter(before.values()), "")[:12]
    bench.case.check(f"inputs byte-identical: {len(before)} file(s), sha256 before == after "
                     f"(first {first}...)", same)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the cases -----------------------------------------------------------------------------------------------


def case_tiny(b: Bench) -> None:
    b.start("1", "tiny images: 1x1 and squares of 4-24 px (used to crash in a convolution)")
    folder = b.work / "tiny"
    for side in (1, 4, 8, 12, 16, 20, 24):
        b.image(folder / f"sq{side:02d}.png", side, side, side)
    b.image(folder / "ok48.png", 48, 48, 5)
    target = b.image(b.work / "target.png", 96, 128, 99)
    before = digests([folder, target])
    out = b.work / "out-tiny"
    run = b.fixative("protect", str(folder), "--target", str(target), "--out", str(out), *b.tiny())
    b.case.check("exit 1: the 7 small ones refused, the 48 px one protected",
                 run.code == 1 and run.err.count("at least 32 px") >= 7 and (out / "ok48.png").is_file())
    unchanged(b, before, [folder, target])
    b.verify_ok(out)


def case_strips(b: Bench) -> None:
    b.start("2", "extreme aspect ratios: a 3x100000 strip; 64x30000 with --for instagram")
    strip = b.image(b.work / "strips" / "strip_3x100000.png", 3, 100_000, 1)
    wide = b.image(b.work / "strips" / "wide_64x30000.png", 64, 30_000, 2)
    target = b.work / "target.png"
    before = digests([strip, wide, target])
    out = b.work / "out-strips"
    run = b.fixative("protect", str(strip), "--target", str(target), "--out", str(out), *b.tiny())
    b.case.check("3 px strip refused in words (exit 1)", run.code == 1 and "at least 32 px" in run.err)
    run = b.fixative("protect", str(wide), "--target", str(target), "--out", str(out), "--for", "instagram",
                     *b.tiny())
    b.case.check("64x30000 protected for instagram (exit 0)", run.code == 0 and (out / "wide_64x30000.png").is_file())
    unchanged(b, before, [strip, wide, target])
    b.verify_ok(out)


def case_loop(b: Bench) -> None:
    b.start("3", "a glob over a symlink loop: 'loop/**/*.png' (used to list paths for ever)")
    loop = b.work / "loop"
    b.photo("Wood", loop / "Wood.png")
    b.photo("Storm", loop / "deeper" / "Storm.png")
    (loop / "self").symlink_to(loop, target_is_directory=True)
    (loop / "deeper" / "up").symlink_to(loop, target_is_directory=True)
    before = digests([loop])
    out = b.work / "out-loop"
    run = b.fixative("protect", "loop/**/*.png", "--target", "target.png", "--out", str(out), *b.tiny(),
                     timeout=300)
    names = sorted(p.name for p in out.glob("*.png"))
    b.case.check(f"ends, each file once: {names}", run.code == 0 and names == ["Storm.png", "Wood.png"])
    unchanged(b, before, [loop])
    b.verify_ok(out)


def case_out(b: Bench) -> None:
    b.start("4", "--out is a file, under a file, not writable; a missing input (issue 16 item 6)")
    art = b.work / "art"
    for name in ("Wood", "Storm", "Garden"):
        b.photo(name, art / f"{name}.png")
    notes = b.work / "notes.txt"
    notes.write_text("my notes\n")
    before = digests([art, notes])
    run = b.fixative("protect", "art", "--target", "target.png", "--out", "notes.txt", *b.tiny())
    b.case.check("--out a file: exit 2, one line naming it", run.code == 2 and len(run.lines()) == 1
                 and "notes.txt: is a file" in run.err)
    run = b.fixative("protect", "art", "--target", "target.png", "--out", "notes.txt/protected", *b.tiny())
    b.case.check("--out under a file: exit 2, one line", run.code == 2 and len(run.lines()) == 1
                 and "cannot be created" in run.err)
    # an ordinary user (root writes anywhere), a read-only folder: refused before any image is computed
    ro = b.work / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0 and shutil.which("setpriv"):
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    run = b.fixative("protect", "art", "--target", "target.png", "--out", "readonly", *b.tiny(), prefix=prefix)
    b.case.check("read-only --out: exit 2, one line, before any image (nothing written)",
                 run.code == 2 and len(run.lines()) == 1 and "cannot write files there" in run.err
                 and not list(ro.iterdir()))
    run = b.fixative("protect", "missing.png", "--target", "target.png", "--out", "out-missing", *b.tiny())
    b.case.check("missing input: exit 2, reported once, no output folder made",
                 run.code == 2 and (run.err + run.out).count("missing.png") == 1
                 and not (b.work / "out-missing").exists())
    run = b.fixative("protect", "missing.png", "art/Wood.png", "--target", "target.png", "--out", "out-mixed",
                     *b.tiny())
    b.case.check("missing input beside a good one: exit 1, the good one protected",
                 run.code == 1 and (b.work / "out-mixed" / "Wood.png").is_file())
    unchanged(b, before, [art, notes])
    b.verify_ok(b.work / "out-mixed")


def case_malformed(b: Bench) -> None:
    b.start("5", "malformed records and index entries (used to crash verify and abort protect)")
    art = b.work / "art"
    out = b.work / "out-malformed"
    before = digests([art])
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    record = json.loads((out / "Storm.json").read_text())
    record["input"] = "x"
    (out / "Storm.json").write_text(json.dumps(record))
    index = json.loads((out / "fixative-index.json").read_text())
    index["entries"]["ghost.png"] = "a string, not an entry"
    (out / "fixative-index.json").write_text(json.dumps(index))
    b.image(out / "mine.png", 40, 40, 3)
    (out / "mine.json").write_text("{this is not JSON")
    print("  (Storm.json: \"input\": \"x\"; an index entry that is a string; mine.json not JSON beside mine.png)")
    run = b.fixative("verify", str(out))
    b.case.check("verify names each, exit 1, no crash",
                 run.code == 1 and "TAMPERED: Storm.json" in run.out and "ghost.png" in run.out
                 and "FOREIGN: mine.json" in run.out)
    run = b.fixative("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    b.case.check("protect into that folder: exit 0, Storm redone under its own name",
                 run.code == 0 and not (out / "Storm_2.png").exists())
    run = b.fixative("verify", str(out))
    b.case.check("only the user's own files are left to report",
                 run.code == 1 and "mine.json" in run.out and "Storm" not in run.out and "ghost" not in run.out)
    (b.work / "mine-moved").mkdir()
    for name in ("mine.png", "mine.json"):
        (out / name).rename(b.work / "mine-moved" / name)
    print("  (the user moves their own mine.png and mine.json out of the output folder)")
    unchanged(b, before, [art])
    b.verify_ok(out)


def case_stale(b: Bench) -> None:
    b.start("6", "a stale index entry (killed between a re-protection's record and its index entry); a tampered "
                 "record; an orphaned temporary; kill -9")
    art = b.work / "art"
    out = b.work / "out-stale"
    before = digests([art])
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out), "--budget", "0.05", *b.tiny())
    old_index = (out / "fixative-index.json").read_bytes()
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out), "--budget", "0.04", *b.tiny())
    (out / "fixative-index.json").write_bytes(old_index)
    print("  (the index put back as it was before the re-protection: the state a kill -9 between them leaves)")
    run = b.fixative("verify", str(out))
    b.case.check("verify: TAMPERED (the record differs from the index)", run.code == 1 and "differs from" in run.out)
    run = b.fixative("protect", "art", "--target", "target.png", "--out", str(out), "--budget", "0.04", *b.tiny())
    b.case.check("rerun: redone (not 'already done' for ever), exit 0",
                 run.code == 0 and "protecting it again" in run.err)
    b.verify_ok(out)
    record = json.loads((out / "Wood.json").read_text())
    record["metrics"]["lpips"] = 0.0
    (out / "Wood.json").write_text(json.dumps(record, indent=2))
    print("  (Wood.json edited: metrics.lpips = 0.0)")
    run = b.fixative("protect", "art", "--target", "target.png", "--out", str(out), "--budget", "0.04", *b.tiny())
    fresh = json.loads((out / "Wood.json").read_text())["metrics"]["lpips"]
    b.case.check(f"tampered record not re-blessed: Wood redone, LPIPS back to {fresh:.4f}",
                 run.code == 0 and "Wood" in run.err and fresh > 0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sys.path.insert(0, str(REPO))
    from fixative.files.formats import _host

    orphan = out / f".Storm.png.{_host()}.{dead.pid}.k3j2h1g0.part"
    orphan.write_bytes(b"half a file")
    run = b.fixative("verify", str(out))
    b.case.check("orphaned temporary: verify says PARTIAL", run.code == 1 and "PARTIAL" in run.out)
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out), "--budget", "0.04", *b.tiny())
    b.case.check("rerun removed it (its writer is gone)", not orphan.exists())
    b.verify_ok(out)
    # a real kill -9 in the middle of a run
    out9 = b.work / "out-kill9"
    b.interrupted(out9, signal.SIGKILL, "art", "--target", "target.png")
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out9), *b.tiny())
    unchanged(b, before, [art])
    b.verify_ok(out9)


def case_concurrent(b: Bench) -> None:
    b.start("7", "two runs at once on one folder (one used to delete the other's .part file)")
    art = b.work / "art"
    out = b.work / "out-concurrent"
    before = digests([art])
    args = ("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [b.popen(*args) for _ in range(2)]
    for proc, argv in procs:
        out_text, err_text = proc.communicate(timeout=900)
        b._finish(proc, argv, out_text, err_text, started, before_cpu)
    b.case.check("both runs exit 0", all(p.returncode == 0 for p, _ in procs))
    b.fixative("protect", *args[1:])
    names = sorted(p.name for p in out.glob("*.png"))
    b.case.check(f"each image once under its own name: {names}", names == ["Garden.png", "Storm.png", "Wood.png"])
    unchanged(b, before, [art])
    b.verify_ok(out)


def case_renamed(b: Bench) -> None:
    b.start("8", "a renamed record: Wood.json -> zzz.json (used to pass verify; a rerun wrote Wood_2.png)")
    art = b.work / "art"
    out = b.work / "out-renamed"
    before = digests([art])
    b.fixative("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    (out / "Wood.json").rename(out / "zzz.json")
    run = b.fixative("verify", str(out))
    b.case.check("verify: TAMPERED zzz.json, exit 1", run.code == 1 and "TAMPERED: zzz.json" in run.out)
    run = b.fixative("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    b.case.check("rerun gives Wood.json its name back, no Wood_2.png",
                 run.code == 0 and (out / "Wood.json").is_file() and not (out / "Wood_2.png").exists())
    unchanged(b, before, [art])
    b.verify_ok(out)


def case_target(b: Bench) -> None:
    b.start("9", "--target equal to the input (used to exit 0 with ratio 1.000); a corrupt target")
    art = b.work / "art"
    before = digests([art])
    run = b.fixative("protect", "art/Wood.png", "--target", "art/Wood.png", "--out", "out-self", *b.tiny())
    b.case.check("target = the input: exit 2 up front, nothing made",
                 run.code == 2 and "towards itself" in run.err and not (b.work / "out-self").exists())
    corrupt = b.work / "corrupt-target.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    run = b.fixative("protect", "art", "--target", str(corrupt), "--out", "out-corrupt", *b.tiny())
    b.case.check("corrupt target: exit 2, one line, once", run.code == 2 and len(run.lines()) == 1
                 and "--target" in run.err)
    run = b.fixative("protect", "art", "--target", "art/Wood.png", "--out", "out-among", *b.tiny())
    b.case.check("target among the inputs: that one refused, the others protected (exit 1)",
                 run.code == 1 and "the --target itself" in run.err and (b.work / "out-among" / "Storm.png").is_file())
    unchanged(b, before, [art])
    b.verify_ok(b.work / "out-among")


def case_sigterm(b: Bench) -> None:
    b.start("10", "SIGTERM (used to exit 143 with no message)")
    art = b.work / "art"
    out = b.work / "out-sigterm"
    before = digests([art])
    run = b.interrupted(out, signal.SIGTERM, "art", "--target", "target.png")
    b.case.check("exit 143 with a message saying what was saved",
                 run.code == 143 and "interrupted (SIGTERM)" in run.err and "saved in" in run.err)
    b.case.check("no partial file left", not list(out.rglob("*.part")))
    run = b.fixative("protect", "art", "--target", "target.png", "--out", str(out), *b.tiny())
    b.case.check("rerun finishes the rest (exit 0)", run.code == 0)
    unchanged(b, before, [art])
    b.verify_ok(out)


def case_heic_avif(b: Bench) -> None:
    b.start("11", "HEIC and AVIF: found in folders, read with the plugin, named clearly without it")
    folder = b.work / "phone"
    b.image(folder / "avif_photo.avif", 64, 80, 7, quality=90)
    heic_made = False
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        b.image(folder / "heic_photo.heic", 64, 80, 8, quality=90)
        heic_made = True
    except ImportError:
        print("  (pillow-heif not installed: no real HEIC file made)")
    before = digests([folder])
    out = b.work / "out-phone"
    run = b.fixative("protect", "phone", "--target", "target.png", "--out", str(out), *b.tiny())
    expected = ["avif_photo.png"] + (["heic_photo.png"] if heic_made else [])
    b.case.check(f"found in the folder and protected: {sorted(p.name for p in out.glob('*.png'))}",
                 run.code == 0 and sorted(p.name for p in out.glob("*.png")) == expected)
    heic = b.work / "noplugin" / "iphone.heic"
    heic.parent.mkdir()
    if heic_made:
        shutil.copy(folder / "heic_photo.heic", heic)
    else:
        heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    code = ("import sys; sys.modules['pillow_heif'] = None  # as if pillow-heif were not installed\n"
            "from fixative.cli.main import main; sys.exit(main(sys.argv[1:]))")
    run = b.fixative("protect", "noplugin", "--target", "target.png", "--out", "out-noplugin", *b.tiny(),
                     python=("-c", code))
    b.case.check("without pillow-heif: the file named, the package named", run.code == 1 and "iphone.heic" in run.err
                 and "pillow-heif" in run.err)
    unchanged(b, before, [folder])
    b.verify_ok(out)


def case_weights(b: Bench) -> None:
    b.start("12", "a weights file with code in it: refused, with no advice to load it unsafely")
    evil = b.work / "evil" / "evil_encoder.pth"
    marker = b.work / "evil" / "code-ran"
    code = ("import os, torch\n"
            "class P:\n    def __reduce__(self):\n"
            f"        return (os.system, ('touch {marker}',))\n"
            f"torch.save({{'0.weight': P()}}, {str(evil)!r})\n")
    evil.parent.mkdir()
    subprocess.run([sys.executable, "-c", code], check=True, env=b.env)
    art = b.work / "art"
    before = digests([art])
    run = b.fixative("protect", "art/Wood.png", "--target", "target.png", "--out", "out-evil", "--encoder",
                     str(evil), *b.tiny())
    b.case.check("refused: could run code; no 'weights_only' advice; the code never ran",
                 run.code != 0 and "could run code" in run.err and "weights_only" not in run.err
                 and not marker.exists())
    unchanged(b, before, [art])


def case_gui(b: Bench) -> None:
    b.start("13", "the desktop app: Host header (DNS rebinding), cross-origin uploads, made targets' cache")
    import httpx

    port = _free_port()
    proc, argv = b.popen("gui", "--no-browser", "--port", str(port), "--models-dir", str(b.models))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    up = False
    while time.monotonic() < deadline and not up:
        try:
            up = httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.5)
    b.case.check("the app answers its own address (200)", up)
    rebound = httpx.get(url, headers={"Host": f"attacker.example:{port}"}, timeout=30)
    print(f"    GET / with Host attacker.example:{port} -> {rebound.status_code}: {rebound.text.strip()}")
    b.case.check("another Host refused (403)", rebound.status_code == 403)
    upload = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", b"x")},
                        headers={"Origin": "http://attacker.example"}, timeout=30)
    print(f"    POST /gradio_api/upload with Origin http://attacker.example -> {upload.status_code}: "
          f"{upload.text.strip()}")
    b.case.check("cross-origin upload refused (403)", upload.status_code == 403)
    own = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", b"x")}, headers={"Origin": url},
                     timeout=30)
    b.case.check(f"the app's own page may upload ({own.status_code})", own.status_code == 200)
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    out_text, err_text = proc.communicate(timeout=60)
    b._finish(proc, argv, out_text, err_text, started, before_cpu)
    b.case.check("stopped by SIGTERM, exit 0", proc.returncode == 0)
    sys.path.insert(0, str(REPO))
    from fixative.gui.workbench import Workbench

    bench = Workbench()
    inside = bench.target_cache.is_relative_to(bench.root)
    print(f"    made targets are cached in {bench.target_cache} (the app's temporary folder)")
    bench.cleanup()
    b.case.check("made targets cached in the temporary folder, deleted with it",
                 inside and not bench.target_cache.exists())


def case_paths(b: Bench) -> None:
    b.start("14", "records without absolute paths (default), --absolute-paths on request")
    record = json.loads((b.work / "out-renamed" / "Wood.json").read_text())
    print(f"    input.path {record['input']['path']!r}, output.path {record['output']['path']!r}, "
          f"target.path {record['target']['path']!r}")
    b.case.check("relative to the record's folder", not os.path.isabs(record["input"]["path"])
                 and not os.path.isabs(record["target"]["path"]))
    run = b.fixative("protect", "art/Wood.png", "--target", "target.png", "--out", "out-absolute",
                     "--absolute-paths", *b.tiny())
    record = json.loads((b.work / "out-absolute" / "Wood.json").read_text())
    print(f"    with --absolute-paths: input.path {record['input']['path']!r}")
    b.case.check("absolute with --absolute-paths", run.code == 0 and os.path.isabs(record["input"]["path"]))


CASES = [case_tiny, case_strips, case_loop, case_out, case_malformed, case_stale, case_concurrent, case_renamed,
         case_target, case_sigterm, case_heic_avif, case_weights, case_gui, case_paths]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--keep", type=Path, help="build the cases here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.models_dir / "taesd" / "taef2_encoder.pth").is_file():
        print(f"needs taef2 and LPIPS weights in {args.models_dir} (see models/README.md)", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="fixative-hardening-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the unwritable-folder case runs as an ordinary user, who must reach the inputs
    bench = Bench(work.resolve(), args.models_dir.resolve())
    print(f"fixative hardening cases: {bench.work}; models {bench.models}; taef2, --steps 2, CPU, fp32")
    started, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        for case in CASES:
            case(bench)
            for p in bench.work.rglob("*"):  # keep everything readable by the ordinary user of case 4
                if not p.is_symlink() and p.name != "readonly":
                    p.chmod(0o755 if p.is_dir() else 0o644)
    finally:
        ro = bench.work / "readonly"
        if ro.exists():
            ro.chmod(0o755)
        if args.keep is None:
            shutil.rmtree(bench.work, ignore_errors=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("\n== summary")
    for case in bench.cases:
        passed = sum(ok for _, ok in case.checks)
        print(f"  case {case.number:>2} {'OK    ' if case.ok else 'FAILED'} {passed}/{len(case.checks)} checks  "
              f"{case.title}")
    total = sum(len(c.checks) for c in bench.cases)
    failed = [(c.number, w) for c in bench.cases for w, ok in c.checks if not ok]
    print(f"  {total - len(failed)}/{total} checks hold; {time.perf_counter() - started:.0f} s wall, "
          f"{(cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime):.0f} s CPU (child processes)")
    for number, what in failed:
        print(f"  FAILED in case {number}: {what}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
