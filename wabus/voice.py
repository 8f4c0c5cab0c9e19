"""Turning any audio into a WhatsApp voice note: Ogg/Opus, mono, 48 kHz, with a waveform.

Why: AI text-to-speech services answer with MP3 or WAV (sometimes AAC or FLAC), but WhatsApp
plays a message as a voice note — the push-to-talk bubble with its waveform — only when the
audio is Ogg/Opus, mono, 48 kHz, and the message carries the PTT flag, the duration in seconds
and a 64-value waveform. Anything else arrives as an audio *file* attachment. This module makes
the audio, the duration and the waveform; setting the PTT flag is the sender's part.

Why PyAV and not the `ffmpeg` binary: the PyAV wheel bundles FFmpeg with libopus, so there is
nothing to install on the host or in the image, no subprocess to spawn, feed, time out and
reap, and failures come back as Python exceptions (`av.error.FFmpegError`) instead of an exit
status and a log to parse. Everything happens in memory (`io.BytesIO`), no temporary files.

The work is bounded: decoding stops as soon as the audio runs past `max_seconds`, so a huge or
endless input costs at most about `max_seconds` of decoding and encoding. Both functions are
CPU-bound and blocking: call them from a worker thread (`asyncio.to_thread`), not the loop.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from wabus.conversion import ConversionError

SAMPLE_RATE = 48_000
"""Opus's native rate, and the one WhatsApp's voice notes use."""
BIT_RATE = 32_000
"""Ample for speech in Opus. A target, not a cap: libopus's VBR goes above it on tonal input."""
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: Opus's default frame, and the block the waveform is measured in."""
WAVEFORM_POINTS = 64
WAVEFORM_FLOOR = 0.01
"""The waveform is scaled to its loudest point, but never by more than as if that point were
at this RMS (-40 dBFS): silence and hiss stay near zero instead of being blown up to 100."""
WAVEFORM_STRIDE = 8
"""The waveform's RMS reads every 8th sample (6 kHz): the same level, an eighth of the work."""
MAX_BAD_PACKETS = 8
"""Packets a decoder may reject before the input counts as undecodable. FFmpeg itself skips a
corrupt packet and goes on; a few glitches should not lose a whole voice note."""
PROBE_PACKETS = 64
"""How far `probe_audio` reads looking for the first decoded samples."""


@dataclass(frozen=True)
class VoiceNote:
    data: bytes
    """Ogg/Opus, mono, 48 kHz."""
    seconds: int
    """The duration, rounded to whole seconds, at least 1 (WhatsApp's `seconds` field)."""
    waveform: bytes
    """64 values 0..100: the RMS level of each 1/64 of the audio, scaled so the loudest is 100
    (WhatsApp's voice-note `waveform` field)."""


def to_voice_note(data: bytes, *, max_seconds: int = 3600) -> VoiceNote:
    """Decode `data` (any audio PyAV reads: MP3, WAV, Ogg, M4A/AAC, FLAC, WebM, ...) and encode
    it as a voice note. Raises `ConversionError`: `unsupported_media` (no audio stream),
    `undecodable_media` (unreadable or corrupt), `media_too_long` (over `max_seconds`)."""
    limit = max_seconds * SAMPLE_RATE
    levels = _Levels()
    output = io.BytesIO()
    with _open(data) as source:
        stream = _audio_stream(source)
        with av.open(output, "w", format="ogg") as sink:
            encoder = sink.add_stream(
                "libopus",
                rate=SAMPLE_RATE,
                layout="mono",
                options={"application": "voip"},  # tuned for speech intelligibility
            )
            encoder.bit_rate = BIT_RATE
            resampler = AudioResampler(
                format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=FRAME_SAMPLES
            )
            samples = 0
            for frame in _resampled(resampler, _decoded(source, stream)):
                samples += frame.samples
                if samples > limit:
                    raise ConversionError(
                        "media_too_long", f"the audio is longer than {max_seconds} s"
                    )
                levels.add(frame)
                frame.pts = samples - frame.samples
                frame.time_base = Fraction(1, SAMPLE_RATE)
                sink.mux(encoder.encode(frame))
            if samples == 0:
                raise ConversionError(
                    "undecodable_media", f"no audio samples could be decoded from {_what(stream)}"
                )
            sink.mux(encoder.encode(None))
    return VoiceNote(
        data=output.getvalue(),
        seconds=max(1, int(samples / SAMPLE_RATE + 0.5)),
        waveform=levels.waveform(),
    )


