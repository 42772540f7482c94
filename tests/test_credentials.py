"""Content Credentials and the opt-out: identity, signing every format, verification, tampering, no network."""

import base64
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import xml.dom.minidom
from pathlib import Path

import corpus
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from fixative.cli.main import main
from fixative.errors import ConfigError
from fixative.provenance.identity import create_identity, default_identity_dir, load_identity, make_chain
from fixative.provenance.optout import OPT_OUTS, PLUS_VOCAB, get_opt_out, read_opt_out, with_opt_out

from tiny import subprocess_env, tiny_protect_args

XMP = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:pl="http://ns.useplus.org/ldf/xmp/1.0/" pl:DataMining="http://ns.useplus.org/ldf/vocab/DMI-ALLOWED">'
    "<dc:creator><rdf:Seq><rdf:li>Ada Artist</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF>"
    '</x:xmpmeta><?xpacket end="w"?>'
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def identity(private_config_dir):
    return create_identity("Ada Artist")


@pytest.fixture
def art(tmp_path) -> Path:
    """An RGB PNG with EXIF (artist), an ICC profile and XMP (a creator, and an earlier 'allowed' statement)."""
    path = tmp_path / "in" / "art.png"
    path.parent.mkdir()
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt("XML:com.adobe.xmp", XMP)
    Image.fromarray(corpus.rgb8(3), "RGB").save(path, pnginfo=meta, exif=corpus.exif_bytes(1),
                                                icc_profile=corpus.srgb_icc())
    return path


def _protect(models: Path, *args: str) -> int:
    return main(["protect", *args, *tiny_protect_args(models, 2)])


