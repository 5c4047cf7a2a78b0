"""Frames decoded by NVDEC turned into RGB on the GPU, so that the host never converts colours.

PyAV's CUDA hardware acceleration can leave decoded frames in device memory
(``HWAccel(is_hw_owned=True)``) and export their planes through DLPack. This module
converts such a frame (NV12, or P010 for 10-bit streams) to RGB with torch on the
device, resizes it there when asked, and copies the RGB result to the host: the one
copy a driver process needs, since frames cross to the inference process through
shared memory. Measured on an NVIDIA H200 (``bench_cameras.py``'s decode probe,
1080p H.264): NVDEC plus the host's NV12-to-RGB conversion costs 10.9 CPU ms per
frame, NVDEC alone 1.4; the conversion on the GPU removes the difference but the
copy.

The colour matrix follows the frame's tags as FFmpeg's software scaler does: BT.709
when the stream says so, else BT.601, limited range unless the stream says full.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["nv12_to_rgb", "CudaFrames"]

# AVColorSpace / AVColorRange values as PyAV gives them
_BT709 = 1
_FULL_RANGE = 2

# (R from V, G from U, G from V, B from U)
_MATRICES = {
    "bt601": (1.596027, -0.391762, -0.812968, 2.017232),
    "bt709": (1.792741, -0.213249, -0.532909, 2.112402),
}
_FULL = {
    "bt601": (1.402, -0.344136, -0.714136, 1.772),
    "bt709": (1.5748, -0.187324, -0.468124, 1.8556),
}


def nv12_to_rgb(y: Any, uv: Any, *, matrix: str = "bt601", full_range: bool = False, size: tuple[int, int] | None = None) -> Any:
    """RGB ``(height, width, 3)`` uint8 from NV12 planes, on the planes' torch device.

    Args:
        y: the luma plane, ``(height, width)`` (uint8, or 16-bit with the value in the
            high bits as P010 stores it).
        uv: the interleaved chroma plane, ``(height / 2, width)`` or ``(height / 2, width / 2, 2)``.
        matrix: ``bt601`` or ``bt709``.
        full_range: the samples span 0-255 (JPEG range) instead of 16-235.
        size: ``(width, height)`` to resize to (bilinear, antialiased when shrinking), or None.

    Raises:
        ValueError: a plane's shape does not fit NV12, or the matrix is unknown.
    """
    import torch
    import torch.nn.functional as F

    if matrix not in _MATRICES:
        raise ValueError(f"unknown colour matrix {matrix!r} (bt601 or bt709)")
    if y.dim() != 2:
        raise ValueError(f"the luma plane must be (height, width), got {tuple(y.shape)}")
    height, width = y.shape
    if uv.dim() == 2:
        uv = uv.reshape(uv.shape[0], -1, 2)
    if uv.dim() != 3 or uv.shape[0] * 2 < height or uv.shape[1] * 2 < width or uv.shape[2] != 2:
        raise ValueError(f"the chroma plane {tuple(uv.shape)} does not fit a {width}x{height} NV12 frame")
    luma, chroma = _samples(y), _samples(uv) - 128.0
    # chroma sits at half resolution: each sample covers 2x2 pixels
    chroma = chroma.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)[:height, :width]
    u, v = chroma[..., 0], chroma[..., 1]
    if full_range:
        rv, gu, gv, bu = _FULL[matrix]
    else:
        rv, gu, gv, bu = _MATRICES[matrix]
        luma = (luma - 16.0) * (255.0 / 219.0)
    rgb = torch.stack((luma + rv * v, luma + gu * u + gv * v, luma + bu * u), dim=-1)
    if size is not None and size != (width, height):
        out_w, out_h = size
        shrink = out_w < width or out_h < height
        chw = rgb.permute(2, 0, 1).unsqueeze(0)
        rgb = F.interpolate(chw, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=shrink)[0].permute(1, 2, 0)
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def _samples(plane: Any) -> Any:
    """A plane's samples as float on the 8-bit scale (P010 keeps 10 bits in the high bits of 16, unsigned)."""
    import torch

    if plane.element_size() == 2:
        return (plane.view(torch.int16).to(torch.int32) & 0xFFFF).float() / 256.0
    return plane.float()


class CudaFrames:
    """Converts CUDA frames of one PyAV decoder to host RGB arrays (see the module's docstring).

    Made in the process that decodes (a driver process), where it is the only user of
    the GPU's primary context with PyAV: torch and FFmpeg then share one CUDA context,
    so the planes' device pointers are valid for torch.

    Raises:
        RuntimeError: torch cannot be imported or sees no CUDA device (the caller decodes
            with the frames downloaded instead).
    """

    def __init__(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise RuntimeError(f"torch is not installed ({exc}): colours converted on the CPU") from exc
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device: colours converted on the CPU")
        self._torch = torch

    def to_rgb(self, frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        """The frame as a host ``(height, width, 3)`` uint8 array, resized to ``size`` ``(width, height)`` if given.

        Raises:
            ValueError: the frame is not a two-plane CUDA frame (NV12 or P010).
        """
        torch = self._torch
        planes = frame.planes
        if len(planes) != 2:
            raise ValueError(f"a CUDA frame with {len(planes)} planes ({getattr(frame, 'sw_format', '?')}): only NV12 and P010 convert on the GPU")
        # FFmpeg copies the decoded surface on a stream of its own: wait for the device before taking the planes,
        # whose DLPack export takes no stream to order against (PyAV refuses one, which torch.from_dlpack passes)
        torch.cuda.synchronize()
        y = torch.utils.dlpack.from_dlpack(planes[0].__dlpack__())
        uv = torch.utils.dlpack.from_dlpack(planes[1].__dlpack__())
        matrix = "bt709" if int(getattr(frame, "colorspace", 0) or 0) == _BT709 else "bt601"
        full = int(getattr(frame, "color_range", 0) or 0) == _FULL_RANGE
        rgb = nv12_to_rgb(y[: frame.height, : frame.width], uv, matrix=matrix, full_range=full, size=size)
        return np.asarray(rgb.cpu().numpy())