def probe_audio(data: bytes) -> None:
    """Raise `ConversionError` (`unsupported_media`, `undecodable_media`) unless `data` opens
    as audio and its first packets decode. Cheap, for answering before anything is queued; it
    does not read far enough to know the duration (`to_voice_note` does)."""
    with _open(data) as source:
        stream = _audio_stream(source)
        for count, packet in enumerate(source.demux(stream), start=1):
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError as error:
                raise ConversionError(
                    "undecodable_media", f"{_what(stream)} does not decode: {_describe(error)}"
                ) from error
            if any(frame.samples for frame in frames):
                return
            if count >= PROBE_PACKETS:
                break
    raise ConversionError(
        "undecodable_media", f"no audio samples could be decoded from {_what(stream)}"
    )


def _open(data: bytes) -> InputContainer:
    try:
        # metadata in no known encoding is replaced, not fatal: only the audio matters here
        return av.open(io.BytesIO(data), "r", metadata_errors="replace")
    except av.error.FFmpegError as error:
        raise ConversionError(
            "undecodable_media", f"not an audio file PyAV can read: {_describe(error)}"
        ) from error


def _audio_stream(source: InputContainer) -> AudioStream:
    stream = source.streams.best("audio")
    if not isinstance(stream, AudioStream):
        kinds = ", ".join(s.type for s in source.streams) or "no streams"
        raise ConversionError(
            "unsupported_media",
            f"no audio stream in the {source.format.name} input (it holds: {kinds})",
        )
    if stream.codec_context is None:
        raise ConversionError(
            "unsupported_media", f"the {source.format.name} input's audio has no known codec"
        )
    return stream


def _decoded(source: InputContainer, stream: AudioStream) -> Iterator[AudioFrame]:
    """The stream's frames, skipping up to `MAX_BAD_PACKETS` packets the decoder rejects."""
    bad = 0
    try:
        for packet in source.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.InvalidDataError:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise
                continue
            yield from frames
    except av.error.FFmpegError as error:
        raise ConversionError(
            "undecodable_media", f"{_what(stream)} does not decode: {_describe(error)}"
        ) from error


def _resampled(resampler: AudioResampler, frames: Iterable[AudioFrame]) -> Iterator[AudioFrame]:
    try:
        for frame in frames:
            yield from resampler.resample(frame)
        yield from resampler.resample(None)
    except av.error.FFmpegError as error:
        raise ConversionError(
            "undecodable_media", f"the audio cannot be resampled: {_describe(error)}"
        ) from error


def _what(stream: AudioStream) -> str:
    codec = stream.codec_context
    return f"the {codec.name} audio" if codec is not None else "the audio"


def _describe(error: av.error.FFmpegError) -> str:
    return error.strerror or str(error)


class _Levels:
    """The energy of each 20 ms block, gathered while encoding, for the waveform at the end
    (when the number of blocks is known). An hour is 180,000 blocks: two floats each."""

    def __init__(self) -> None:
        self._squares: list[float] = []
        self._counts: list[int] = []

    def add(self, frame: AudioFrame) -> None:
        # s16 mono: one plane of native-endian 16-bit samples (the plane may be padded).
        samples = memoryview(frame.planes[0]).cast("B")[: frame.samples * 2].cast("h")
        picked = samples[::WAVEFORM_STRIDE]
        self._squares.append(float(sum(map(operator.mul, picked, picked))))
        self._counts.append(len(picked))

    def waveform(self) -> bytes:
        blocks = len(self._counts)
        if blocks == 0:
            return bytes(WAVEFORM_POINTS)
        rms: list[float] = []
        for point in range(WAVEFORM_POINTS):
            start = point * blocks // WAVEFORM_POINTS
            end = max((point + 1) * blocks // WAVEFORM_POINTS, start + 1)
            count = sum(self._counts[start:end])
            energy = sum(self._squares[start:end])
            rms.append((energy / count) ** 0.5 / 32768 if count else 0.0)
        scale = max(max(rms), WAVEFORM_FLOOR)
        return bytes(min(100, round(100 * level / scale)) for level in rms)
