"""The first run: the default target made by code, `fixative models list/fetch` (downloads from a local HTTP
server on 127.0.0.1: resume, a wrong checksum refused), the expected time printed up front, `--help` without
torch, and "did you mean" for a mistyped option."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import corpus
import pytest
import torch
from PIL import Image

from fixative.cli.main import main
from fixative.models import catalog
from fixative.models.builtin import BUILTIN_DIR, BUILTIN_FILES
from fixative.models.download import DownloadError, fetch_url
from fixative.targets.patterns import RESTYLES, restyle
from fixative.userdirs import user_models_dir

from tiny import subprocess_env, tiny_protect_args

# --- the default target --------------------------------------------------------------------------------------


def test_restyle_keeps_size_range_and_is_deterministic():
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    for name in RESTYLES:
        t = restyle(x, name)
        assert t.shape == x.shape and t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
        assert torch.equal(t, restyle(x.clone(), name))  # same pixels, same target
        assert (t - x).abs().mean() > 0.1  # a different picture, not the image itself
    with pytest.raises(Exception, match="unknown code-made target"):
        restyle(x, "oils")


# --- downloads: a local HTTP server --------------------------------------------------------------------------


class _Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with HTTP Range support; records each request's Range."""

    def __init__(self, files: dict[str, bytes], *, honour_range: bool = True):
        self.files, self.ranges = files, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                asked = self.headers.get("Range")
                server.ranges.append(asked)
                start = int(asked.split("=")[1].split("-")[0]) if asked and honour_range else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_checks_the_pin_and_resumes(tmp_path):
    with _Server({"/w.pth": PAYLOAD}) as srv:
        dest = tmp_path / "models" / "taesd" / "w.pth"
        assert fetch_url(f"{srv.url}/w.pth", dest, PAYLOAD_SHA, progress=False) == dest
        assert dest.read_bytes() == PAYLOAD and srv.ranges == [None]
        # interrupted earlier: the part is resumed with a Range request, not fetched again
        dest2 = tmp_path / "again.pth"
        (tmp_path / "again.pth.part").write_bytes(PAYLOAD[:100_000])
        fetch_url(f"{srv.url}/w.pth", dest2, PAYLOAD_SHA, progress=False)
        assert dest2.read_bytes() == PAYLOAD and srv.ranges[-1] == "bytes=100000-"
        assert not (tmp_path / "again.pth.part").exists()
        # a file that does not match its pin is refused and deleted
        bad = tmp_path / "bad.pth"
        with pytest.raises(DownloadError, match="not the pinned"):
            fetch_url(f"{srv.url}/w.pth", bad, "0" * 64, progress=False)
        assert not bad.exists() and not bad.with_name("bad.pth.part").exists()
        with pytest.raises(DownloadError, match="404"):
            fetch_url(f"{srv.url}/missing.pth", tmp_path / "m.pth", PAYLOAD_SHA, progress=False)
    with _Server({"/w.pth": PAYLOAD}, honour_range=False) as srv:  # a server that cannot resume: start over
        dest3 = tmp_path / "third.pth"
        (tmp_path / "third.pth.part").write_bytes(b"garbage")
        fetch_url(f"{srv.url}/w.pth", dest3, PAYLOAD_SHA, progress=False)
        assert dest3.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="only https"):
        fetch_url("http://example.com/w.pth", tmp_path / "x.pth", PAYLOAD_SHA, progress=False)


