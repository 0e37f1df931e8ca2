#!/usr/bin/env python3
"""Container health check of the web service: exit 0 when the API answers.

    dermscreen-healthcheck [URL]    # default http://127.0.0.1:8000/api/v1/openapi.json
"""

import sys
import urllib.request

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/api/v1/openapi.json"

try:
    with urllib.request.urlopen(URL, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as error:
    print(f"unhealthy: {error}", file=sys.stderr)
    sys.exit(1)
