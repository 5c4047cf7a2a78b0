"""A small RTSP server for the tests: serves one H.264 MP4 clip on every mount path, each client from the start.

Run it with the system Python that has GStreamer's introspection bindings
(Debian: ``gir1.2-gst-rtsp-server-1.0`` and ``python3-gi``)::

    /usr/bin/python3 rtsp_server.py --port 8554 --clip clip.mp4

It prints ``ready`` on stdout once it listens on 127.0.0.1, and serves until killed.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class AnyMount(GstRtspServer.RTSPMountPoints):
    """Every path gets the same media factory (``/cam1``, ``/cam2``...)."""

    def __init__(self, factory: GstRtspServer.RTSPMediaFactory) -> None:
        super().__init__()
        self.factory = factory

    def do_make_path(self, url):  # type: ignore[no-untyped-def]
        return "/clip"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clip", required=True)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( filesrc location={args.clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    mounts = AnyMount(factory)
    mounts.add_factory("/clip", factory)
    server.set_mount_points(mounts)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
