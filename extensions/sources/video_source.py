"""VideoSource: frames of a video file or a live stream (``rtsp://`` camera), decoded with PyAV."""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import Source, SourceContext, SourceItem, SourceParameters
from rvai_sdk.exc import SourceError
from rvai_sdk.types import Boolean, Enum, FloatRange, Image, IntegerRange, String, unwrap_optional

__all__ = ["VideoSource", "VideoSourceParameters", "DECODERS"]

_FILE_SCHEMES = ("", "file")

DECODERS = ("auto", "cuda", "cpu")
"""Values of :attr:`VideoSourceParameters.decode`."""

# AVPictureType values of decoded frames (PyAV gives them as ints)
_PICT_I, _PICT_P = 1, 2


@dataclasses.dataclass
class VideoSourceParameters(SourceParameters):
    """Parameters of a :class:`VideoSource` (queueing, drop policy and retries come from :class:`SourceParameters`).

    Attributes:
        fps: the most frames per second to produce; frames in between are skipped by
            their timestamps (``0``: every frame).
        loop: for a file, start again at its end instead of ending (frames keep counting).
        width: resize frames to this width (``0``: keep; with only one of width/height
            set, the other keeps the aspect ratio).
        height: resize frames to this height (``0``: keep).
        transport: RTSP transport, ``tcp`` (default: no lost packets) or ``udp``.
        open_timeout: seconds to wait for a live stream to open.
        read_timeout: seconds without data after which a live stream counts as disconnected.
        reconnect_initial: seconds before the first reconnection attempt of a live stream.
        reconnect_max: the longest wait between reconnection attempts (the wait doubles).
        decode: where to decode: ``auto`` (the NVIDIA GPU's hardware decoder when this
            machine has one, else the CPU), ``cuda`` (ask for the GPU's decoder and report
            a fallback) or ``cpu``. A GPU decoder that cannot be used falls back to the CPU
            with the reason in :meth:`VideoSource.stats` (``decode_fallback``); frames are the
            same in count and order either way.
        realtime: pace a file's frames to their timestamps, as a camera sends them
            (to rehearse a live pipeline on recorded files); live streams are paced by
            the camera already.
    """

    fps: FloatRange = SourceParameters.field(
        name="Target fps", description="Most frames per second (0: every frame)", default=FloatRange(0.0, min=0.0, max=1000.0)
    )
    loop: Boolean = SourceParameters.field(name="Loop", description="Restart a file at its end", default=Boolean(False))
    width: IntegerRange = SourceParameters.field(
        name="Width", description="Resize to this width (0: keep)", default=IntegerRange(0, min=0, max=16384)
    )
    height: IntegerRange = SourceParameters.field(
        name="Height", description="Resize to this height (0: keep)", default=IntegerRange(0, min=0, max=16384)
    )
    transport: Enum[String] = SourceParameters.field(
        name="RTSP transport", description="tcp or udp", default=Enum[String](options=["tcp", "udp"], selected="tcp")
    )
    open_timeout: FloatRange = SourceParameters.field(
        name="Open timeout", description="Seconds to wait for a stream to open", default=FloatRange(5.0, min=0.1, max=600.0)
    )
    read_timeout: FloatRange = SourceParameters.field(
        name="Read timeout", description="Seconds without data before reconnecting", default=FloatRange(3.0, min=0.1, max=600.0)
    )
    reconnect_initial: FloatRange = SourceParameters.field(
        name="First reconnect delay", description="Seconds before the first reconnection", default=FloatRange(0.5, min=0.0, max=600.0)
    )
    reconnect_max: FloatRange = SourceParameters.field(
        name="Longest reconnect delay", description="Upper bound of the doubling delay", default=FloatRange(10.0, min=0.0, max=3600.0)
    )
    decode: Enum[String] = SourceParameters.field(
        name="Decoder",
        description="auto (the NVIDIA GPU's decoder when present, else CPU), cuda, or cpu",
        default=Enum[String](options=list(DECODERS), selected="auto"),
    )
    realtime: Boolean = SourceParameters.field(
        name="Real time", description="Pace a file's frames to their timestamps, like a camera", default=Boolean(False)
    )


