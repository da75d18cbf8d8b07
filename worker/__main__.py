"""``python -m eventfleet.worker``: the same as ``eventfleet worker``, without the rest of the
CLI."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from eventfleet.store.settings import Settings
from eventfleet.worker.main import run_worker

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eventfleet.worker",
        description="Run one worker process until SIGTERM (drain) or a second signal (hard stop).",
    )
    parser.add_argument("--redis", dest="redis_url", help="Redis URL [env REDIS_URL]")
    parser.add_argument("--namespace", help="key namespace [env EVENTFLEET_NAMESPACE]")
    parser.add_argument(
        "--metrics-port", type=int, help="port for /metrics /healthz /readyz (0 off)"
    )
    parser.add_argument("--worker-id", help="consumer name [env EVENTFLEET_WORKER_ID]")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'setting'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors(include_url=False)
        )
        print(f"error: invalid setting: {problems}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
