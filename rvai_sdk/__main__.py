"""``python -m rvai_sdk``: the ``rvai-sdk`` command line (:mod:`rvai_sdk.cli`)."""

from rvai_sdk.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
