"""`wabus.voice`: any audio in, a WhatsApp voice note (Ogg/Opus, mono, 48 kHz) out.

The inputs are made here with PyAV itself (a 440 Hz sine, 3 s, 44.1 kHz stereo, in several
containers and codecs), and every output is read back with PyAV's decoder.
"""

from __future__ import annotations

import io
import math
import pickle
import random
import wave
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import pytest
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from PIL import Image

from wabus import voice
from wabus.conversion import ConversionError
from wabus.voice import VoiceNote, probe_audio, to_voice_note

SECONDS = 3.0
RATE = 44_100


def _mp3_encoder() -> str:
    """LAME when the build has it (PyAV's wheels do), else FFmpeg's own `mp3` encoder name."""
    for name in ("libmp3lame", "mp3"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
            except ValueError:  # UnknownCodecError: a decoder of that name only
                continue
            return name
    pytest.skip("no MP3 encoder in this PyAV build")


def tone(
    codec: str,
    container: str,
    *,
    seconds: float = SECONDS,
    amplitude: float = 0.5,
    silent_until: float = 0.0,
) -> bytes:
    """A 440 Hz sine, stereo at 44.1 kHz, silent for its first `silent_until` seconds."""
    output = io.BytesIO()
    with av.open(output, "w", format=container) as sink:
        stream = sink.add_stream(codec, rate=RATE, layout="stereo")
        assert isinstance(stream, AudioStream)
        total = int(seconds * RATE)
        done = 0
        while done < total:
            count = min(1024, total - done)
            samples = array("h")
            for index in range(done, done + count):
                level = 0.0 if index < silent_until * RATE else amplitude
                value = int(level * 32767 * math.sin(2 * math.pi * 440 * index / RATE))
                samples.extend((value, value))
            frame = AudioFrame(format="s16", layout="stereo", samples=count)
            frame.planes[0].update(samples.tobytes())
            frame.sample_rate = RATE
            frame.pts = done
            frame.time_base = Fraction(1, RATE)
            sink.mux(stream.encode(frame))
            done += count
        sink.mux(stream.encode(None))
    return output.getvalue()


def wav(**kwargs: float) -> bytes:
    return tone("pcm_s16le", "wav", **kwargs)


SOURCES = {
    "wav": lambda: wav(),
    "mp3": lambda: tone(_mp3_encoder(), "mp3"),
    "flac": lambda: tone("flac", "flac"),
    "m4a": lambda: tone("aac", "ipod"),
}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest) -> bytes:
    return SOURCES[request.param]()


def png() -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(output, "PNG")
    return output.getvalue()


@dataclass(frozen=True)
class Decoded:
    container: str
    codec: str
    channels: int
    sample_rate: int
    samples: int


def read_back(data: bytes) -> Decoded:
    """What PyAV's decoder makes of `data`."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return Decoded(
            container.format.name,
            stream.codec_context.name,
            stream.channels,
            stream.sample_rate,
            samples,
        )


def refusal(data: bytes, **kwargs: int) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        to_voice_note(data, **kwargs)
    return caught.value


def test_every_source_becomes_ogg_opus_mono_48k_of_the_same_length(source: bytes) -> None:
    note = to_voice_note(source)

    decoded = read_back(note.data)
    assert decoded.container == "ogg"
    assert decoded.codec == "opus"
    assert decoded.channels == 1
    assert decoded.sample_rate == 48_000
    assert decoded.samples / 48_000 == pytest.approx(SECONDS, rel=0.05)
    assert note.seconds == 3


def test_the_waveform_has_64_levels_within_0_to_100(source: bytes) -> None:
    waveform = to_voice_note(source).waveform

    assert len(waveform) == 64
    assert all(0 <= level <= 100 for level in waveform)
    assert any(waveform)


def test_silence_has_a_flat_waveform_and_a_tone_a_full_one() -> None:
    silent = to_voice_note(wav(amplitude=0.0))
    loud = to_voice_note(wav())

    assert len(silent.waveform) == 64
    assert max(silent.waveform) <= 2
    assert silent.seconds == 3  # still a proper voice note
    assert min(loud.waveform) >= 90


def test_the_waveform_follows_the_loudness_over_time() -> None:
    """Silent for the first half, then the tone: low levels first, high ones after."""
    waveform = to_voice_note(wav(silent_until=SECONDS / 2)).waveform

    assert max(waveform[:30]) <= 2
    assert min(waveform[34:]) >= 90


def test_a_quiet_recording_is_not_blown_up_to_full_scale() -> None:
    """Scaled to the loudest point, but never as if that point were above -40 dBFS."""
    quiet = to_voice_note(wav(amplitude=0.001)).waveform  # -60 dBFS peak
    normal = to_voice_note(wav(amplitude=0.05)).waveform  # -26 dBFS peak

    assert max(quiet) <= 10
    assert min(normal) >= 90


def test_seconds_are_rounded_and_at_least_one() -> None:
    assert to_voice_note(wav(seconds=0.3)).seconds == 1
    assert to_voice_note(wav(seconds=1.6)).seconds == 2


def test_random_bytes_are_undecodable() -> None:
    garbage = random.Random(7).randbytes(4096)

    error = refusal(garbage)

    assert error.code == "undecodable_media"
    assert "not an audio file PyAV can read" in error.reason
    assert isinstance(to_voice_note(wav()), VoiceNote)  # the control


def empty_wav() -> bytes:
    """A WAV header, and no frames."""
    output = io.BytesIO()
    with wave.open(output, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"")
    return output.getvalue()


def test_an_audio_stream_without_samples_is_undecodable() -> None:
    error = refusal(empty_wav())

    assert error.code == "undecodable_media"
    assert "no audio samples" in error.reason
    assert to_voice_note(wav(seconds=0.1)).seconds == 1  # the control: a short one is fine


def test_an_image_has_no_audio_stream() -> None:
    error = refusal(png())

    assert error.code == "unsupported_media"
    assert "no audio stream" in error.reason
    assert "video" in error.reason


def test_audio_longer_than_max_seconds_is_refused() -> None:
    error = refusal(wav(), max_seconds=1)

    assert error.code == "media_too_long"
    assert "1 s" in error.reason
    assert to_voice_note(wav(), max_seconds=4).seconds == 3  # the control


def test_decoding_stops_soon_after_max_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long input costs about `max_seconds` of decoding, not its whole length."""
    decoded: list[float] = []
    original = voice._decoded

    def counting(source: InputContainer, stream: AudioStream) -> Iterator[AudioFrame]:
        for frame in original(source, stream):
            decoded.append(frame.samples / frame.sample_rate)
            yield frame

    monkeypatch.setattr(voice, "_decoded", counting)
    long = wav(seconds=10)

    with pytest.raises(ConversionError):
        to_voice_note(long, max_seconds=1)
    assert sum(decoded) <= 2

    decoded.clear()
    to_voice_note(long, max_seconds=11)
    assert sum(decoded) == pytest.approx(10, rel=0.01)  # the control: the counting counts


