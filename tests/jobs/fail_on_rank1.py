# /// script
# requires-python = ">=3.11"
# dependencies = ["torch==2.13.0"]
# ///
"""Test job under torchrun: rank 1 prints "boom" and fails as FAIL says, while rank 0 is still working.

FAIL: `exit:<code>` (sys.exit), or `signal:<n>` (the worker kills itself with signal n). One committed
script for every failure mode, so that uv builds its torch environment once (it keys a script's
environment by the script's path). torchrun then stops rank 0 (SIGTERM).
"""

import os
import sys
import time

if os.environ["RANK"] == "1":
    print("boom", flush=True)
    how, _, value = os.environ["FAIL"].partition(":")
    if how == "signal":
        os.kill(os.getpid(), int(value))
    sys.exit(int(value))
time.sleep(120)
