"""features.audio: decoding, resampling, length fixing and one-line errors on bad files."""
import pickle
import shutil
import struct
import warnings

import numpy as np
import pytest
import soundfile as sf

from features import audio
from features.audio import N_SAMPLES, RAW_SAMPLES, SR, AudioError, AudioWarning

RNG = np.random.default_rng(0)
needs_mp3 = pytest.mark.skipif("MP3" not in sf.available_formats(),
                               reason="this libsndfile has no MP3 support")
TONE = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)  # 1 s, 440 Hz


def write(path, y, sr=SR, **kw):
    sf.write(path, y, sr, **kw)
    return path


def one_line_naming(err, path):
    msg = str(err.value)
    return str(path) in msg and "\n" not in msg


def test_constants():
    assert N_SAMPLES == 30 * SR == 661_500
    assert RAW_SAMPLES == 25 * SR == 551_250


@pytest.mark.parametrize("fmt,subtype,tol", [
    ("WAV", "PCM_U8", 1 / 128), ("WAV", "PCM_16", 1 / 32768), ("WAV", "PCM_24", 1e-6),
    ("WAV", "PCM_32", 1e-7), ("WAV", "FLOAT", 0), ("AU", "PCM_16", 1 / 32768),
    ("AIFF", "PCM_16", 1 / 32768), ("FLAC", "PCM_16", 1 / 32768),
])
def test_lossless_formats_decode_to_the_same_samples(tmp_path, fmt, subtype, tol):
    p = write(tmp_path / f"x.{fmt.lower()}", TONE, format=fmt, subtype=subtype)
    y = audio.load(p, duration=None)
    assert y.dtype == np.float32 and y.shape == TONE.shape
    assert np.abs(y - TONE).max() <= tol