def _verify(folder: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", str(folder), *extra])
    return code, capsys.readouterr().out


def _reader_json(path: Path) -> dict:
    """The c2pa library's own Reader, offline settings (no remote manifests, no OCSP)."""
    import c2pa

    settings = c2pa.Settings.from_dict({"version": 1, "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    with open(path, "rb") as fh, c2pa.Reader(_MIME[path.suffix], fh, context=c2pa.Context(settings)) as reader:
        return json.loads(reader.json())


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".tif": "image/tiff"}


# --- identity -----------------------------------------------------------------------------------


def test_identity_create_is_private_has_c2pa_extensions_and_loads(private_config_dir, capsys):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    assert main(["identity", "create", "--name", "Ada Artist"]) == 0
    folder = default_identity_dir()
    assert folder.parent == private_config_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    assert "identity created: Ada Artist" in capsys.readouterr().out
    ident = load_identity(folder)
    leaf, root = x509.load_pem_x509_certificates(ident.chain_pem.encode())
    assert ident.alg == "es256" and ident.name == "Ada Artist" and leaf.issuer == root.subject
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    # never replaced by accident; a second identity has another key (nothing is built in)
    assert main(["identity", "create", "--name", "Someone"]) == 2
    assert main(["identity", "create", "--name", "Ada Artist", "--force"]) == 0
    assert load_identity(folder).key_pem != ident.key_pem
    assert main(["identity", "show"]) == 0 and "Ada Artist" in capsys.readouterr().out


def test_identity_from_one_pem_file_and_a_key_that_does_not_match(tmp_path):
    key, chain = make_chain("Studio")
    other_key, _ = make_chain("Other")
    single = tmp_path / "studio.pem"
    single.write_text(chain + key)
    assert load_identity(single).name == "Studio"
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(chain + other_key)
    with pytest.raises(ConfigError, match="does not belong"):
        load_identity(wrong)
    with pytest.raises(ConfigError, match="no such identity"):
        load_identity(tmp_path / "absent")


# --- the opt-out in XMP ---------------------------------------------------------------------------


def test_opt_out_levels_replace_an_earlier_statement_and_keep_the_rest():
    for level, opt in OPT_OUTS.items():
        xmp = with_opt_out(XMP.encode(), opt)
        text = xmp.decode()
        assert read_opt_out(xmp) == opt.iptc_uri and "DMI-ALLOWED" not in text
        assert "<rdf:li>Ada Artist</rdf:li>" in text  # the rest of the carried XMP
        assert ("plus:OtherConstraints" in text) == (level != "none")
        xml.dom.minidom.parseString(text[text.index("<x:xmpmeta"): text.index("<?xpacket end")])
    assert read_opt_out(with_opt_out(None, get_opt_out("gen-ai"))) == PLUS_VOCAB + "DMI-PROHIBITED-GENAIMLTRAINING"
    other_prefix = XMP.replace("rdf:", "r:").replace("xmlns:rdf=", "xmlns:r=")
    text = with_opt_out(other_prefix.encode(), get_opt_out("ai-training")).decode()
    assert "<r:Description r:about" in text and "<r:li>Ada Artist</r:li>" in text
    xml.dom.minidom.parseString(text[text.index("<x:xmpmeta"): text.index("<?xpacket end")])
    assert get_opt_out("all").cawg_entries() == {f"cawg.{u}": {"use": "notAllowed"} for u in
                                                 ("ai_training", "ai_generative_training", "data_mining",
                                                  "ai_inference")}
    assert get_opt_out("none").cawg_entries() == {}
    with pytest.raises(ConfigError):
        get_opt_out("maybe")


# --- every format signed, read by c2pa's own Reader, verified; metadata survive ------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_every_format_signed_read_by_c2pa_and_verified(tmp_path, tiny_models, identity, art, target, fmt, capsys):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out), "--format", fmt) == 0
    path = next(p for p in out.iterdir() if p.stem == "art" and p.suffix != ".json")
    record = json.loads((out / "art.json").read_text())
    store = _reader_json(path)
    manifest = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    assert [s["code"] for s in store.get("validation_status", [])] == ["signingCredential.untrusted"]
    assert manifest["signature_info"]["common_name"] == "Ada Artist"
    actions = assertions["c2pa.actions.v2"]["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["softwareAgent"]["name"] == "Fixative"
    assert manifest["ingredients"][0]["relationship"] == "parentOf"
    assert manifest["ingredients"][0]["title"] == "art.png"
    assert "thumbnail" not in manifest["ingredients"][0] and "thumbnail" not in manifest  # no unprotected copy
    assert assertions["cawg.training-mining"]["entries"] == {"cawg.ai_training": {"use": "notAllowed"},
                                                             "cawg.ai_generative_training": {"use": "notAllowed"}}
    protection = assertions["org.fixative.protection"]
    assert protection["mode"] == "cloak" and protection["budget_kind"] == "visibility"
    assert protection["like_jpeg_budget"] == 75 and protection["budget_lpips"] is None  # the default: like a q75 JPEG
    assert protection["flip"] == pytest.approx(record["metrics"]["flip"])
    assert protection["lpips"] == pytest.approx(record["metrics"]["lpips"])
    assert protection["distance_ratio"] == pytest.approx(record["metrics"]["mean_ratio"])
    assert protection["encoders"] == record["encoders"]
    # the record's SHA-256 is that of the signed file
    from fixative.provenance.manifest import sha256_file

    assert record["output"]["sha256"] == sha256_file(path) and record["credentials"]["signer"] == "Ada Artist"
    # metadata carried, and the opt-out added to the XMP
    with Image.open(path) as img:
        img.load()
        xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or img.getexif().get(700)
        xmp = xmp if isinstance(xmp, bytes | str) else bytes(xmp)
        assert read_opt_out(xmp) == PLUS_VOCAB + "DMI-PROHIBITED-AIMLTRAINING"
        assert "Ada Artist" in (xmp.decode() if isinstance(xmp, bytes) else xmp)
        assert img.getexif().get(315) == "Test Artist"
        assert img.info.get("icc_profile")
    code, text = _verify(out, capsys)
    assert code == 0, text
    assert "signed by 'Ada Artist', trusted signer" in text and "index signature: signed by 'Ada Artist'" in text


@pytest.mark.parametrize("name,fmt", [("rgb16_png.png", "png"), ("rgba16_tif.tif", "tiff"), ("rgb_bmp.bmp", "png")])
def test_sixteen_bit_outputs_and_unparseable_originals_are_signed(tmp_path, tiny_models, identity, target, name,
                                                                  fmt, capsys):
    good = corpus.write_good(tmp_path / "in")
    out = tmp_path / "out"
    assert _protect(tiny_models, str(good[name]), "--target", str(target), "--out", str(out), "--format", fmt) == 0
    code, text = _verify(out, capsys)
    assert code == 0 and "1 output(s) signed by 'Ada Artist'" in text, text


# --- tampering ------------------------------------------------------------------------------------


@pytest.fixture
def signed_folder(tmp_path, tiny_models, identity, target) -> Path:
    folder = corpus.write_numbered_pngs(tmp_path / "in")
    out = tmp_path / "signed"
    assert _protect(tiny_models, str(folder), "--target", str(target), "--out", str(out)) == 0
    return out


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(folder, dest)
    return dest


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos:pos + 12 + length]))
        pos += 12 + length
    return chunks


