# /// script
# requires-python = ">=3.11"
# dependencies = []
# ///
"""Test job without torch: prints which node it is, then exits with the code given (default 0)."""

import os
import sys

print(f"node {os.environ.get('NODE_RANK')} of {os.environ.get('NNODES')}: exiting {sys.argv[1:]}", flush=True)
raise SystemExit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