@pytest.mark.parametrize("fmt", ["OGG", pytest.param("MP3", marks=needs_mp3)])
def test_lossy_formats_decode(tmp_path, fmt):
    p = write(tmp_path / f"x.{fmt.lower()}", TONE, format=fmt)
    y = audio.load(p)
    assert y.shape == (N_SAMPLES,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y[:SR // 2]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 2  # 2 Hz bins: still the 440 Hz tone


def test_pads_short_and_truncates_long(tmp_path):
    short = audio.load(write(tmp_path / "s.wav", TONE[:1000], subtype="FLOAT"))
    assert short.shape == (N_SAMPLES,)
    assert np.array_equal(short[:1000], TONE[:1000]) and not short[1000:].any()
    long = np.tile(TONE, 31)
    y = audio.load(write(tmp_path / "l.wav", long, subtype="FLOAT"))
    assert np.array_equal(y, long[:N_SAMPLES])
    assert audio.load(tmp_path / "l.wav", duration=None).shape == (31 * SR,)
    assert audio.load(tmp_path / "l.wav", duration=2.5).shape == (round(2.5 * SR),)


def test_stereo_is_downmixed_by_mean(tmp_path):
    left, right = TONE, -0.5 * TONE
    p = write(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    assert np.allclose(audio.load(p, duration=None), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("sr_in", [44100, 16000, 48000])
def test_other_rates_are_resampled(tmp_path, sr_in):
    t = np.arange(2 * sr_in) / sr_in
    p = write(tmp_path / "r.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), sr_in,
              subtype="FLOAT")
    y = audio.load(p, duration=None)
    assert y.shape == (2 * SR,) and y.dtype == np.float32
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)
    mid = slice(SR // 2, 3 * SR // 2)  # away from the filter's edge effects
    assert np.abs(y[mid] - ref[mid]).max() < 1e-2
    cut = audio.load(p, duration=1.0)
    assert cut.shape == (SR,) and np.abs(cut[mid.start:] - ref[mid.start:SR]).max() < 1e-2


def test_pcm16_fast_path_is_exact(shared_data):
    path = shared_data / "gtzan_sample" / "blues" / "blues.00000.wav"
    i = audio.info(path)
    assert (i.samplerate, i.channels, i.subtype, i.format) == (22050, 1, "PCM_16", "WAV")
    assert i.frames == 661794  # MANIFEST.tsv
    raw = audio.load_pcm16(path)
    assert raw.dtype == np.int16 and raw.shape == (N_SAMPLES,)
    assert np.array_equal(raw / np.float32(32768), audio.load(path))
    assert audio.load_pcm16(path, None).shape == (661794,)


def test_pcm16_pads_a_short_gtzan_clip(shared_data):
    # country.00003: 661408 frames, 92 short of 30 s (MANIFEST.tsv).
    path = shared_data / "gtzan_sample" / "country" / "country.00003.wav"
    assert audio.info(path).frames < N_SAMPLES
    y = audio.load_pcm16(path)
    assert y.shape == (N_SAMPLES,) and not y[audio.info(path).frames:].any()


def test_pcm16_refuses_other_formats(tmp_path):
    p = write(tmp_path / "f.wav", TONE, subtype="FLOAT")
    with pytest.raises(AudioError, match="not 16-bit PCM") as e:
        audio.load_pcm16(p)
    assert one_line_naming(e, p)


def test_silence_warns_but_loads(tmp_path):
    p = write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), subtype="PCM_16")
    with pytest.warns(AudioWarning, match="quiet.wav"):
        y = audio.load(p)
    assert not y.any()
    with pytest.warns(AudioWarning):
        audio.load_pcm16(p)


def test_nan_and_inf_are_errors(tmp_path):
    y = TONE.copy()
    y[10], y[20] = np.nan, np.inf
    p = write(tmp_path / "bad.wav", y, subtype="FLOAT")
    with pytest.raises(AudioError, match="2 NaN/inf samples") as e:
        audio.load(p)
    assert one_line_naming(e, p)


def _bad_files(tmp_path):
    wav = write(tmp_path / "ok.wav", TONE, subtype="PCM_16").read_bytes()
    au = write(tmp_path / "ok.au", TONE, subtype="PCM_16").read_bytes()
    flac = write(tmp_path / "ok.flac", TONE).read_bytes()
    files = {
        "empty.wav": (b"", "empty file"),
        "text.wav": (b"this is not audio\n" * 20, "not a recognised audio format"),
        "header_only.wav": (wav[:30], "cannot open as audio"),
        "truncated.wav": (wav[: len(wav) // 2], "truncated"),
        "truncated.au": (au[: len(au) // 2], "truncated"),
        "truncated.flac": (flac[: len(flac) // 2], "cannot decode"),
        "no_frames.wav": (write(tmp_path / "z.wav", np.zeros(0, np.float32)).read_bytes(),
                          "no audio frames"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    return {tmp_path / name: why for name, (_, why) in files.items()}


def test_bad_files_raise_one_line_naming_the_file(tmp_path):
    for path, why in _bad_files(tmp_path).items():
        with pytest.raises(AudioError, match=why) as e:
            audio.load(path)
        assert one_line_naming(e, path), str(e.value)
        assert e.value.path == path
        assert str(pickle.loads(pickle.dumps(e.value))) == str(e.value)  # survives a worker pool
        with pytest.raises(AudioError, match=why):
            audio.load_pcm16(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        audio.load(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        audio.info(tmp_path)


def test_streaming_wav_header_is_not_truncation(tmp_path):
    # Writers that stream to a pipe leave the size fields at 0xFFFFFFFF ("unknown").
    data = bytearray(write(tmp_path / "ok.wav", TONE, subtype="PCM_16").read_bytes())
    i = data.find(b"data")
    data[4:8] = data[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFFF)
    p = tmp_path / "stream.wav"
    p.write_bytes(bytes(data))
    assert np.abs(audio.load(p, duration=None) - TONE).max() <= 1 / 32768


def test_content_not_extension_decides(tmp_path):
    # Documented: libsndfile sniffs content, so misnamed audio decodes as what it is.
    wav = write(tmp_path / "a.wav", TONE, subtype="PCM_16")
    ogg = write(tmp_path / "a.ogg", TONE, format="OGG")
    shutil.copy(wav, tmp_path / "wav_named.mp3")
    shutil.copy(ogg, tmp_path / "ogg_named.wav")
    assert np.array_equal(audio.load(tmp_path / "wav_named.mp3"), audio.load(wav))
    assert audio.info(tmp_path / "ogg_named.wav").format == "OGG"
    assert np.array_equal(audio.load(tmp_path / "ogg_named.wav"), audio.load(ogg))
    (tmp_path / "text.mp3").write_text("not audio at all, whatever the name says\n" * 10)
    with pytest.raises(AudioError, match="not a recognised audio format"):
        audio.load(tmp_path / "text.mp3")


@needs_mp3
def test_cut_mp3_warns_and_keeps_what_decodes(tmp_path):
    data = write(tmp_path / "a.mp3", np.tile(TONE, 3), format="MP3").read_bytes()
    p = tmp_path / "cut.mp3"
    p.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = audio.load(p, duration=None)
    assert any(issubclass(w.category, AudioWarning) and "cut.mp3" in str(w.message) for w in caught)
    assert SR <= len(y) < 3 * SR


@pytest.mark.parametrize("sr_in,channels,subtype,block", [
    (SR, 1, "PCM_16", 1000), (SR, 2, "PCM_24", 4096), (44100, 2, "PCM_16", 1000), (48000, 1, "FLOAT", 777),
    (8000, 1, "PCM_16", 5000), (44100, 1, "PCM_16", audio.STREAM_BLOCK),
])
def test_stream_equals_a_whole_load(tmp_path, sr_in, channels, subtype, block):
    y = (0.3 * RNG.standard_normal((3 * sr_in + 123, channels))).astype(np.float32)
    path = write(tmp_path / "a.wav", y.squeeze(), sr_in, subtype=subtype)
    whole = audio.load(path, duration=None)
    chunks = list(audio.stream(path, block=block))
    assert len(chunks) > 1
    streamed = np.concatenate(chunks)
    assert streamed.dtype == np.float32 and streamed.shape == whole.shape
    # at the file's rate the very samples; resampled, the block overlap makes the filter's sums the same
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=0 if sr_in == SR else 1e-6)


def test_stream_errors_and_warnings_are_loads(tmp_path):
    with pytest.raises(AudioError) as err:
        next(audio.stream(tmp_path / "missing.wav"))
    assert one_line_naming(err, tmp_path / "missing.wav")
    bad = write(tmp_path / "nan.wav", np.r_[TONE, np.nan, TONE].astype(np.float32), subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf"):
        list(audio.stream(bad, block=1000))
    silent = write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    with pytest.warns(AudioWarning, match="all samples are zero"):
        assert sum(len(c) for c in audio.stream(silent)) == SR
