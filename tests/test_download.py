"""features.download against a local HTTP server: resume, Range ignored, redirects, cuts, offline."""
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from features.download import download_main

TRACKS = [f"{g}.{i:05d}" for g in ("blues", "pop", "rock") for i in range(2)]


def _wav(seed):
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).integers(-3000, 3000, 4410).astype(np.int16)
    sf.write(buf, noise, 22050, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _targz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WAVS = {tid: _wav(i) for i, tid in enumerate(TRACKS)}
ARCHIVE = _targz({f"genres/{tid.split('.')[0]}/{tid}.wav": data for tid, data in WAVS.items()})
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


@pytest.fixture
def index(tmp_path):
    """A mirdata-style index of the tiny archive's files."""
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"version": "test", "tracks": {
        tid: {"audio": [f"gtzan_genre/genres/{tid.split('.')[0]}/{tid}.wav",
                        hashlib.md5(data).hexdigest()]} for tid, data in WAVS.items()}}))
    return path


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at /genres.tar.gz; behaviour set by attributes of the server."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.ranges.append((self.path, self.headers.get("Range")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/genres.tar.gz")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/genres.tar.gz":
            self.send_error(404)
            return
        body, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if srv.cut_at is not None:  # one-shot: send part of the body, then go silent or hang up
            cut, srv.cut_at = srv.cut_at, None
            self.wfile.write(body[start:cut])
            self.wfile.flush()
            if srv.stall:
                time.sleep(srv.stall)
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.payload, srv.honour_range, srv.cut_at, srv.stall, srv.ranges = ARCHIVE, True, None, 0, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run(url, dest, index, *extra):
    return download_main(["--url", url, "--dest", str(dest), "--sha256", SHA256,
                          "--index", str(index), "--timeout", "5", *extra])


def assert_installed(dest):
    root = dest / "gtzan" / "genres"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav")) == sorted(
        f"{tid.split('.')[0]}/{tid}.wav" for tid in TRACKS)
    assert (dest / "genres.tar.gz").read_bytes() == ARCHIVE
    assert sorted(p.name for p in dest.iterdir()) == ["genres.tar.gz", "gtzan"]  # no .part, staging


def one_line(err):
    return err.strip().count("\n") == 0 and err.strip() != ""


def test_resume_with_range(server, tmp_path, index, capsys):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "genres.tar.gz.part").write_bytes(ARCHIVE[:10_000])
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    assert server.ranges == [("/genres.tar.gz", "bytes=10000-")]
    assert_installed(dest)
    assert "6 tracks verified by MD5" in capsys.readouterr().out


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, index):
    server.honour_range = False
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "genres.tar.gz.part").write_bytes(b"stale bytes from another file")
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    assert_installed(dest)


def test_overlong_part_gets_416_and_restarts(server, tmp_path, index):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "genres.tar.gz.part").write_bytes(ARCHIVE + b"junk")
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    assert [r for _, r in server.ranges] == [f"bytes={len(ARCHIVE) + 4}-", None]
    assert_installed(dest)


def test_redirect_is_followed_with_range(server, tmp_path, index):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "genres.tar.gz.part").write_bytes(ARCHIVE[:5000])
    assert run(server.url + "/redirect", dest, index) == 0
    assert server.ranges == [("/redirect", "bytes=5000-"), ("/genres.tar.gz", "bytes=5000-")]
    assert_installed(dest)


def test_wrong_sha256_is_reported_but_md5s_decide(server, tmp_path, index, capsys):
    dest = tmp_path / "data"
    rc = download_main(["--url", server.url + "/genres.tar.gz", "--dest", str(dest),
                        "--sha256", "0" * 64, "--index", str(index)])
    assert rc == 0
    err = capsys.readouterr().err
    assert f"SHA-256 {SHA256} is not the expected {'0' * 64}" in err and "MD5s decide" in err
    assert_installed(dest)


def test_md5_mismatch_rejects_the_data(server, tmp_path, index, capsys):
    doc = json.loads(index.read_text())
    doc["tracks"]["pop.00001"]["audio"][1] = "0" * 32
    index.write_text(json.dumps(doc))
    dest = tmp_path / "data"
    assert run(server.url + "/genres.tar.gz", dest, index) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "do not verify (5 verified, 1 mismatched)" in err
    assert "genres.tar.gz" in err and "GTZAN_DIR" in err  # says where to put it by hand
    assert sorted(p.name for p in dest.iterdir()) == ["genres.tar.gz"]  # nothing half-made


