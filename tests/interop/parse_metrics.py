#!/usr/bin/env python3
"""Independent parser for signetd's GET /metrics, built on prometheus_client.

Usage:
  parse_metrics.py FILE

Parses FILE, Prometheus text exposition format, with prometheus_client's own parser
(text_string_to_metric_families) and prints every family as one JSON line:
  {"name": ..., "type": ..., "samples": [{"name": ..., "labels": {...}, "value": ...}]}
prometheus_client names a counter family without its "_total" suffix; its samples
keep it.

Exit status:
  0  parsed
  1  the text is not valid exposition format: the parser's error on stderr
  2  bad command line
"""

from __future__ import annotations

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others on bad input
        print(f"INVALID: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for family in families:
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value}
            for s in family.samples
        ]
        print(json.dumps({"name": family.name, "type": family.type, "samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
