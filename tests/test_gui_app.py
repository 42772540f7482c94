"""The desktop app served for real: a gradio_client run (bytes of the download vs the command line's),
two clients at once (queued, one job at a time), a real browser (Debian's chromium driven by
Playwright: upload, protect, screenshot, download), and `fixative gui` itself (bound to 127.0.0.1
only; its temporary folder gone after it stops)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from corpus import rgb8
from PIL import Image

from fixative.cli.main import main

pytest.importorskip("gradio", reason="the desktop app needs the gui extra (pip install 'fixative[gui]')")

CHROMIUM = "/usr/bin/chromium"
LIMIT = 2 * 1024 * 1024  # the served app's upload limit in these tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(path: Path, size: tuple[int, int] = (192, 256), seed: int = 0) -> Path:
    """A real photo from ../shared/images when there is one (nicer screenshots), else a made picture."""
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "LadyBird.jpg"
    if shared.is_file():
        with Image.open(shared) as im:
            im.convert("RGB").resize((size[1], size[0]), Image.Resampling.LANCZOS).save(path)
    else:
        Image.fromarray(rgb8(seed, *size)).save(path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_taef2_models):
    """The app on 127.0.0.1 and a free port, on the tiny taef2 models, for this module's tests."""
    from fixative.gui.app import AppConfig, launch

    saved = os.environ.get("GRADIO_TEMP_DIR")
    root = tmp_path_factory.mktemp("gui-app")
    config = AppConfig(models_dir=tiny_taef2_models, device="cpu", root=root, max_file_bytes=LIMIT)
    demo, url = launch(config, port=_free_port(), open_browser=False, block=False, quiet=True)
    yield demo, url, demo.fixative_bench
    demo.close()
    if saved is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = saved


def _inputs(files, *, mode="immunize", target=None, steps=3, seed=0):
    """The /protect endpoint's inputs: files, then the settings in the order of fixative.gui.events.setting_inputs."""
    return (files, mode, target, "auto", "", "", "away", "medium", "standard", "generic", "taef2", seed, "cpu", "fp32",
            steps, None, "", "", True, "ai-training")


def test_client_download_is_byte_identical_to_the_command_line(served, tmp_path, tiny_taef2_models):
    from gradio_client import Client, handle_file

    _, url, _ = served
    art, target = _photo(tmp_path / "art.png"), tmp_path / "target.png"
    Image.fromarray(rgb8(5, 64, 64)).save(target)
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    out = client.predict(*_inputs([handle_file(str(art))], mode="cloak", target=handle_file(str(target)), seed=7),
                         api_name="/protect")
    message, downloads, zipped = out[2], out[10], out[11]
    assert "Protected 1 image" in message
    downloaded = Path(downloads[0])
    assert str(downloaded).startswith(str(tmp_path / "downloads"))  # fetched over HTTP, not read on the server

    cli = tmp_path / "cli"
    assert main(["protect", str(art), "--out", str(cli), "--mode", "cloak", "--target", str(target), "--steps", "3",
                 "--seed", "7", "--encoder", "taef2", "--models-dir", str(tiny_taef2_models), "--device", "cpu",
                 "--precision", "fp32", "-q"]) == 0
    assert downloaded.read_bytes() == (cli / "art.png").read_bytes()
    with zipfile.ZipFile(zipped) as zf:
        assert zf.read("art.png") == (cli / "art.png").read_bytes() and "art.json" in zf.namelist()
    assert "**Visible change**" in out[9] and Path(out[4][0]).suffix == ".png"  # metrics; PNG comparison

    big = tmp_path / "big.png"  # over the upload limit: the server refuses it, and then works on
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(LIMIT + 1024))
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        client.predict(*_inputs([handle_file(str(big))]), api_name="/protect")
    again = client.predict(*_inputs([handle_file(str(art))]), api_name="/protect")
    assert "Protected 1 image" in again[2]


def test_two_clients_at_once_are_queued(served, tmp_path, monkeypatch):
    """A second client's job, sent while the first one runs, waits in the queue: driven by events, no sleeps.

    The first job is held at its start (a hook around the app's run_job) until the server's queue has taken
    in the second one (a hook on the queue's push); only then does it run. Had the queue let the second through,
    it would be inside run_job at the same time (peak 2)."""
    from gradio_client import Client, handle_file

    import fixative.gui.events

    demo, url, _ = served
    real, active, peak, lock = fixative.gui.events.run_job, [0], [0], threading.Lock()
    first_in, second_queued = threading.Event(), threading.Event()

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            first_in.set()
            assert second_queued.wait(120), "the second job never reached the queue"
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    queue, push = demo._queue, demo._queue.push

    async def pushed(*args, **kwargs):  # the server took a job into its queue
        answer = await push(*args, **kwargs)
        if first_in.is_set():
            second_queued.set()
        return answer

    monkeypatch.setattr(fixative.gui.events, "run_job", counting)
    monkeypatch.setattr(queue, "push", pushed)
    art = _photo(tmp_path / "a.png", (64, 64))
    clients = [Client(url, verbose=False, download_files=str(tmp_path / f"d{i}")) for i in range(2)]
    first = clients[0].submit(*_inputs([handle_file(str(art))], steps=20), api_name="/protect")
    assert first_in.wait(120), "the first job never started"
    second = clients[1].submit(*_inputs([handle_file(str(art))], steps=20), api_name="/protect")
    results = [job.result(timeout=120) for job in (first, second)]
    assert all("Protected 1 image" in r[2] for r in results)
    assert second_queued.is_set() and peak[0] == 1


