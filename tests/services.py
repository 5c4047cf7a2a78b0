"""Wait (bounded) until the services the test suite talks to answer on 127.0.0.1; exit 1 naming any that does not.

Run by ``make services`` after starting them: PostgreSQL on 5432 and Mosquitto on 1883.
"""

from __future__ import annotations

import socket
import sys
import time

SERVICES = {"PostgreSQL": 5432, "Mosquitto": 1883}


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def main(timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    waiting = dict(SERVICES)
    while waiting and time.monotonic() < deadline:
        waiting = {name: port for name, port in waiting.items() if not answers(port)}
        if waiting:
            time.sleep(0.5)
    for name, port in waiting.items():
        print(f"{name} does not answer on 127.0.0.1:{port} after {timeout:.0f} s", file=sys.stderr)
    return 1 if waiting else 0


if __name__ == "__main__":
    sys.exit(main())
