"""``python -m rvai_sdk.services supervise NAME -- COMMAND...``: the supervisor :func:`~rvai_sdk.services.start_detached` starts."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rvai_sdk.services.supervisor import supervise


def main(argv: Sequence[str]) -> int:
    """Run the supervisor of the service ``NAME`` over ``COMMAND``; 2 on a malformed command line."""
    if len(argv) < 4 or argv[0] != "supervise" or argv[2] != "--":
        print("usage: python -m rvai_sdk.services supervise NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(argv[1], argv[3:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