def test_browser_upload_protect_screenshot_download(served, tmp_path):
    """Chromium (Debian's, driven by Playwright): drop an image, protect it, see before/after and metrics."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    _, url, bench = served
    art = _photo(tmp_path / "artwork.png", (288, 384))
    shot = tmp_path / "gui-screenshot.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                    else outside.append(r.url))
            page.goto(url)
            page.locator("#fx-files input[type=file]").set_input_files(str(art))
            expect(page.locator("#fx-upload-note")).to_contain_text("1 image ready", timeout=30_000)
            page.get_by_label("Immunize", exact=True).check()
            page.get_by_text("Advanced options").click()
            page.locator("#fx-steps input").fill("3")
            page.locator("#fx-steps input").press("Tab")
            page.locator("#fx-run").click()
            expect(page.locator("#fx-metrics")).to_contain_text("Visible change", timeout=60_000)
            expect(page.locator("#fx-progress")).to_contain_text("1 of 1 done")
            for view in ("#fx-comparison", "#fx-model-view", "#fx-difference"):  # pictures shown, and loaded
                page.wait_for_function(
                    "sel => { const im = [...document.querySelectorAll(sel + ' img')];"
                    " return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0); }",
                    arg=view, timeout=30_000)
            page.locator("#fx-metrics").scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=True)
            with page.expect_download() as download:
                page.locator("#fx-downloads a").first.click()
            got = Path(download.value.path()).read_bytes()
            # a long job, cancelled from the page: it stops at the next step and says so
            page.locator("#fx-steps input").fill("1000000")
            page.locator("#fx-steps input").press("Tab")
            page.locator("#fx-run").click()
            expect(page.locator("#fx-progress")).to_contain_text("of 1000000", timeout=30_000)
            page.locator("#fx-cancel").click()
            expect(page.locator("#fx-message")).to_contain_text("Cancelled: 1 image not done", timeout=30_000)
        finally:
            browser.close()
    assert not outside, f"the page fetched from elsewhere than the app: {outside[:5]}"  # offline, no trackers
    outputs = sorted(bench.root.glob("jobs/*/out/artwork.png"))
    assert outputs and got == outputs[-1].read_bytes()  # the browser's download is the engine's file, bit-exact
    assert Image.open(shot).size[0] >= 1000
    print(f"\nscreenshot: {shot}")
    keep = os.environ.get("FIXATIVE_GUI_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
        print(f"screenshot copied to {keep}")


def test_artist_screen_defaults_protect_with_no_diffusion_model(served, tmp_path):
    """On a 1366x768 screen the Protect button is visible without scrolling; the defaults (style cloak, built-in
    style) protect a dropped image with no diffusion model; the page shows the equivalent command, full paths."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    _, url, bench = served
    art = _photo(tmp_path / "drawing.png", (120, 160), seed=2)
    shot = tmp_path / "gui-1366x768.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url)
            run = page.locator("#fx-run")
            expect(run).to_be_visible(timeout=30_000)
            box = run.bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 768, box  # no scrolling
            page.locator("#fx-files input[type=file]").set_input_files(str(art))
            expect(page.locator("#fx-upload-note")).to_contain_text("1 image ready", timeout=30_000)
            page.get_by_text("Advanced options").click()  # only to keep the test short: 3 steps
            page.locator("#fx-steps input").fill("3")
            page.locator("#fx-steps input").press("Tab")
            page.evaluate("window.scrollTo(0, 0)")
            run.click()
            from fixative.targets.patterns import DEFAULT_RESTYLE

            expect(page.locator("#fx-metrics")).to_contain_text(f"the built-in '{DEFAULT_RESTYLE}'", timeout=90_000)
            expect(page.locator("#fx-command")).to_contain_text("fixative protect /")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    record = sorted(bench.root.glob("jobs/*/out/drawing.json"))[-1]
    import json

    data = json.loads(record.read_text())
    assert data["mode"] == "cloak" and data["target"]["kind"] == "code" and data["target"]["model"] is None
    keep = os.environ.get("FIXATIVE_GUI_SCREENSHOT_1366")
    if keep:
        shutil.copyfile(shot, keep)


def _listening(port: int) -> list[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                if len(address) == 8:
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.append(address)
    return found


def _outside_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 1))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_fixative_gui_listens_on_loopback_only_and_cleans_up(tmp_path, tiny_taef2_models):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    # `fixative gui`, after checking that registering the command and importing the gui modules load no gradio
    code = (
        "import sys\n"
        "from fixative.cli.main import _build_parser, main\n"
        "_build_parser()\n"
        "import fixative.gui.app, fixative.gui.events, fixative.gui.job, fixative.gui.views\n"
        "assert 'gradio' not in sys.modules, 'importing the gui modules imported gradio'\n"
        f"sys.exit(main(['gui', '--no-browser', '--port', '{port}', '--models-dir', sys.argv[1]]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tiny_taef2_models)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, "fixative gui did not start"
            time.sleep(0.2)
        assert set(_listening(port)) == {"127.0.0.1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        outside = _outside_address()
        if outside:
            with pytest.raises(OSError), socket.create_connection((outside, port), timeout=5):
                pass
        assert list(tmp_path.glob("fixative-gui-*"))  # its temporary folder exists while it runs
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert proc.returncode == 0, output
    assert not list(tmp_path.glob("fixative-gui-*")), "the temporary folder was left behind"
    assert "Traceback" not in output