def damaged_mp3() -> bytes:
    """The MP3 tone with 3,000 bytes of noise in its middle: a packet the decoder rejects."""
    clean = tone(_mp3_encoder(), "mp3")
    return clean[:2000] + random.Random(1).randbytes(3000) + clean[5000:]


def test_a_few_corrupt_packets_are_skipped() -> None:
    note = to_voice_note(damaged_mp3())

    assert read_back(note.data).samples / 48_000 == pytest.approx(
        SECONDS, rel=0.2
    )  # a few frames lost


def test_more_corrupt_packets_than_allowed_are_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice, "MAX_BAD_PACKETS", 0)

    error = refusal(damaged_mp3())

    assert error.code == "undecodable_media"
    assert "does not decode" in error.reason
    to_voice_note(tone(_mp3_encoder(), "mp3"))  # the control: an undamaged one still passes


def test_probe_accepts_audio(source: bytes) -> None:
    probe_audio(source)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "undecodable_media"),
        (random.Random(7).randbytes(4096), "undecodable_media"),
        (png(), "unsupported_media"),
        (empty_wav(), "undecodable_media"),
    ],
    ids=["empty", "random", "png", "empty-wav"],
)
def test_probe_refuses_what_is_not_audio(data: bytes, code: str) -> None:
    with pytest.raises(ConversionError) as caught:
        probe_audio(data)

    assert caught.value.code == code
    probe_audio(wav())  # the control


def test_the_error_keeps_its_code_and_reason_through_pickling() -> None:
    """Worker processes hand errors back pickled."""
    error = refusal(png())

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 — our own bytes

    assert (copy.code, copy.reason) == (error.code, error.reason)
    assert str(copy) == f"unsupported_media: {error.reason}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mangled_or_random_bytes_are_refused_with_a_code_never_an_exception(seed: int) -> None:
    """Seeded fuzzing: whatever the bytes, a voice note comes out or `ConversionError` does (a
    codec PyAV cannot name once escaped as an AttributeError). The positive control: the intact
    source converts."""
    rng = random.Random(seed)
    source = wav(seconds=0.5)
    assert to_voice_note(source).seconds == 1
    refused = 0
    codes: set[str] = set()
    for _ in range(150):
        mangled = bytearray(source)
        reach = 64 if rng.random() < 0.7 else len(mangled)  # mostly the header, where codecs hide
        for _ in range(rng.randint(1, 8)):
            mangled[rng.randrange(reach)] = rng.randrange(256)
        if rng.random() < 0.3:
            mangled = mangled[: rng.randrange(1, len(mangled))]
        for data in (bytes(mangled), rng.randbytes(rng.randint(1, 2000))):
            for convert in (probe_audio, to_voice_note):
                try:
                    convert(data)
                except ConversionError as error:
                    codes.add(error.code)
                    refused += 1
    assert refused > 0
    assert codes <= {"undecodable_media", "unsupported_media"}
