"""VideoSource: frames of a video file or a live stream (``rtsp://`` camera), decoded with PyAV."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import Source, SourceContext, SourceItem, SourceParameters
from rvai_sdk.exc import SourceError
from rvai_sdk.types import Boolean, Enum, FloatRange, Image, IntegerRange, String, unwrap_optional

__all__ = ["VideoSource", "VideoSourceParameters"]

_FILE_SCHEMES = ("", "file")


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
        self._index = getattr(self, "_index", 0)
        self._reconnects = getattr(self, "_reconnects", 0)
        self._decoded = getattr(self, "_decoded", 0)
        self._skipped = getattr(self, "_skipped", 0)
        self._connected = False
        self._last_error: str | None = getattr(self, "_last_error", None)
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
        try:
            container = av.open(self.url, options=options, timeout=timeout)
        except Exception as exc:
            raise SourceError(f"{self._where()}: cannot open: {type(exc).__name__}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self._where()}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._container = container
        self._connected = True

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
        next_time: float | None = None
        while not context.stopped.is_set():
            if self._container is None:
                if not self.live:
                    self._connect()
                elif not self._reconnect():
                    return
            container = self._container
            failure: str | None = None
            base: float | None = None
            try:
                for frame in container.decode(video=0):
                    if context.stopped.is_set():
                        return
                    self._decoded += 1
                    if fps > 0:
                        t = frame.time if frame.time is not None else time.monotonic()
                        if base is None or next_time is None:
                            base, next_time = t, t
                        if t + 1e-6 < next_time:
                            self._skipped += 1
                            continue
                        next_time = max(next_time + 1.0 / fps, t)
                    array = frame.to_ndarray(format="rgb24", **_size(frame.width, frame.height, width, height))
                    yield SourceItem(inputs={self._target: Image(array)}, index=self._index, timestamp=time.time())
                    self._index += 1
            except self._av.error.FFmpegError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            self._disconnect()
            next_time = None
            if failure is not None:
                self._last_error = f"{self._where()}: stream lost: {failure}"
            if not self.live:
                if failure is not None:
                    raise SourceError(f"{self._where()}: decoding failed: {failure}")
                if not bool(self.params.loop):
                    return
                continue
            context.logger.warning("%s: stream ended (%s); reconnecting", self._where(), failure or "end of stream")

    def close(self) -> None:
        """Close the video (idempotent)."""
        if getattr(self, "_container", None) is not None:
            self._disconnect()

    def stats(self) -> dict[str, Any]:
        """``frames`` produced, ``decoded``, ``skipped`` (by fps), ``reconnects``, ``connected``, ``last_error``."""
        return {
            "frames": getattr(self, "_index", 0),
            "decoded": getattr(self, "_decoded", 0),
            "skipped": getattr(self, "_skipped", 0),
            "reconnects": getattr(self, "_reconnects", 0),
            "connected": getattr(self, "_connected", False),
            "last_error": getattr(self, "_last_error", None),
        }


def _size(frame_width: int, frame_height: int, width: int, height: int) -> dict[str, int]:
    """``reformat`` keyword arguments for a target size; one side 0 keeps the aspect ratio."""
    if not width and not height:
        return {}
    if not height:
        height = max(2, round(frame_height * width / frame_width / 2) * 2)
    elif not width:
        width = max(2, round(frame_width * height / frame_height / 2) * 2)
    return {"width": width, "height": height}
