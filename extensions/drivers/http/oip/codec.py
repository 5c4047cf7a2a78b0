"""The V2 codec as the HTTP routes use it: :class:`~rvai_sdk.extensions.drivers._v2.V2Codec`, with its
refusals as :class:`~..errors.HTTPError` answers (the type mapping itself is transport-neutral, shared
with the gRPC service).

See the package docstring for the mapping table.
"""

from __future__ import annotations

from rvai_sdk.extensions.drivers import _v2
from rvai_sdk.extensions.drivers._v2 import DATATYPES, EXTENSIONS, VERSION, V2Error, V2Request, datatype_of

from ..errors import HTTPError

__all__ = ["V2Codec", "V2Request", "DATATYPES", "EXTENSIONS", "VERSION", "datatype_of"]


class V2Codec(_v2.V2Codec):
    """The pipeline as a V2 model over HTTP: as the transport-neutral codec, its refusals raised as :class:`HTTPError`.

    Args:
        pipeline: the pipeline served.
    """

    def request(
        self,
        body: bytes,
        header_length: str | None,
        *,
        max_sid_length: int,
        max_image_pixels: int | None,
    ) -> V2Request:
        """:meth:`_v2.V2Codec.request <rvai_sdk.extensions.drivers._v2.V2Codec.request>`, its refusal raised as HTTP.

        Raises:
            HTTPError: 400 naming the offending input, output or parameter.
        """
        try:
            return super().request(body, header_length, max_sid_length=max_sid_length, max_image_pixels=max_image_pixels)
        except V2Error as exc:
            raise HTTPError(exc.status, "InvalidInput", str(exc)) from exc
