"""The GPU colour conversion of VideoSource (``_cuda_frames``), checked on the CPU against FFmpeg's own.

``nv12_to_rgb`` runs on whatever device its planes are on; here on CPU tensors, fed the
NV12 planes FFmpeg gives for real H.264 frames, it must give the RGB frames FFmpeg's
software scaler gives. On a GPU machine, ``tests/integration/test_gpu_decode.py`` runs it
on frames NVDEC left in device memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_extra

pytestmark = pytest.mark.timeout(120)


def _nv12_and_rgb(tmp_path: Path, frames: int = 6) -> list[tuple[np.ndarray, np.ndarray, object]]:
    """(NV12 array, FFmpeg's RGB, the frame) for the first frames of a generated H.264 clip."""
    require_extra("av")
    import av

    from tests.extensions.source_sink.test_video_source import _make_clip

    path = _make_clip(tmp_path / "clip.mp4")
    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == frames:
                break
            out.append((frame.to_ndarray(format="nv12"), frame.to_ndarray(format="rgb24"), frame))
    return out


def test_nv12_converted_by_torch_gives_ffmpegs_rgb_frames(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import nv12_to_rgb

    for nv12, rgb, frame in _nv12_and_rgb(tmp_path):
        height = frame.height  # type: ignore[attr-defined]
        ours = nv12_to_rgb(torch.from_numpy(nv12[:height]), torch.from_numpy(nv12[height:])).numpy()
        assert ours.shape == rgb.shape and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - rgb.astype(np.int16))
        # the same matrix and range as FFmpeg's; only rounding and chroma interpolation differ
        assert diff.mean() < 2.0 and diff.max() <= 6, (diff.mean(), diff.max())


def test_resizing_on_the_gpu_path_gives_the_asked_size_and_the_same_picture(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import nv12_to_rgb

    nv12, _, frame = _nv12_and_rgb(tmp_path, frames=1)[0]
    height = frame.height  # type: ignore[attr-defined]
    small = nv12_to_rgb(torch.from_numpy(nv12[:height]), torch.from_numpy(nv12[height:]), size=(80, 60)).numpy()
    reference = frame.to_ndarray(format="rgb24", width=80, height=60)  # type: ignore[attr-defined]
    assert small.shape == (60, 80, 3)
    assert np.abs(small.astype(np.int16) - reference.astype(np.int16)).mean() < 6.0


def test_ten_bit_planes_convert_like_their_eight_bit_values(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import nv12_to_rgb

    nv12, _, frame = _nv12_and_rgb(tmp_path, frames=1)[0]
    height = frame.height  # type: ignore[attr-defined]
    y, uv = torch.from_numpy(nv12[:height]), torch.from_numpy(nv12[height:])
    # P010 keeps each 10-bit sample in the high bits of 16: the 8-bit value shifted by 8 is the same colour
    y16, uv16 = (y.to(torch.int32) << 8).to(torch.int16), (uv.to(torch.int32) << 8).to(torch.int16)
    assert torch.equal(nv12_to_rgb(y16, uv16), nv12_to_rgb(y, uv))


def test_the_colour_matrix_and_range_follow_the_standards() -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import nv12_to_rgb

    def one(y: int, u: int, v: int, **kwargs: object) -> list[int]:
        luma = torch.full((2, 2), y, dtype=torch.uint8)
        chroma = torch.tensor([[u, v]], dtype=torch.uint8)
        return nv12_to_rgb(luma, chroma, **kwargs)[0, 0].tolist()  # type: ignore[arg-type]

    assert one(16, 128, 128) == [0, 0, 0] and one(235, 128, 128) == [255, 255, 255]  # limited range
    assert one(0, 128, 128, full_range=True) == [0, 0, 0] and one(255, 128, 128, full_range=True) == [255, 255, 255]
    # pure red by BT.601 (Y 81, U 90, V 240) and by BT.709 (Y 63, U 102, V 240), limited range
    assert all(abs(a - b) <= 2 for a, b in zip(one(81, 90, 240), [255, 0, 0]))
    assert all(abs(a - b) <= 2 for a, b in zip(one(63, 102, 240, matrix="bt709"), [255, 0, 0]))


def test_planes_that_are_not_nv12_are_refused_naming_the_plane() -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import nv12_to_rgb

    with pytest.raises(ValueError, match="chroma plane"):
        nv12_to_rgb(torch.zeros((4, 4), dtype=torch.uint8), torch.zeros((1, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="luma plane"):
        nv12_to_rgb(torch.zeros((4, 4, 3), dtype=torch.uint8), torch.zeros((2, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="colour matrix"):
        nv12_to_rgb(torch.zeros((4, 4), dtype=torch.uint8), torch.zeros((2, 4), dtype=torch.uint8), matrix="bt2020")


def test_without_a_cuda_device_the_gpu_conversion_refuses_to_start_and_says_why() -> None:
    torch = pytest.importorskip("torch")
    from rvai_sdk.extensions.sources._cuda_frames import CudaFrames

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: tests/integration/test_gpu_decode.py covers the conversion there")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        CudaFrames()