def _strip_png_manifest(data: bytes) -> bytes:
    return data[:8] + b"".join(raw for kind, raw in _png_chunks(data) if kind != b"caBX")


def _problems(folder: Path, capsys) -> set[tuple[str, str]]:
    return _problems_with(folder, capsys)


def _problems_with(folder: Path, capsys, *extra: str) -> set[tuple[str, str]]:
    capsys.readouterr()
    assert main(["verify", str(folder), "--json", *extra]) == 1
    return {(p["kind"], p["name"]) for p in json.loads(capsys.readouterr().out)["problems"]}


def test_one_byte_of_pixels_or_of_the_manifest_is_caught(signed_folder, tmp_path, capsys):
    pixels = _copy(signed_folder, tmp_path, "pixels")
    data = bytearray((pixels / "t0.png").read_bytes())
    idat = next(raw for kind, raw in _png_chunks(bytes(data)) if kind == b"IDAT")
    at = bytes(data).index(idat) + 8 + len(idat) // 2
    data[at] ^= 0x01
    (pixels / "t0.png").write_bytes(bytes(data))
    code, text = _verify(pixels, capsys)
    assert code == 1 and "TAMPERED: t0.png: its bytes no longer match its Content Credentials" in text

    manifest = _copy(signed_folder, tmp_path, "manifest")
    data = (manifest / "t1.png").read_bytes()
    assert data.count(b"cloak") >= 1
    (manifest / "t1.png").write_bytes(data.replace(b"cloak", b"cloaK", 1))  # one byte inside an assertion
    assert ("tampered", "t1.png") in _problems(manifest, capsys)


