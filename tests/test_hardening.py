"""Hardening (issue 19): what a hostile or unlucky user finds, each one clear line, the batch going on, nothing lost."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import corpus
import pytest
from PIL import Image

from fixative.batch.inputs import collect_inputs, glob_files
from fixative.cli.main import FAULT_ENV, main
from fixative.errors import InputImageError
from fixative.files.formats import _host, atomic_write, remove_stale_temporaries
from fixative.provenance.manifest import INDEX_NAME, recorded_path, verify

from tiny import subprocess_env, tiny_protect_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _protect(models: Path, *args: str, steps: int = 2) -> int:
    return main(["protect", *args, *tiny_protect_args(models, steps)])


@pytest.fixture
def art(tmp_path) -> Path:
    folder = tmp_path / "art"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"a{i}.png")
    return folder


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


# --- 1, 2: sizes and shapes ------------------------------------------------------------------------


def test_images_below_the_minimum_are_refused_saying_it():
    from fixative.core.engine import MIN_SIDE, Protector, check_size

    from tiny import TinyEncoder, smooth_image, tiny_perceptual

    check_size(MIN_SIDE, MIN_SIDE)
    with pytest.raises(InputImageError, match=f"at least {MIN_SIDE} px"):
        check_size(MIN_SIDE - 1, 500)
    protector = Protector([TinyEncoder()], tiny_perceptual())
    for side in (1, 4, 24):  # the engine itself refuses in words (it used to crash in a convolution)
        image = smooth_image(side, side)
        with pytest.raises(InputImageError, match="at least 32 px"):
            protector.protect(image, image.flip(-1))


def test_platform_range_for_very_long_strips_is_never_empty():
    from fixative.batch.platforms import get_platform, resize_range, robust_for

    for platform, size in (("instagram", (64, 30000)), ("generic", (3, 100000)), ("x", (100, 1_000_000))):
        low, high = robust_for(get_platform(platform), size).resize_factor
        assert 0.05 <= low <= high <= 1.0
    assert resize_range(0.5) == pytest.approx((0.4, 0.55))


def test_a_30000_px_strip_for_instagram_is_protected(tmp_path, tiny_models, target):
    strip = tmp_path / "strip.png"
    Image.fromarray(corpus.rgb8(5, 32, 30000), "RGB").save(strip)
    out = tmp_path / "out"
    assert _protect(tiny_models, str(strip), "--target", str(target), "--out", str(out), "--for", "instagram",
                    steps=1) == 0
    with Image.open(out / "strip.png") as im:
        assert im.size == (30000, 32)
    assert verify(out).ok


# --- 3: inputs -------------------------------------------------------------------------------------


def test_a_glob_over_a_symlink_loop_ends_and_lists_each_file_once(tmp_path):
    loop = tmp_path / "loop"
    (loop / "sub").mkdir(parents=True)
    Image.fromarray(corpus.rgb8(0), "RGB").save(loop / "a.png")
    Image.fromarray(corpus.rgb8(1), "RGB").save(loop / "sub" / "b.png")
    (loop / "self").symlink_to(loop, target_is_directory=True)
    (loop / "sub" / "up").symlink_to(loop, target_is_directory=True)
    found: dict = {}
    worker = threading.Thread(target=lambda: found.update(paths=glob_files(str(loop / "**" / "*.png"))), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the glob did not end"
    assert sorted(p.name for p in found["paths"]) == ["a.png", "b.png"]
    items, failures, _ = collect_inputs([str(loop / "**" / "*.png")])
    assert sorted(i.path.name for i in items) == ["a.png", "b.png"] and not failures


def test_heic_and_avif_are_found_in_folders(tmp_path):
    for name in ("x.avif", "y.heic", "z.HEIF"):
        (tmp_path / name).write_bytes(b"\x00")
    items, _, _ = collect_inputs([str(tmp_path)])
    assert sorted(i.path.name for i in items) == ["x.avif", "y.heic", "z.HEIF"]


HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


def test_heic_without_pillow_heif_names_the_package(tmp_path):
    path = tmp_path / "phone.heic"
    path.write_bytes(HEIC_HEADER)
    code = ("import sys; sys.modules['pillow_heif'] = None\n"  # as if pillow-heif were not installed
            "from fixative.files.images import load_image\n"
            f"try:\n    load_image({str(path)!r})\nexcept Exception as exc:\n    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert "pillow-heif" in run.stdout and "HEIC" in run.stdout and str(path) in run.stdout, run.stdout + run.stderr


def test_heic_is_read_where_pillow_heif_is_installed(tmp_path):
    if not corpus.heif_plugin():
        pytest.skip("pillow-heif is not installed here (the 'heif' extra)")
    from fixative.files.images import load_image

    Image.fromarray(corpus.rgb8(3), "RGB").save(tmp_path / "p.heic", quality=95)
    assert load_image(tmp_path / "p.heic").size == (corpus.H, corpus.W)


# --- 4: the output folder and missing inputs, checked before any image is computed ------------------


def test_out_that_is_a_file_or_under_a_file(tmp_path, tiny_models, art, target, caplog):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    for out, words in ((blocker, "is a file, not a folder"), (blocker / "sub", "cannot be created")):
        caplog.clear()
        assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out)) == 2
        errors = _errors(caplog)
        assert len(errors) == 1 and words in errors[0] and str(out) in errors[0], errors
    assert blocker.read_text() == "mine"


def test_a_missing_input_is_reported_once_and_no_folder_is_made(tmp_path, tiny_models, target, caplog):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(tmp_path / "nothere.png"), "--target", str(target), "--out", str(out)) == 2
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("nothere.png") == 1 and "no such file" in text
    assert not out.exists()


def test_an_unwritable_output_folder_fails_before_any_image(tmp_path, tiny_models):
    """Run as an ordinary user (root writes anywhere): a read-only --out is named at once, nothing computed."""
    base = Path(tempfile.mkdtemp(prefix="fixative-ro-"))
    try:
        base.chmod(0o755)
        shutil.copytree(tiny_models, base / "models")
        art = base / "art"
        art.mkdir()
        Image.fromarray(corpus.rgb8(0), "RGB").save(art / "a.png")
        Image.fromarray(corpus.rgb8(1), "RGB").save(base / "t.png")
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        for p in base.rglob("*"):
            if p != ro:
                p.chmod(0o755 if p.is_dir() else 0o644)
        argv = [sys.executable, "-m", "fixative", "protect", str(art), "--target", str(base / "t.png"),
                "--out", str(ro), *tiny_protect_args(base / "models")]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: cannot make a folder unwritable")
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        env = {**subprocess_env(), "HOME": str(base)}
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=base)
        assert run.returncode == 2, run.stderr
        assert "cannot write files there" in run.stderr and str(ro) in run.stderr
        assert "Traceback" not in run.stderr and list(ro.iterdir()) == []
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# --- 5: malformed records and index entries ------------------------------------------------------------


def test_malformed_records_and_index_entries_are_named_never_a_crash(tmp_path, tiny_models, art, target, capsys):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out)) == 0
    index = json.loads((out / INDEX_NAME).read_text())
    index["entries"]["ghost.png"] = "not an entry"
    (out / INDEX_NAME).write_text(json.dumps(index))
    record = json.loads((out / "a1.json").read_text())
    record["input"] = "x"  # a field of the wrong type
    (out / "a1.json").write_text(json.dumps(record))
    Image.fromarray(corpus.rgb8(7), "RGB").save(out / "strange.png")
    (out / "strange.json").write_text("{not json")
    (out / "list.json").write_text("[1, 2]")  # an unrelated JSON file: not ours, not reported
    saved = corpus.snapshot(out)

    report = verify(out)
    problems = {(p.kind, p.name): p.detail for p in report.problems}
    assert "input" in problems[("tampered", "a1.json")]
    assert any(k == ("tampered", INDEX_NAME) and "ghost.png" in d for k, d in problems.items())
    assert ("foreign", "strange.json") in problems
    assert not any(name == "list.json" for _, name in problems)
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "TAMPERED: a1.json" in printed and "FOREIGN: strange.json" in printed

    # protecting into that folder goes on: the image whose record (listed in the index) is damaged is redone,
    # the damaged index entry is dropped (a copy of the index as it was is kept), the user's files are untouched
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out)) == 0
    after = corpus.snapshot(out)
    for name in ("strange.json", "strange.png", "list.json"):
        assert after[name] == saved[name]
    assert not (out / "a1_2.png").exists() and json.loads(after["a1.json"])["input"]["name"] == "a1.png"
    kept = list(out.glob(f"{INDEX_NAME}.damaged-*"))
    assert len(kept) == 1 and "ghost.png" in kept[0].read_text()
    problems = {(p.kind, p.name) for p in verify(out).problems}
    assert problems == {("foreign", "strange.json"), ("unrecorded", "strange.png")}  # the user's own files


# --- 6: stale index entries, tampered records and orphaned temporaries -------------------------------------


def test_a_stale_index_entry_is_repaired_by_redoing_the_image(tmp_path, tiny_models, art, target, capsys):
    out = tmp_path / "out"
    first = ["--target", str(target), "--out", str(out), "--budget", "0.05"]
    assert _protect(tiny_models, str(art), *first) == 0
    stale = (out / INDEX_NAME).read_bytes()
    second = ["--target", str(target), "--out", str(out), "--budget", "0.04"]
    assert _protect(tiny_models, str(art), *second) == 0
    (out / INDEX_NAME).write_bytes(stale)  # as if killed after the re-protected files, before their index entries
    assert any(p.detail.endswith(f"differs from {INDEX_NAME}") for p in verify(out).problems)

    assert _protect(tiny_models, str(art), *second, "--json") == 0
    statuses = [i["status"] for i in json.loads(capsys.readouterr().out)["images"]]
    assert statuses == ["done"] * 3  # redone, not "already done" for ever
    assert verify(out).ok


def test_a_tampered_record_is_never_re_blessed(tmp_path, tiny_models, art, target, capsys):
    out = tmp_path / "out"
    args = ["--target", str(target), "--out", str(out)]
    assert _protect(tiny_models, str(art), *args) == 0
    record = json.loads((out / "a0.json").read_text())
    true_lpips = record["metrics"]["lpips"]
    record["metrics"]["lpips"] = 0.0  # a forged figure, the record still well formed
    (out / "a0.json").write_text(json.dumps(record, indent=2))
    assert not verify(out).ok
    assert _protect(tiny_models, str(art), *args, "--json") == 0
    images = {Path(i["input"]).name: i["status"] for i in json.loads(capsys.readouterr().out)["images"]}
    assert images == {"a0.png": "done", "a1.png": "skipped", "a2.png": "skipped"}
    assert json.loads((out / "a0.json").read_text())["metrics"]["lpips"] == pytest.approx(true_lpips, abs=1e-6)
    assert verify(out).ok


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temporaries_of_runs_that_are_gone_are_removed(tmp_path):
    dest = tmp_path / "x.png"
    live = tmp_path / f".x.png.{_host()}.{os.getppid()}.aaaaaaaa.part"
    dead = tmp_path / f".x.png.{_host()}.{_dead_pid()}.bbbbbbbb.part"
    remote = tmp_path / ".x.png.othermachine.123.cccccccc.part"
    old_remote = tmp_path / ".x.png.othermachine.124.dddddddd.part"
    for p in (live, dead, remote, old_remote):
        p.write_bytes(b"half")
    os.utime(old_remote, (time.time() - 2 * 3600, time.time() - 2 * 3600))
    assert remove_stale_temporaries(dest) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, remote.name])
    atomic_write(dest, b"data")  # its own temporary is named after this process, then renamed away
    assert dest.read_bytes() == b"data" and live.exists()


def test_a_rerun_removes_orphaned_temporaries(tmp_path, tiny_models, art, target):
    out = tmp_path / "out"
    args = ["--target", str(target), "--out", str(out)]
    assert _protect(tiny_models, str(art), *args) == 0
    orphan = out / f".a0.png.{_host()}.{_dead_pid()}.zzzzzzzz.part"
    orphan.write_bytes(b"half")
    assert [p.kind for p in verify(out).problems] == ["partial"]
    assert _protect(tiny_models, str(art), *args) == 0
    assert not orphan.exists() and verify(out).ok


# --- 7: two runs at once on one folder --------------------------------------------------------------------


def test_two_concurrent_runs_on_one_folder_never_delete_each_others_files(tmp_path, tiny_models, target):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(corpus.rgb8(i), "RGB").save(folder / f"c{i}.png")
    before = corpus.snapshot(folder)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "fixative", "protect", str(folder), "--target", str(target), "--out", str(out),
            *tiny_protect_args(tiny_models, steps=3)]
    runs = [subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(r.wait(timeout=600), r.stderr.read()) for r in runs]
    for code, err in results:
        assert code == 0 and "Traceback" not in err and "unexpected error" not in err, err
    assert main(["protect", *args[4:]]) == 0  # a rerun settles whatever the race left
    assert verify(out).ok and corpus.snapshot(folder) == before
    assert sorted(p.name for p in out.glob("*.png")) == [f"c{i}.png" for i in range(4)]


# --- 8: a renamed record ------------------------------------------------------------------------------------


def test_a_renamed_record_fails_verify_and_a_rerun_gives_its_name_back(tmp_path, tiny_models, art, target):
    out = tmp_path / "out"
    args = ["--target", str(target), "--out", str(out)]
    assert _protect(tiny_models, str(art), *args) == 0
    (out / "a0.json").rename(out / "zzz.json")
    problems = {(p.kind, p.name) for p in verify(out).problems}
    assert ("tampered", "zzz.json") in problems
    assert _protect(tiny_models, str(art), *args) == 0
    assert (out / "a0.json").is_file() and not (out / "zzz.json").exists() and not (out / "a0_2.png").exists()
    assert verify(out).ok


# --- 9: the target -----------------------------------------------------------------------------------------


def test_a_target_equal_to_the_input_is_refused_up_front(tmp_path, tiny_models, art, target, caplog):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art / "a0.png"), "--target", str(art / "a0.png"), "--out", str(out)) == 2
    assert any("towards itself" in e for e in _errors(caplog))
    assert not out.exists()  # refused before anything is made, the output folder included
    caplog.clear()
    shutil.copy(target, art / "target.png")  # the target among the inputs: that one fails, the others go on
    Image.open(target).save(art / "same_pixels.bmp")
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out)) == 1
    errors = _errors(caplog)
    assert any("target.png" in e and "the --target itself" in e for e in errors)
    assert any("same_pixels.bmp" in e and "same pixels" in e for e in errors)
    assert all((out / f"a{i}.png").is_file() for i in range(3))


def test_a_corrupt_target_is_reported_once_before_any_image(tmp_path, tiny_models, art, caplog):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--target", str(bad), "--out", str(out)) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "--target" in errors[0] and str(bad) in errors[0]
    assert not out.exists()


# --- 10: SIGTERM --------------------------------------------------------------------------------------------


def test_sigterm_says_what_was_saved_and_loses_nothing(tmp_path, tiny_models, target):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(corpus.rgb8(i, 48, 64), "RGB").save(folder / f"t{i}.png")
    out = tmp_path / "out"
    args = [str(folder), "--target", str(target), "--out", str(out), *tiny_protect_args(tiny_models, steps=40)]
    # the fault-injection point of ``fixative protect``: SIGTERM at the 5th search step of the 2nd image
    proc = subprocess.Popen([sys.executable, "-m", "fixative", "protect", *args],
                            env={**subprocess_env(), FAULT_ENV: "1:5:TERM"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "saved in" in err and "rerun the same command" in err
    assert "Traceback" not in err and not list(out.rglob("*.part"))
    assert main(["protect", *args]) == 0
    assert verify(out).ok


# --- records without absolute paths ------------------------------------------------------------------------


def _absolute(value) -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in ([v] if k in ("path", "source") and isinstance(v, str)
                                                       and os.path.isabs(v) else _absolute(v))]
    if isinstance(value, list):
        return [p for v in value for p in _absolute(v)]
    return []


def test_records_hold_relative_paths_unless_asked(tmp_path, tiny_models, art, target):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art / "a0.png"), "--target", str(target), "--out", str(out)) == 0
    record = json.loads((out / "a0.json").read_text())
    assert record["input"]["path"] == "../art/a0.png"
    assert not _absolute({k: record[k] for k in ("input", "output", "target", "models")})
    assert recorded_path(record["input"]["path"], out) == (art / "a0.png").resolve()
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["entries"]["a0.png"]["input"] == "../art/a0.png"

    out2 = tmp_path / "out2"
    assert _protect(tiny_models, str(art / "a0.png"), "--target", str(target), "--out", str(out2),
                    "--absolute-paths") == 0
    record = json.loads((out2 / "a0.json").read_text())
    assert record["input"]["path"] == str((art / "a0.png").resolve())
    assert record["target"]["path"] == str(target.resolve())


# --- weights never loaded unsafely, and never advised to be ----------------------------------------------------


def test_a_pickle_with_code_is_refused_without_unsafe_advice(tmp_path):
    import torch

    from fixative.errors import FixativeError
    from fixative.models.taesd import read_state_dict

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"0.weight": Payload()}, path)
    with pytest.raises(FixativeError) as caught:
        read_state_dict(path)
    text = str(caught.value)
    assert str(path) in text and "could run code" in text
    assert "weights_only" not in text and "trusted source" not in text
    assert not marker.exists()


# --- the desktop app: Host and Origin, made targets' cache --------------------------------------------------


def test_host_guard_reasons():
    from fixative.gui.guard import HostGuard

    guard = HostGuard(loopback=True, port=7860)
    assert guard.reason("127.0.0.1:7860", None) is None
    assert guard.reason("localhost:7860", "http://localhost:7860") is None
    assert guard.reason("[::1]:7860", None) is None
    assert "not this app's address" in guard.reason("evil.example:7860", "http://evil.example:7860")
    assert "port" in guard.reason("127.0.0.1:9999", None)
    assert "another site" in guard.reason("127.0.0.1:7860", "http://evil.example")
    assert guard.reason("127.0.0.1:7860", "null")
    lan = HostGuard(loopback=False, port=7860)
    assert lan.reason("192.168.1.5:7860", "http://192.168.1.5:7860") is None
    assert "another site" in lan.reason("192.168.1.5:7860", "http://evil.example")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_refuses_other_hosts_and_cross_origin_uploads(tmp_path, tiny_taef2_models):
    import httpx

    from fixative.gui.app import AppConfig, launch

    saved = os.environ.get("GRADIO_TEMP_DIR")
    config = AppConfig(models_dir=tiny_taef2_models, device="cpu", root=tmp_path / "app")
    demo, url = launch(config, port=_free_port(), open_browser=False, block=False, quiet=True)
    try:
        port = demo.server_port
        assert httpx.get(url, timeout=30).status_code == 200
        rebound = httpx.get(url, headers={"Host": f"evil.example:{port}"}, timeout=30)
        assert rebound.status_code == 403 and "not this app's address" in rebound.text
        upload = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": ("a.png", b"x")},
                            headers={"Origin": "http://evil.example"}, timeout=30)
        assert upload.status_code == 403 and "another site" in upload.text
        same = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": ("a.png", b"x")},
                          headers={"Origin": url.rstrip("/")}, timeout=30)
        assert same.status_code == 200
        bench = demo.fixative_bench
        assert bench.target_cache == bench.root / "targets"  # made targets deleted with the temporary folder
    finally:
        demo.close()
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved


def test_eval_pairs_read_relative_target_paths_from_records(tmp_path, tiny_models, art, target):
    from fixative.eval.pairs import find_pairs

    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out)) == 0
    pairs, _ = find_pairs(art, out)
    assert {p.target for p in pairs} == {target.resolve()}