class VideoSource(Source):
    """Decodes a video file or a live URL into RGB :class:`~rvai_sdk.types.Image` frames.

    A file (a path or ``file://``) ends at its end unless ``loop`` is set, and waits
    for inference (no drops by default). A live URL (``rtsp://``, ``http://``...) is
    :attr:`live`: it drops frames when inference falls behind (``drop_oldest``), and
    the end of its stream is a disconnect, not the end: it reconnects with
    exponential backoff and resumes, numbering frames on without a gap, and counts
    the reconnects in :meth:`stats`.

    Args:
        url: a file path or a URL that FFmpeg opens (``rtsp://user:pw@10.0.0.5/stream``).
        input: the pipeline input that gets the frame (default: the pipeline's only
            Image input).
        params: :meth:`VideoSource.parameters` (fps, loop, size, timeouts, reconnects...).

    Example:
        >>> VideoSource("rtsp://10.0.0.5/stream").live, VideoSource("clip.mp4").live
        (True, False)
    """

    parameters_class = VideoSourceParameters

    @classmethod
    def from_url(cls, url: str) -> VideoSource:
        """A VideoSource from a URL (the ``rvai-sdk stream --source`` form).

        Schemes: a plain file path (``clip.mp4``, ``C:\\clips\\a.mp4``), ``file://``,
        and the live ones FFmpeg opens: ``rtsp://``, ``rtsps://``, ``rtmp://``,
        ``http://``, ``https://``. No query options of its own: the whole URL goes to
        FFmpeg (a camera's own query stays in it).

        Raises:
            UsageError: a file path (or ``file://`` URL) names no file.

        Example:
            >>> VideoSource.from_url("rtsp://10.0.0.5/stream1").live
            True
        """
        import os
        import urllib.parse

        from rvai_sdk.exc import UsageError

        if url.startswith("file://"):
            url = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        scheme, colon, _ = url.partition(":")
        is_path = not colon or len(scheme) < 2 or not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme))
        if is_path and not os.path.isfile(url):
            raise UsageError(f"no such video file: {url!r} (give a path to a video file, or an rtsp:// URL)")
        return cls(url)

    def __init__(self, url: str, input: str | None = None, params: VideoSourceParameters | Mapping[str, Any] | None = None) -> None:  # noqa: A002
        super().__init__(params)
        if not isinstance(url, str) or not url:
            raise SourceError(f"VideoSource takes a file path or URL, got {url!r}")
        self.url = url
        self.input = input

    @property
    def live(self) -> bool:
        """Whether the URL is a live stream (any scheme but ``file://``)."""
        scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
        return scheme not in _FILE_SCHEMES

    def _shown(self) -> str:
        if "@" in self.url and "://" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return self.url

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        return f"source {ref!r} (VideoSource {self._shown()})"

    def open(self, context: SourceContext) -> None:
        """Pick the pipeline input for frames and open the video.

        Raises:
            SourceError: the pipeline has no single Image input (or another required input
                VideoSource cannot fill), or the video cannot be opened.
        """
        super().open(context)
        self._av = require("av", extra="video")
        images = [ref for ref, spec in context.inputs.items() if unwrap_optional(spec.type)[0] is Image]
        if self.input is not None:
            if self.input not in context.inputs:
                raise SourceError(f"{self._where()}: the pipeline has no input {self.input!r}; its inputs: {', '.join(context.inputs)}")
            target = self.input
        elif len(images) == 1:
            target = images[0]
        else:
            raise SourceError(
                f"{self._where()}: the pipeline has {len(images)} Image inputs ({', '.join(images) or 'none'}); "
                "say which gets the frames with VideoSource(url, input=...)"
            )
        others = [ref for ref in context.inputs if ref != target]
        if others:
            raise SourceError(f"{self._where()}: VideoSource fills only {target!r}, but the pipeline also takes {', '.join(others)}")
        self._target = target
        # a file is read again from its start, under the same indexes (the driver skips those it had); a
        # camera's frames keep counting across reconnects and reopenings
        self._index = getattr(self, "_index", 0) if self.live else 0
        self._high = getattr(self, "_high", 0)
        self._corrupt = getattr(self, "_corrupt", 0)
        self._reconnects = getattr(self, "_reconnects", 0)
        self._decoded = getattr(self, "_decoded", 0)
        self._skipped = getattr(self, "_skipped", 0)
        self._connected = False
        self._last_error: str | None = getattr(self, "_last_error", None)
        self._discarded = getattr(self, "_discarded", 0)
        self._decoder = "cpu"
        # kept across a reopen: a GPU decoder that failed mid-file is not tried again on the same file
        self._decode_fallback: str | None = getattr(self, "_decode_fallback", None)
        self._cuda_frames: Any = None  # converts frames left on the GPU (CudaFrames), once tried
        self._convert_fallback: str | None = None
        self._skip_frame: str | None = None
        self._container: Any = None
        self._connect()

    def _connect(self) -> None:
        av = self._av
        options: dict[str, str] = {}
        timeout: Any = None
        if self.live:
            timeout = (float(self.params.open_timeout), float(self.params.read_timeout))
            if self.url.lower().startswith(("rtsp://", "rtsps://")):
                options["rtsp_transport"] = str(self.params.transport)
        container: Any = None
        hwaccel: Any = None
        refused: list[str] = []
        for i, hwaccel in enumerate(self._hwaccels()):
            try:
                container = av.open(self.url, options=options, timeout=timeout, hwaccel=hwaccel)
            except Exception as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
                continue
            if i and self._cuda_frames is not None:  # the first try, frames left on the GPU, was refused
                self._fall_back_convert(f"the CUDA decoder could not leave frames on the GPU: {refused[0]}")
            break
        else:
            hwaccel = None
            if refused:
                self._fall_back(f"the CUDA decoder could not be opened: {'; '.join(dict.fromkeys(refused))}")
        try:
            if container is None:
                container = av.open(self.url, options=options, timeout=timeout)
        except Exception as exc:
            raise SourceError(f"{self._where()}: cannot open: {type(exc).__name__}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self._where()}: has no video stream")
        stream = container.streams.video[0]
        if hwaccel is None:
            stream.thread_type = "AUTO"  # the codec's own threads (frame and slice) on the CPU
        self._decoder = "cuda" if hwaccel is not None else "cpu"
        self._container = container
        self._connected = True

    def _hwaccels(self) -> list[Any]:
        """PyAV CUDA hardware accelerations to try in turn when ``decode`` asks for one and it can work here."""
        mode = str(self.params.decode)
        if mode == "cpu" or self._decode_fallback is not None:
            return []
        if mode == "auto" and not _nvidia_gpu_listed():
            self._decode_fallback = "auto: no NVIDIA GPU listed here (/dev/nvidia<N>, CUDA_VISIBLE_DEVICES): decoding on the CPU"
            return []
        from av.codec.hwaccel import HWAccel, hwdevices_available

        if "cuda" not in hwdevices_available():
            self._fall_back(f"this PyAV's FFmpeg has no CUDA device support (it has: {', '.join(hwdevices_available()) or 'none'})")
            return []
        on_gpu = self._frames_stay_on_gpu()
        # first the device's primary context (one CUDA context per driver process, not one per stream; torch
        # uses it too, so the frames that stay on the GPU are valid for it)
        tries: list[dict[str, object]] = [{"primary_ctx": "1"}, {}]
        accels = [HWAccel("cuda", allow_software_fallback=True, options=options) for options in tries]
        if on_gpu:
            accels.insert(0, HWAccel("cuda", allow_software_fallback=True, options=tries[0], is_hw_owned=True))
        return accels

    def _frames_stay_on_gpu(self) -> bool:
        """Whether decoded frames stay on the GPU and get their colours converted there (decided once)."""
        if self._convert_fallback is not None:
            return False
        if self._cuda_frames is None:
            from av.codec.hwaccel import HWAccel

            from ._cuda_frames import CudaFrames

            try:
                try:
                    HWAccel("cuda", is_hw_owned=True)  # settings only: opens nothing
                except TypeError:
                    raise RuntimeError(f"PyAV {self._av.__version__} cannot leave decoded frames on the GPU (PyAV >= 17 can)") from None
                self._cuda_frames = CudaFrames()
            except (RuntimeError, ValueError, TypeError) as exc:
                self._fall_back_convert(str(exc))
                return False
        return True

    def _fall_back_convert(self, reason: str) -> None:
        """Download decoded frames and convert their colours on the CPU from now on; say why."""
        self._cuda_frames = None
        self._convert_fallback = reason
        self.context.logger.info("%s: %s; frames downloaded from the GPU and converted on the CPU", self._where(), reason)

    def _fall_back(self, reason: str) -> None:
        """Decode on the CPU from now on, and say why where it is seen (log, :meth:`stats`)."""
        self._decode_fallback = reason
        self._decoder = "cpu"
        level = self.context.logger.warning if str(self.params.decode) == "cuda" else self.context.logger.info
        level("%s: %s; decoding on the CPU", self._where(), reason)

    def _disconnect(self) -> None:
        container, self._container = self._container, None
        self._connected = False
        if container is not None:
            try:
                container.close()
            except Exception:
                pass

    def _reconnect(self) -> bool:
        """Reconnect a live stream with exponential backoff; False when stopped first."""
        context = self.context
        delay = float(self.params.reconnect_initial)
        longest = max(delay, float(self.params.reconnect_max))
        attempt = 0
        while not context.stopped.is_set():
            if context.stopped.wait(delay):
                return False
            attempt += 1
            try:
                self._connect()
            except SourceError as exc:
                self._last_error = str(exc)
                if attempt == 1 or attempt % 10 == 0:
                    context.logger.warning("%s; retrying in %.1f s (attempt %d)", exc, min(longest, delay * 2), attempt)
                delay = min(longest, max(delay * 2, 0.05))
                continue
            self._reconnects += 1
            context.logger.warning("%s: reconnected (reconnect %d)", self._where(), self._reconnects)
            return True
        return False

    def items(self) -> Iterator[SourceItem]:
        """Decoded frames until the file ends (or forever for a live stream), or the stop."""
        context = self.context
        fps = float(self.params.fps)
        width, height = int(self.params.width), int(self.params.height)
        realtime = bool(self.params.realtime) and not self.live
        next_time: float | None = None
        plan: _SkipPlan | None = None
        offset = 0.0  # a looped file's time so far, so that its frame times keep growing
        clock: float | None = None  # monotonic time of frame time 0 (realtime)
        while not context.stopped.is_set():
            if self._container is None:
                if not self.live:
                    self._connect()
                elif not self._reconnect():
                    return
            container = self._container
            stream = container.streams.video[0]
            if fps > 0 and (plan is None or self.live):  # a file keeps its plan across loops; a camera relearns
                plan = _SkipPlan(fps)
            if plan is not None:
                plan.apply(stream)
                self._skip_frame = plan.describe()
            failure: str | None = None
            again_on_cpu = False  # the GPU could not convert the first frame: the same frames again, on the CPU
            produced = 0
            packets = 0
            last = 0.0
            at_open = (next_time, clock, self._index)
            decoded_before = self._decoded
            rate = float(stream.average_rate or stream.guessed_rate or 30)
            try:
                for packet in container.demux(stream):
                    if context.stopped.is_set():
                        return
                    packets += bool(packet.size)
                    if plan is not None and plan.keys_only and not packet.is_keyframe and packet.size:
                        self._discarded += 1
                        continue
                    try:
                        frames = packet.decode()
                    except self._av.error.FFmpegError as exc:
                        if self.live or self._decoder == "cuda":
                            raise  # a camera reconnects; a file on the GPU decoder is read again on the CPU
                        self._corrupt_packet(exc)  # a damaged file: skip the packet and go on, as ffmpeg does
                        continue
                    for frame in frames:
                        if context.stopped.is_set():
                            return
                        self._decoded += 1
                        if self._decoder == "cuda" and not stream.codec_context.is_hwaccel:
                            # FFmpeg took the software path itself (no CUDA decoder for this codec or profile)
                            self._fall_back(f"FFmpeg has no CUDA decoder for this stream ({stream.codec_context.name}); it decodes on the CPU")
                        t = frame.time
                        if t is None and not self.live:  # no timestamps (a raw .h264): its place by the packets read
                            t = max((packets - 1) / rate, last + 1.0 / rate if self._decoded - decoded_before > 1 else 0.0)
                        if t is not None:
                            last = t
                        if plan is not None and plan.learn(frame, stream):
                            self._skip_frame = plan.describe()
                            context.logger.debug("%s: decoding %s", self._where(), self._skip_frame)
                        if fps > 0:
                            now = offset + t if t is not None else time.monotonic()
                            if next_time is None:
                                next_time = now
                            if now + 1e-6 < next_time:
                                self._skipped += 1
                                continue
                            next_time = max(next_time + 1.0 / fps, now)
                        if self._index < context.first_index:  # the driver skips it: neither converted nor paced
                            yield SourceItem(inputs={}, index=self._index, timestamp=time.time())
                            self._index += 1
                            continue
                        if realtime and t is not None:
                            if clock is None:
                                clock = time.monotonic() - offset - t
                            wait = clock + offset + t - time.monotonic()
                            if wait > 0 and context.stopped.wait(wait):
                                return
                        size = _size(frame.width, frame.height, width, height)
                        if self._cuda_frames is not None and frame.format.name == "cuda":
                            try:
                                array = self._cuda_frames.to_rgb(frame, (size["width"], size["height"]) if size else None)
                            except Exception as exc:  # noqa: BLE001 - any failure of the GPU path is reported, then avoided
                                self._fall_back_convert(f"converting a frame on the GPU failed: {type(exc).__name__}: {exc}")
                                if produced == 0:
                                    again_on_cpu = True
                                else:
                                    failure = f"{type(exc).__name__}: {exc}"
                                break
                        else:
                            array = frame.to_ndarray(format="rgb24", **size)
                        produced += 1
                        yield SourceItem(inputs={self._target: Image(array)}, index=self._index, timestamp=time.time())
                        self._index += 1
                        self._high = max(self._high, self._index)
                    if failure is not None or again_on_cpu:
                        break
            except self._av.error.FFmpegError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if failure is None and not self.live and 0 < packets < int(stream.frames or 0) and offset == 0.0:
                self._last_error = (
                    f"{self._where()}: the file ended after {packets} of the {stream.frames} frames its header announces "
                    "(cut short, e.g. by an interrupted copy?)"
                )
                context.logger.warning("%s", self._last_error)
            loops = failure is None and not again_on_cpu and not self.live and bool(self.params.loop)
            if loops and self._decoded > decoded_before and self._rewind():
                offset += last + 1.0 / rate
                continue
            self._disconnect()
            if again_on_cpu:  # the plan is relearnt: it saw these frames once already
                next_time, clock, self._index = at_open  # the frames it gave, skipped ones, come again
                plan = None
                continue
            if failure is not None and self._decoder == "cuda" and produced == 0:
                # the GPU decoder opened but could not decode (a codec or profile NVDEC lacks, no
                # free decoder session...): the same frames again from the CPU, none lost
                self._fall_back(f"the CUDA decoder failed before its first frame: {failure}")
                continue
            offset += last + 1.0 / rate
            if failure is not None and self._decoder == "cuda" and not self.live:  # opened again, on the CPU
                self._fall_back(f"the CUDA decoder failed after {produced} frames: {failure}")
            if failure is not None:
                self._last_error = f"{self._where()}: stream lost: {failure}"
            if not self.live:
                if failure is not None:
                    raise SourceError(f"{self._where()}: decoding failed: {failure}")
                if not bool(self.params.loop):
                    return
                continue
            next_time = None
            offset = 0.0
            context.logger.warning("%s: stream ended (%s); reconnecting", self._where(), failure or "end of stream")

    def _corrupt_packet(self, exc: BaseException) -> None:
        """Count a packet of a file the decoder refused, and say so (first, then every 100th)."""
        self._corrupt += 1
        self._last_error = f"{self._where()}: a damaged packet was skipped ({self._corrupt} so far): {type(exc).__name__}: {exc}"
        if self._corrupt == 1 or self._corrupt % 100 == 0:
            self.context.logger.warning("%s", self._last_error)

    def _rewind(self) -> bool:
        """Seek a looping file back to its start, keeping its decoder (a GPU decoder's session is costly to
        open again); False when the file cannot seek (it is opened again instead)."""
        try:
            self._container.seek(0)  # PyAV flushes the decoders too
        except (self._av.error.FFmpegError, OSError, ValueError) as exc:
            self.context.logger.debug("%s: cannot seek to the start (%s); opening it again", self._where(), exc)
            return False
        return True

    def close(self) -> None:
        """Close the video (idempotent)."""
        if getattr(self, "_container", None) is not None:
            self._disconnect()

    def stats(self) -> dict[str, Any]:
        """Counters and state of the video.

        ``frames`` produced, ``decoded`` (frames out of the decoder), ``skipped`` (decoded,
        then left out by ``fps``), ``discarded`` (packets not decoded at all because ``fps``
        needs key frames only), ``corrupt`` (damaged packets of a file skipped, as ffmpeg
        does), ``decoder`` (``cuda`` or ``cpu``), ``decode_fallback`` (why
        not ``cuda``, or None), ``convert`` (where colours are converted to RGB and frames
        resized: ``cuda`` when decoded frames stay on the GPU, else ``cpu``),
        ``convert_fallback`` (why not ``cuda`` while decoding on the GPU, or None),
        ``skip_frame`` (what ``fps`` let the decoder skip),
        ``reconnects``, ``connected``, ``last_error``.
        """
        return {
            "frames": max(getattr(self, "_high", 0), getattr(self, "_index", 0)),
            "decoded": getattr(self, "_decoded", 0),
            "skipped": getattr(self, "_skipped", 0),
            "discarded": getattr(self, "_discarded", 0),
            "corrupt": getattr(self, "_corrupt", 0),
            "decoder": getattr(self, "_decoder", "cpu"),
            "decode_fallback": getattr(self, "_decode_fallback", None),
            "convert": "cuda" if getattr(self, "_cuda_frames", None) is not None and getattr(self, "_decoder", "cpu") == "cuda" else "cpu",
            "convert_fallback": getattr(self, "_convert_fallback", None),
            "skip_frame": getattr(self, "_skip_frame", None),
            "reconnects": getattr(self, "_reconnects", 0),
            "connected": getattr(self, "_connected", False),
            "last_error": getattr(self, "_last_error", None),
        }