def test_one_byte_of_the_record_or_of_the_index_is_caught(signed_folder, tmp_path, capsys):
    record = _copy(signed_folder, tmp_path, "record")
    text = (record / "t2.json").read_text()
    (record / "t2.json").write_text(text.replace('"mode": "cloak"', '"mode": "cloaK"', 1))
    assert ("tampered", "t2.json") in _problems(record, capsys)

    index = _copy(signed_folder, tmp_path, "index")
    data = json.loads((index / "fixative-index.json").read_text())
    entry = data["entries"]["t1.png"]
    entry["finished"] = entry["finished"][:-1] + ("1" if entry["finished"][-1] != "1" else "2")
    (index / "fixative-index.json").write_text(json.dumps(data, indent=2) + "\n")
    assert ("tampered", "t1.png") in _problems(index, capsys)

    signature = _copy(signed_folder, tmp_path, "signature")
    envelope = json.loads((signature / "fixative-index.sig").read_text())
    raw = bytearray(base64.b64decode(envelope["index"]))
    raw[len(raw) // 2] ^= 0x01
    envelope["index"] = base64.b64encode(bytes(raw)).decode()
    (signature / "fixative-index.sig").write_text(json.dumps(envelope))
    assert ("tampered", "fixative-index.sig") in _problems(signature, capsys)


def test_a_forger_rewriting_file_record_and_index_together_is_named(signed_folder, tmp_path, capsys):
    """The old weakness: new pixels, a record with their hash, an index with the record's hash."""
    from fixative.provenance.manifest import index_entry, load_index, record_bytes, sha256_bytes

    forged = _copy(signed_folder, tmp_path, "forged")
    buffer = io.BytesIO()
    Image.fromarray(corpus.rgb8(42), "RGB").save(buffer, format="PNG")
    (forged / "t0.png").write_bytes(buffer.getvalue())
    record = json.loads((forged / "t0.json").read_text())
    record["output"]["sha256"] = sha256_bytes(buffer.getvalue())
    record["credentials"] = None
    (forged / "t0.json").write_bytes(record_bytes(record))
    index = load_index(forged)
    index["entries"]["t0.png"] = index_entry(record, "t0.json", sha256_bytes(record_bytes(record)))
    (forged / "fixative-index.json").write_bytes(record_bytes(index))
    # hashes alone (the index signature removed too) no longer pass: the other outputs are signed
    code, text = _verify(forged, capsys)
    assert code == 1 and "TAMPERED: t0.png: its index entry differs from the index signed by 'Ada Artist'" in text
    assert "t1.png" not in text.split("Content Credentials:")[0]
    (forged / "fixative-index.sig").unlink()
    assert ("unsigned", "fixative-index.json") in _problems(forged, capsys)


def test_a_wrong_key_is_caught(signed_folder, tmp_path, tiny_models, target, capsys):
    from fixative.provenance.credentials import sign_index
    from fixative.provenance.identity import load_identity

    # a forger's own identity with the same name re-signs one output and the index
    forger = create_identity("Ada Artist", tmp_path / "forger")
    resigned = _copy(signed_folder, tmp_path, "resigned")
    other = tmp_path / "other-out"
    assert main(["protect", str(tmp_path / "in" / "t0.png"), "--target", str(target), "--out", str(other),
                 "--identity", str(tmp_path / "forger"), *tiny_protect_args(tiny_models, 2)]) == 0
    for name in ("t0.png", "t0.json"):
        shutil.copy(other / name, resigned / name)
    from fixative.provenance.manifest import index_entry, load_index, record_bytes, sha256_file

    index = load_index(resigned)
    record = json.loads((resigned / "t0.json").read_text())
    index["entries"]["t0.png"] = index_entry(record, "t0.json", sha256_file(resigned / "t0.json"))
    data = record_bytes(index)
    (resigned / "fixative-index.json").write_bytes(data)
    sign_index(resigned, data, forger)
    problems = _problems(resigned, capsys)
    assert {("signer", "t1.png"), ("signer", "t2.png")} <= problems  # the genuine outputs disagree with the index
    code, text = _verify(resigned, capsys)
    assert "signed by 'Ada Artist', untrusted signer" in text  # the forger's: not your identity
    # re-signed throughout (all outputs and the index): only trust tells them apart
    for i in (1, 2):
        (resigned / f"t{i}.png").unlink()
        (resigned / f"t{i}.json").unlink()
        del index["entries"][f"t{i}.png"]
    data = record_bytes(index)
    (resigned / "fixative-index.json").write_bytes(data)
    sign_index(resigned, data, forger)
    code, text = _verify(resigned, capsys)
    assert code == 0 and "untrusted signer" in text
    assert {("untrusted", "t0.png"), ("untrusted", "fixative-index.json")} == _problems_with(
        resigned, capsys, "--require-trusted")

    # a signature made with another key than the certificate's
    wrong = _copy(signed_folder, tmp_path, "wrong-key")
    mine = load_identity(default_identity_dir())
    from dataclasses import replace

    sign_index(wrong, (wrong / "fixative-index.json").read_bytes(), replace(mine, key_pem=forger.key_pem))
    assert ("tampered", "fixative-index.sig") in _problems(wrong, capsys)
    # and c2pa refuses to sign a manifest whose key does not match the certificate
    from fixative.provenance.credentials import CredentialsError, sign_image

    with pytest.raises(CredentialsError):
        sign_image((signed_folder / "t0.png").read_bytes(), "png", tmp_path / "in" / "t0.png",
                   replace(mine, key_pem=forger.key_pem), title="t0.png", protection={"mode": "cloak"},
                   opt_out=get_opt_out("ai-training"))


def test_a_stripped_manifest_is_reported_as_stripped(signed_folder, tmp_path, capsys):
    stripped = _copy(signed_folder, tmp_path, "stripped")
    data = (stripped / "t0.png").read_bytes()
    (stripped / "t0.png").write_bytes(_strip_png_manifest(data))
    code, text = _verify(stripped, capsys)
    assert code == 1
    assert "STRIPPED: t0.png: its Content Credentials (signed by 'Ada Artist') were removed; the pixels are the " \
           "protected ones" in text
    assert "TAMPERED: t0.png" not in text


# --- defaults: unsigned without an identity, --no-credentials ---------------------------------------


def test_without_an_identity_outputs_carry_the_opt_out_unsigned(tmp_path, tiny_models, art, target, capsys):
    out = tmp_path / "out"
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(out), "--opt-out", "all") == 0
    record = json.loads((out / "art.json").read_text())
    assert record["credentials"] is None and record["opt_out"]["level"] == "all"
    with Image.open(out / "art.png") as img:
        assert read_opt_out(img.info["XML:com.adobe.xmp"]) == PLUS_VOCAB + "DMI-PROHIBITED"
    assert not (out / "fixative-index.sig").exists()
    code, text = _verify(out, capsys)
    assert code == 0 and "not signed" in text
    # an identity made later: the default signs, --no-credentials does not
    create_identity("Ada Artist")
    signed, unsigned = tmp_path / "signed", tmp_path / "unsigned"
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(signed)) == 0
    assert _protect(tiny_models, str(art), "--target", str(target), "--out", str(unsigned), "--no-credentials") == 0
    assert json.loads((signed / "art.json").read_text())["credentials"]["signer"] == "Ada Artist"
    assert json.loads((unsigned / "art.json").read_text())["credentials"] is None


