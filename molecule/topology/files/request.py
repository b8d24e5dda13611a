"""One HTTP request from the lab's client machine, printed as JSON.

    python3 request.py METHOD URL [--cookie C] [--json BODY]
prints {"status", "served_by", "set_cookie", "body"}. Standard library only.
"""

import argparse
import json
import ssl
import urllib.error
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method")
    parser.add_argument("url")
    parser.add_argument("--cookie", default="")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    # The lab's certificate is self-signed.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    data = args.json.encode() if args.json is not None else None
    request = urllib.request.Request(args.url, data=data, method=args.method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if args.cookie:
        request.add_header("Cookie", args.cookie)
    try:
        reply = urllib.request.urlopen(request, timeout=5, context=context)
    except urllib.error.HTTPError as error:
        reply = error
    body = reply.read().decode(errors="replace")
    print(
        json.dumps(
            {
                "status": reply.status,
                "served_by": reply.headers.get("X-Served-By"),
                "set_cookie": reply.headers.get("Set-Cookie"),
                "body": body,
            }
        )
    )


if __name__ == "__main__":
    main()