def test_models_fetch_and_list(tmp_path, monkeypatch, capsys, caplog):
    """`fixative models fetch` puts a file into the per-user folder; `list` then shows it there, with its SHA-256."""
    from dataclasses import replace

    model = catalog.MODELS["taesana"]
    with _Server({"/taesana_encoder.pth": PAYLOAD}) as srv:
        remote = replace(model.files[0], url=f"{srv.url}/taesana_encoder.pth", sha256=PAYLOAD_SHA)
        monkeypatch.setitem(catalog.MODELS, "taesana", replace(model, files=(remote,)))
        assert main(["models", "fetch", "taesana", "-q"]) == 0
    got = user_models_dir() / "taesd" / "taesana_encoder.pth"
    assert got.read_bytes() == PAYLOAD
    assert main(["models", "list", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["taesana"]["found"] and listed["taesana"]["origin"] == "per-user models folder"
    assert listed["taesana"]["files"][0]["sha256"] == PAYLOAD_SHA
    # the built-in defaults: found, in the package, with their pinned SHA-256 and licences
    for name, rel in (("taef2", "taesd/taef2_encoder.pth"), ("lpips-alex", "lpips/alexnet_features.safetensors")):
        row = listed[name]
        assert row["found"] and row["origin"] == "built-in" and row["builtin"]
        assert row["files"][0]["path"] == str(BUILTIN_DIR / rel)
        assert row["files"][0]["sha256"] == BUILTIN_FILES[rel].sha256
    assert listed["taef2"]["licence"].startswith("MIT") and listed["lpips-alex"]["licence"] == "BSD"
    assert not listed["sd15"]["found"] and "stable-diffusion-v1-5" in listed["sd15"]["fetch"]
    assert set(listed) == set(catalog.MODELS)
    # a built-in model needs no download; an unknown name gets a suggestion; offline, the hub is not tried
    assert main(["models", "fetch", "taef2", "-q"]) == 0
    assert main(["models", "fetch", "taef3"]) == 2
    assert "did you mean taef2" in caplog.text
    assert main(["models", "fetch", "sd15", "-q"]) == 1  # conftest sets HF_HUB_OFFLINE=1
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert str(user_models_dir()) in text and "taesana" in text


# --- time up front, and the command line's manners ------------------------------------------------------------


def test_expected_time_is_printed_and_cached(tmp_path, tiny_models, caplog):
    from fixative.batch.timing import StepSpeed, cache_file

    art = tmp_path / "art.png"
    Image.fromarray(corpus.rgb8(1)).save(art)
    target = tmp_path / "target.png"  # another picture: a target equal to the input is refused up front
    Image.fromarray(corpus.rgb8(2)).save(target)
    args = [str(art), "--target", str(target), "--out", str(tmp_path / "out"), *tiny_protect_args(tiny_models, 20)]
    args.remove("-q")
    with caplog.at_level("INFO", logger="fixative"):
        assert main(["protect", *args]) == 0
    assert "measuring this machine's speed" in caplog.text and "expected time per image" in caplog.text
    assert cache_file().is_file()
    caplog.clear()
    with caplog.at_level("INFO", logger="fixative"):
        assert main(["protect", *args, "--seed", "1"]) == 0
    assert "measuring" not in caplog.text and "expected time per image" in caplog.text and "cached in" in caplog.text
    speed = StepSpeed(2.0, 1_000_000, "now")
    assert speed.seconds_for(1_000_000, 300, None) == 600 and speed.seconds_for(1_000_000, 300, 60) == 60
    assert speed.seconds_for(2_000_000, 10, None) == 40


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["protect", "--help"], ["verify", "DIR"], ["models", "--help"],
                                  ["gui", "--help"]])
def test_help_and_verify_do_not_import_torch(argv, tmp_path):
    if argv == ["verify", "DIR"]:
        argv = ["verify", str(tmp_path)]
    done = _run(f"import sys\nfrom fixative.cli.main import main\n"
                f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
                "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    assert done.stdout.strip().endswith("NO-TORCH"), done.stdout[-500:] + done.stderr[-2000:]


def test_mistyped_options_get_a_suggestion(tmp_path, capsys):
    for argv, hint in ((["protect", "a.png", "--out", str(tmp_path), "--stpes", "3"], "--stpes -> --steps"),
                       (["protect", "a.png", "--out", str(tmp_path), "--mode", "clok"], "did you mean 'cloak'?"),
                       (["protcet", "a.png"], "did you mean 'protect'?"),
                       (["models", "lsit"], "did you mean 'list'?")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert hint in capsys.readouterr().err, argv
