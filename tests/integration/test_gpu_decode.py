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


def _frames(url: str, decode: str, limit: int | None = None, **params: object) -> tuple[list, dict]:  # type: ignore[type-arg]
    from rvai_sdk.extensions.sources.video_source import VideoSource

    source = VideoSource(url, params={"decode": decode, **params})
    source.open(SourceContext(ref="v", inputs=frame_pipeline().inputs))
    frames = []
    try:
        for item in source.items():
            frames.append(item.inputs["frame"])
            if limit is not None and len(frames) == limit:
                break
    finally:
        source.close()
    return frames, source.stats()


def _distance(a: object, b: object) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def _clip(tmp_path: Path) -> str:
    require_extra("av")
    from rvai_sdk.extensions.sources.video_source import _nvidia_gpu_listed

    if not _nvidia_gpu_listed():
        pytest.skip("no NVIDIA GPU listed here")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_cameras import make_clip

    clip = str(tmp_path / "clip.mp4")
    make_clip(clip, seconds=2.0, width=1920, height=1080)
    return clip


def _torch_on_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_cuda_decoding_gives_the_cpus_frames_or_falls_back_with_the_reason(tmp_path: Path) -> None:
    import numpy as np

    clip = _clip(tmp_path)
    on_cpu, _ = _frames(clip, "cpu")
    on_gpu, stats = _frames(clip, "cuda")
    assert len(on_gpu) == len(on_cpu) == 60
    print("decode='cuda' stats:", stats)
    if stats["decoder"] == "cuda":
        assert stats["decode_fallback"] is None
        if _torch_on_cuda():  # decoded frames stay on the GPU, which converts their colours
            assert stats["convert"] == "cuda" and stats["convert_fallback"] is None, stats
        # H.264 decoding is exact, but the GPU path converts NV12 (what NVDEC hands back) to RGB while the
        # CPU path converts planar YUV 4:2:0, and the two conversions interpolate chroma differently: on an
        # H200 a frame differed from the CPU's by 2.1 levels on average. So: each GPU frame is nearer to the
        # CPU frame of the same index than to its neighbours (same frames, same order; the clip moves by 8
        # pixels a frame, so neighbours differ far more), and the conversion stays small (mean under 4 levels).
        for i, frame in enumerate(on_gpu):
            own = _distance(frame, on_cpu[i])
            assert own < 4.0, (i, own)
            for j in (i - 1, i + 1):
                if 0 <= j < len(on_cpu):
                    assert own < _distance(frame, on_cpu[j]), (i, j, own)
    else:
        assert "CUDA" in stats["decode_fallback"], stats
        assert all(np.array_equal(a, b) for a, b in zip(on_gpu, on_cpu))


def test_cuda_decoding_resizes_and_loops_like_the_cpu(tmp_path: Path) -> None:
    """A looped file (its end crossed twice) resized to 224x224: the CPU's frames, in the same order."""
    clip = _clip(tmp_path)
    params = {"loop": True, "width": 224, "height": 224}
    on_cpu, _ = _frames(clip, "cpu", limit=150, **params)
    on_gpu, stats = _frames(clip, "cuda", limit=150, **params)
    print("decode='cuda', resized and looped, stats:", stats)
    assert len(on_gpu) == len(on_cpu) == 150
    assert all(frame.shape == (224, 224, 3) for frame in on_gpu)
    if stats["decoder"] == "cuda" and _torch_on_cuda():
        assert stats["convert"] == "cuda", stats
    for i, frame in enumerate(on_gpu):
        own = _distance(frame, on_cpu[i])
        assert own < 6.0, (i, own)  # antialiased bilinear resizing on the GPU against FFmpeg's scaler: 3.6 on the CPU
        for j in (i - 1, i + 1):
            if 0 <= j < len(on_cpu) and j % 60 != 0 and i % 60 != 0:
                assert own < _distance(frame, on_cpu[j]), (i, j, own)
