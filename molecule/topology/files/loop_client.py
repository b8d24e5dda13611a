"""A client that sends GETs in a loop until it is stopped, then writes what it saw.

Runs on the lab's client machine during the failure drills:
    python3 loop_client.py URL REPORT [--cookie C] [--interval 0.05] [--max-seconds 300]
SIGTERM ends the loop; the report (JSON) counts requests and failures, gives the longest
time without a successful answer, and for how long before the end every request succeeded.
Standard library only: the client machine has nothing else.
"""

import argparse
import json
import signal
import ssl
import time
import urllib.error
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("report")
    parser.add_argument("--cookie", default="")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    running = True

    def stop(_signum: int, _frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    # The lab's certificate is self-signed: this client checks availability, not identity.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    start = time.monotonic()
    last_success = start
    longest_gap = 0.0
    requests = failures = 0
    last_failure = start
    errors: dict[str, int] = {}
    served_by: dict[str, int] = {}
    while running and time.monotonic() - start < args.max_seconds:
        request = urllib.request.Request(args.url)
        if args.cookie:
            request.add_header("Cookie", args.cookie)
        requests += 1
        try:
            with urllib.request.urlopen(request, timeout=args.timeout, context=context) as reply:
                reply.read()
                server = reply.headers.get("X-Served-By", "?")
                served_by[server] = served_by.get(server, 0) + 1
            now = time.monotonic()
            longest_gap = max(longest_gap, now - last_success)
            last_success = now
        except (urllib.error.URLError, OSError) as error:
            failures += 1
            last_failure = time.monotonic()
            reason = str(getattr(error, "code", None) or getattr(error, "reason", error))
            errors[reason] = errors.get(reason, 0) + 1
        time.sleep(args.interval)
    longest_gap = max(longest_gap, time.monotonic() - last_success)

    with open(args.report, "w") as out:
        json.dump(
            {
                "seconds": round(time.monotonic() - start, 2),
                "requests": requests,
                "failures": failures,
                "errors": errors,
                "served_by": served_by,
                "longest_gap": round(longest_gap, 2),
                "ok_for_last": round(time.monotonic() - last_failure, 2),
            },
            out,
        )


if __name__ == "__main__":
    main()