def test_cut_transfer_resumes_on_next_call(server, tmp_path, index, capsys):
    server.cut_at = 20_000
    dest = tmp_path / "data"
    assert run(server.url + "/genres.tar.gz", dest, index, "--retries", "0") == 1
    err = capsys.readouterr().err
    assert one_line(err) and f"transfer cut at 20000 of {len(ARCHIVE)} bytes" in err
    assert (dest / "genres.tar.gz.part").stat().st_size == 20_000
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    assert server.ranges[-1] == ("/genres.tar.gz", "bytes=20000-")
    assert_installed(dest)


def test_stalled_transfer_times_out_and_retries(server, tmp_path, index, capsys):
    server.cut_at, server.stall = 20_000, 3
    dest = tmp_path / "data"
    rc = download_main(["--url", server.url + "/genres.tar.gz", "--dest", str(dest), "--sha256",
                        SHA256, "--index", str(index), "--timeout", "0.5", "--retries", "1"])
    assert rc == 0
    assert "resuming (1/1)" in capsys.readouterr().err
    assert [r for _, r in server.ranges] == [None, "bytes=20000-"]
    assert_installed(dest)


def test_already_present_does_nothing(server, tmp_path, index, capsys):
    dest = tmp_path / "data"
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    n_requests = len(server.ranges)
    capsys.readouterr()
    assert run(server.url + "/genres.tar.gz", dest, index) == 0
    assert len(server.ranges) == n_requests
    assert "already present and verified (6 tracks); nothing to do" in capsys.readouterr().out


def test_existing_unverified_folder_is_left_alone(server, tmp_path, index, capsys):
    dest = tmp_path / "data"
    (dest / "gtzan" / "pop").mkdir(parents=True)
    (dest / "gtzan" / "pop" / "pop.00000.wav").write_bytes(b"mine")
    assert run(server.url + "/genres.tar.gz", dest, index) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "exists but does not verify" in err and server.ranges == []
    assert (dest / "gtzan" / "pop" / "pop.00000.wav").read_bytes() == b"mine"


def test_archive_placed_by_hand_is_used(server, tmp_path, index, capsys):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "genres.tar.gz").write_bytes(ARCHIVE)
    assert run("http://127.0.0.1:9/never-used", dest, index) == 0
    assert server.ranges == [] and "already downloaded" in capsys.readouterr().out
    assert_installed(dest)


def test_offline_is_one_line(tmp_path, index, capsys):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "data"
    assert run(f"http://127.0.0.1:{port}/genres.tar.gz", dest, index) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "cannot connect" in err and "download genres.tar.gz by hand" in err
    assert "data/gtzan" in err and "GTZAN_DIR" in err
    assert not (dest / "genres.tar.gz.part").exists() and not (dest / "gtzan").exists()


def test_http_error_is_one_line(server, tmp_path, index, capsys):
    assert run(server.url + "/missing.tar.gz", tmp_path / "data", index) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "HTTP 404" in err


@pytest.mark.parametrize("evil", ["../evil.wav", "/tmp/evil.wav"])
def test_unsafe_archive_is_refused(server, tmp_path, index, capsys, evil):
    server.payload = _targz({"genres/pop/pop.00000.wav": WAVS["pop.00000"], evil: b"x"})
    dest = tmp_path / "data"
    sha = hashlib.sha256(server.payload).hexdigest()
    assert run(server.url + "/genres.tar.gz", dest, index, "--sha256", sha) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "refusing to extract" in err and "delete it to download again" in err
    assert sorted(p.name for p in dest.iterdir()) == ["genres.tar.gz"]
    assert not (tmp_path / "evil.wav").exists()


def test_if_missing_uses_found_data_and_refuses_unusable_named_data(tmp_path, capsys, monkeypatch):
    from features import synth

    data = synth.write_dataset(tmp_path / "mine", n_per_class=1, duration=1.0)
    url = "http://127.0.0.1:9/never-contacted"
    assert download_main(["--if-missing", "--data", str(data), "--url", url, "--dest", str(tmp_path / "d")]) == 0
    assert "nothing to download" in capsys.readouterr().out and not (tmp_path / "d").exists()
    monkeypatch.setenv("GTZAN_DIR", str(data))
    assert download_main(["--if-missing", "--url", url, "--dest", str(tmp_path / "d")]) == 0
    assert download_main(["--if-missing", "--data", str(tmp_path / "nowhere"), "--url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("not found (given by the command line)") and "\n" not in err