def _nvidia_gpu_listed() -> bool:
    """Whether this machine lists an NVIDIA GPU (``/dev/nvidia<N>``) that ``CUDA_VISIBLE_DEVICES`` does not hide."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


class _SkipPlan:
    """What a target fps lets the decoder leave out, learnt from the stream's first two GOPs.

    Non-reference frames are always skipped (nothing refers to them). Once three key
    frames have been seen: when key frames alone come at least ``fps`` times a second,
    only key-frame packets are decoded; else when I and P frames do, B frames are
    skipped too (``BIDIR``: only B frames refer to B frames). A camera's usual
    I/P stream with one key frame a second allows neither: every frame is decoded.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.keys_only = False
        self.level = "NONREF"
        self._keys: list[float] = []
        self._ip_counts: list[int] = []
        self._ip = 0
        self._decided = False

    def learn(self, frame: Any, stream: Any) -> bool:
        """Count one decoded frame; True when this frame settled the plan (and set it on the decoder)."""
        t = frame.time
        if self._decided or t is None:
            return False
        if frame.key_frame:
            if self._keys:
                self._ip_counts.append(self._ip)
            self._keys.append(t)
            self._ip = 0
        if self._keys and int(frame.pict_type) in (_PICT_I, _PICT_P):
            self._ip += 1
        if len(self._keys) < 3:
            if self._keys and t - self._keys[0] > 20.0:  # key frames too rare to matter: decode all
                self._decided = True
                return True
            return False
        self._decided = True
        gaps = [max(b - a, 1e-6) for a, b in zip(self._keys, self._keys[1:])]
        wanted = self.fps * (1 - 1e-3)
        if 1.0 / max(gaps) >= wanted:
            self.keys_only, self.level = True, "NONKEY"
            return True
        ip_rate = min(n / gap for n, gap in zip(self._ip_counts, gaps))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        # B frames exist when I and P frames come less often than frames do (the non-reference
        # ones among them are not even decoded by now, so they are counted by their absence)
        if wanted <= ip_rate < 0.99 * rate:
            self.level = "BIDIR"
            stream.codec_context.skip_frame = "BIDIR"
        return True

    def apply(self, stream: Any) -> None:
        """Set what the decoder of a newly opened ``stream`` may skip (non-reference frames always: nothing refers to them)."""
        stream.codec_context.skip_frame = "BIDIR" if self.level == "BIDIR" else "NONREF"

    def describe(self) -> str:
        kept = {"NONREF": "non-reference frames skipped", "BIDIR": "B frames skipped", "NONKEY": "key frames only"}
        return f"{kept[self.level]}{'' if self._decided else ' (still learning the GOP)'}"


def _size(frame_width: int, frame_height: int, width: int, height: int) -> dict[str, int]:
    """``reformat`` keyword arguments for a target size; one side 0 keeps the aspect ratio."""
    if not width and not height:
        return {}
    if not height:
        height = max(2, round(frame_height * width / frame_width / 2) * 2)
    elif not width:
        width = max(2, round(frame_width * height / frame_height / 2) * 2)
    return {"width": width, "height": height}
