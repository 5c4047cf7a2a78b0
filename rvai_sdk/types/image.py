"""Image: an HxWxC uint8 numpy array; JSON form: base64 PNG."""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import io
import typing
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import _image_header, _png
from rvai_sdk.types._base import Value, mismatch, rng_or_default

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Image"]

_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_PIXEL_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("rvai_image_pixel_limit", default=None)


class Image(np.ndarray, Value):
    """An image: a numpy ``uint8`` array of shape ``(height, width, channels)``, channels 1 to 4.

    ``Image(array)`` is a view (no copy) when the array already fits; a 2-D array
    becomes ``HxWx1``. Arithmetic and indexing return plain numpy arrays (re-wrap
    with ``Image(...)``), so an Image is always a valid image. JSON form: a base64
    PNG string (lossless). Equality is numpy's, elementwise (use ``numpy.array_equal``).

    ``Image(data)`` takes a ``uint8`` array (or array-like) of shape ``HxWxC`` or
    ``HxW``; another dtype or shape raises :class:`~rvai_sdk.exc.InputValidationError`
    naming it.

    Decoding a file (``from_bytes``, ``from_json``) first reads the width and height
    from its header (PNG ``IHDR``, JPEG ``SOF``, other formats through Pillow) and
    refuses an image of more than :attr:`max_pixels` pixels before decoding it: a
    small, highly compressed file cannot become gigabytes. Raise the limit for a
    type with a subclass (``class Scan(Image): max_pixels = 200_000_000``), for one
    block of code with :meth:`pixel_limit`, or per HTTP driver with the
    ``max_image_pixels`` parameter of ``FastAPIDriver``.

    Attributes:
        max_pixels: the most pixels (width x height) a decoded image may have;
            ``2**25`` (about 33.5 million: 8K UHD, 7680x4320, fits).

    Examples:
        >>> img = Image(np.zeros((2, 3, 3), dtype=np.uint8))
        >>> img.shape, Image.from_json(img.to_json()).shape
        ((2, 3, 3), (2, 3, 3))
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts np.ndarray[Any, Any] under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: np.ndarray[Any, Any], /) -> None: ...


    max_pixels: ClassVar[int] = 2**25

    def __new__(cls, data: Any) -> Image:
        """Wrap an array as an image, without copying when it already fits.

        Args:
            data: a ``uint8`` array (or array-like) of shape ``HxWxC`` or ``HxW``.

        Raises:
            InputValidationError: the dtype is not ``uint8`` or the shape is not an image's.
        """
        array = np.asarray(data)
        if array.dtype != np.uint8:
            raise InputValidationError(
                f"expected Image (a uint8 HxWxC array), got an array of dtype {array.dtype}; convert with "
                ".astype(np.uint8) after scaling to 0..255",
                expected="Image",
            )
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
            raise InputValidationError(
                f"expected Image (HxWxC with C in 1..4, H and W >= 1), got an array of shape {array.shape}",
                expected="Image",
            )
        return array.view(cls)

    def __array_finalize__(self, obj: Any) -> None:
        pass

    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        result = np.asarray(array).view(np.ndarray)
        if return_scalar and result.ndim == 0:
            return result[()]
        return result

    def __getitem__(self, key: Any) -> Any:
        result = super().__getitem__(key)
        return result.view(np.ndarray) if isinstance(result, np.ndarray) else result

    # Methods that may change dtype or shape return plain arrays too.
    def astype(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).astype(*args, **kwargs))

    def reshape(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).reshape(*args, **kwargs))

    def transpose(self, *axes: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).transpose(*axes))

    def ravel(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).ravel(*args, **kwargs))

    def flatten(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).flatten(*args, **kwargs))

    def squeeze(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).squeeze(*args, **kwargs))

    def swapaxes(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return typing.cast(np.ndarray, self.view(np.ndarray).swapaxes(*args, **kwargs))

    @property
    def T(self) -> np.ndarray:  # noqa: N802
        return typing.cast(np.ndarray, self.view(np.ndarray).T)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Image, (np.asarray(self).view(np.ndarray).copy(),))

    def __repr__(self) -> str:
        h, w, c = self.shape
        return f"Image({h}x{w}x{c} uint8)"

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Image:
        """Wrap a ``uint8`` numpy array of shape ``HxWxC`` (C in 1..4) or ``HxW``, without copying.

        Raises:
            InputValidationError: not a numpy array, or the wrong dtype or shape.
        """
        if type(value) is cls:
            return value
        if isinstance(value, np.ndarray):
            return cls(value)
        raise mismatch("Image", value)

    def to_png(self, compress_level: int = 1) -> bytes:
        """Encode the image as PNG (lossless; grey, grey+alpha, RGB or RGBA by channel count).

        Args:
            compress_level: the zlib level, 0 (fastest) to 9 (smallest).

        Returns:
            The PNG file's bytes.

        Examples:
            >>> Image(np.zeros((1, 1, 3), np.uint8)).to_png()[:4]
            b'\\x89PNG'
        """
        return _png.encode(np.asarray(self).view(np.ndarray), compress_level)

    @classmethod
    @contextlib.contextmanager
    def pixel_limit(cls, max_pixels: int | None) -> Iterator[None]:
        """Decode with another pixel limit inside a ``with`` block (this thread or task only).

        Args:
            max_pixels: the most pixels a decoded image may have; ``None`` keeps :attr:`max_pixels`.

        Examples:
            >>> tiny = Image(np.zeros((4, 4, 3), np.uint8)).to_png()
            >>> with Image.pixel_limit(10):
            ...     Image.from_bytes(tiny)
            Traceback (most recent call last):
              ...
            rvai_sdk.exc.InputValidationError: the image is 4x4 (16 pixels), more than the limit of 10 pixels; send a smaller image, or raise the limit (Image.max_pixels, Image.pixel_limit(), or the max_image_pixels parameter of FastAPIDriver)
        """
        token = _PIXEL_LIMIT.set(None if max_pixels is None else int(max_pixels))
        try:
            yield
        finally:
            _PIXEL_LIMIT.reset(token)

    @classmethod
    def _check_pixels(cls, width: int, height: int) -> None:
        limit = _PIXEL_LIMIT.get()
        if limit is None:
            limit = cls.max_pixels
        pixels = width * height
        if pixels > limit:
            raise InputValidationError(
                f"the image is {width}x{height} ({pixels} pixels), more than the limit of {limit} pixels; send a "
                "smaller image, or raise the limit (Image.max_pixels, Image.pixel_limit(), or the max_image_pixels "
                "parameter of FastAPIDriver)",
                expected="Image",
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        """Decode an image file: PNG always, other formats such as JPEG when Pillow is installed.

        Pillow decodes when importable; without it a pure numpy decoder handles
        8-bit, non-interlaced grey/grey+alpha/RGB/RGBA PNGs. Palette and other
        modes are converted to RGB or RGBA. The width and height are read from
        the header first: an image of more than :attr:`max_pixels` pixels (or the
        :meth:`pixel_limit` in force) is refused before it is decoded.

        Args:
            data: the file's bytes.

        Returns:
            The decoded image.

        Raises:
            InputValidationError: the bytes are not a decodable image, the image has
                more pixels than the limit, or it needs Pillow (the message says how
                to install it).
        """
        size = _image_header.dimensions(data)
        if size is not None:
            cls._check_pixels(*size)
        try:
            from PIL import Image as PILImage
        except ImportError:
            if data.startswith(_png.SIGNATURE):
                return cls(_png.decode(data))
            raise InputValidationError(
                "only PNG images can be decoded without Pillow; install it: pip install 'rvai_sdk[image]'",
                expected="Image",
            ) from None
        try:
            with PILImage.open(io.BytesIO(data)) as picture:  # reads the header only
                cls._check_pixels(*picture.size)
                if picture.mode not in _MODES:
                    picture = picture.convert("RGBA" if "A" in picture.getbands() or "transparency" in picture.info else "RGB")
                return cls(np.asarray(picture))
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
            if isinstance(exc, InputValidationError):
                raise
            raise InputValidationError(f"cannot decode image: {exc}", expected="Image") from exc

    def to_json(self) -> str:
        """A base64 string of the PNG encoding (exact round trip)."""
        return base64.b64encode(self.to_png()).decode("ascii")

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Image:
        """Decode a base64 image string, or a ``data:image/...;base64,`` URL.

        Raises:
            InputValidationError: not a string, invalid base64, or not a decodable image.
        """
        if not isinstance(obj, str):
            raise mismatch("Image", obj, "the JSON form is a base64 PNG string")
        if obj.startswith("data:"):
            _, _, obj = obj.partition(",")
        try:
            data = base64.b64decode(obj, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputValidationError(f"expected a base64 image, got invalid base64 ({exc})", expected="Image") from exc
        return cls.from_bytes(data)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A base64 string of PNG data."""
        return {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Image:
        """A random 16x16 RGB image."""
        return cls(rng_or_default(rng).integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
