"""VideoSource on a GPU machine (run by ``make gpu-check``): ``decode="cuda"`` gives the CPU's frames.

Marked ``gpu``. Whether the GPU's decoder (NVDEC through PyAV) works depends on the
machine (a container may lack the driver's video libraries): either it decodes, or it
falls back with the reason; both ways the frames are the same in count and order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rvai_sdk.drivers import SourceContext
from tests.conftest import require_extra
from tests.extensions.source_sink.support import frame_pipeline

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(180)]


def _frames(url: str, decode: str) -> tuple[list, dict]:  # type: ignore[type-arg]
    from rvai_sdk.extensions.sources.video_source import VideoSource

    source = VideoSource(url, params={"decode": decode})
    source.open(SourceContext(ref="v", inputs=frame_pipeline().inputs))
    try:
        frames = [item.inputs["frame"] for item in source.items()]
    finally:
        source.close()
    return frames, source.stats()


def test_cuda_decoding_gives_the_cpus_frames_or_falls_back_with_the_reason(tmp_path: Path) -> None:
    require_extra("av")
    import numpy as np

    from rvai_sdk.extensions.sources.video_source import _nvidia_gpu_listed

    if not _nvidia_gpu_listed():
        pytest.skip("no NVIDIA GPU listed here")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_cameras import make_clip

    clip = str(tmp_path / "clip.mp4")
    make_clip(clip, seconds=2.0, width=1920, height=1080)
    on_cpu, _ = _frames(clip, "cpu")
    on_gpu, stats = _frames(clip, "cuda")
    assert len(on_gpu) == len(on_cpu) == 60
    if stats["decoder"] == "cuda":
        assert stats["decode_fallback"] is None
        # H.264 decoding is exact, but the GPU path converts NV12 (what NVDEC hands back) to RGB while the
        # CPU path converts planar YUV 4:2:0, and the two conversions interpolate chroma differently: on an
        # H200 a frame differed from the CPU's by 2.1 levels on average. So: each GPU frame is nearer to the
        # CPU frame of the same index than to its neighbours (same frames, same order; the clip moves by 8
        # pixels a frame, so neighbours differ far more), and the conversion stays small (mean under 4 levels).
        def distance(a: object, b: object) -> float:
            return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())

        for i, frame in enumerate(on_gpu):
            own = distance(frame, on_cpu[i])
            assert own < 4.0, (i, own)
            for j in (i - 1, i + 1):
                if 0 <= j < len(on_cpu):
                    assert own < distance(frame, on_cpu[j]), (i, j, own)
    else:
        assert "CUDA" in stats["decode_fallback"], stats
        assert all(np.array_equal(a, b) for a, b in zip(on_gpu, on_cpu))
