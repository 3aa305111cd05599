"""Container health check: exit 0 when /readyz answers 200 (model loaded, database reachable).

The slim base image has no curl; this uses only the standard library.
"""

import os
import sys
import urllib.error
import urllib.request

# Empty counts as unset, as for every setting (compose passes ${BIND:-}).
port = (os.environ.get("BIND", "").strip() or "0.0.0.0:8000").rsplit(":", 1)[-1]
# gunicorn refuses a path outside its SCRIPT_NAME (docs/deployment.md, "Under a path"): /readyz was a 500.
prefix = os.environ.get("SCRIPT_NAME", "").strip().rstrip("/")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}/readyz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as exc:  # 503 carries the reason in its JSON body
    print(exc.read().decode("utf-8", "replace")[:500])
    sys.exit(1)
except OSError as exc:
    print(f"readyz unreachable: {exc}")
    sys.exit(1)