def test_signing_and_verifying_use_no_network(tmp_path, tiny_models, art, target):
    """The whole run in a network namespace with no interface but loopback (unshare -rn)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("unshare -rn (user and network namespaces) is not available here")
    env = {**subprocess_env(), "FIXATIVE_CONFIG_DIR": str(tmp_path / "config")}
    out = tmp_path / "out"
    script = " && ".join([
        f"{sys.executable} -m fixative identity create --name Offline",
        f"{sys.executable} -m fixative protect {art} --target {target} --out {out} -q "
        + " ".join(tiny_protect_args(tiny_models, 2)),
        f"{sys.executable} -m fixative verify {out}",
        "! (exec 3<>/dev/tcp/1.1.1.1/443) 2>/dev/null",  # proof that there is no route out
    ])
    done = subprocess.run(["unshare", "-rn", "bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=600, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    assert "signed by 'Offline', trusted signer" in done.stdout
    assert np.asarray(Image.open(out / "art.png")).shape[:2] == (corpus.H, corpus.W)


# --- the desktop app ------------------------------------------------------------------------------


def test_app_signs_shows_the_signer_and_zips_the_certificate(tmp_path, tiny_taef2_models, art, capsys, monkeypatch,
                                                            private_config_dir):
    import zipfile

    from fixative.gui.form import JobSettings, command_line, job_options
    from fixative.gui.job import run_job
    from fixative.gui.workbench import Workbench

    bench = Workbench(models_dir=tiny_taef2_models, root=tmp_path / "app", target_cache=tmp_path / "cache")
    settings = JobSettings(mode="immunize", steps=2, device="cpu", precision="fp32", opt_out="gen-ai")
    unsigned = run_job(bench, [art], settings)
    assert unsigned.images and unsigned.signer is None and "no signing identity yet" in unsigned.message

    create_identity("Ada Artist")
    result = run_job(bench, [art], settings)
    assert result.signer == "Ada Artist" and "Signed with Content Credentials by **Ada Artist**" in result.message
    record = result.images[0].record
    assert record["credentials"]["training_mining"] == {"cawg.ai_generative_training": {"use": "notAllowed"}}
    assert "--opt-out=gen-ai" in result.command
    with zipfile.ZipFile(result.zip) as zf:
        assert {"art.png", "art.json", "fixative-index.json", "fixative-index.sig",
                "signer-certificate.pem"} <= set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    # someone else checks the download: untrusted until they trust the certificate in the zip
    monkeypatch.setenv("FIXATIVE_CONFIG_DIR", str(tmp_path / "someone-else"))
    unzipped = tmp_path / "unzipped"
    code, text = _verify(unzipped, capsys)
    assert code == 0 and "untrusted signer" in text
    code, text = _verify(unzipped, capsys, "--trust", str(unzipped / "signer-certificate.pem"))
    assert code == 0 and "signed by 'Ada Artist', trusted signer" in text

    monkeypatch.setenv("FIXATIVE_CONFIG_DIR", str(private_config_dir))
    off = run_job(bench, [art], replace_settings(settings, credentials=False))
    assert off.signer is None and "switched off" in off.message
    unsigned_options = job_options(replace_settings(settings, credentials=False), [art], tmp_path / "o")
    assert "--no-credentials" in command_line(unsigned_options)
    assert job_options(settings, [art], tmp_path / "o").output.opt_out == "gen-ai"


def replace_settings(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)
