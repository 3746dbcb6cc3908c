# /// script
# requires-python = ">=3.11"
# dependencies = ["torch==2.13.0"]
# ///
"""Test job for endings: every worker saves a "checkpoint" on SIGTERM, slowly, as real jobs do.

Each torchrun worker writes `$OUT/started-<RANK>`, starts a descendant in its own session that ignores
SIGTERM (a stray data loader, say; its pid goes to `$OUT/stray-<RANK>`), touches HEARTBEAT_FILE, and
waits. On SIGTERM it sleeps HANDLER_S seconds (default 3) and only then writes `$OUT/saved-<RANK>` with
the seconds it took: the file exists only if the job got its grace period.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

out = Path(os.environ["OUT"])
rank = os.environ.get("RANK", "0")
handler_s = float(os.environ.get("HANDLER_S", "3"))


def save(signum: int, frame: object) -> None:
    started = time.monotonic()
    time.sleep(handler_s)
    (out / f"saved-{rank}").write_text(f"{time.monotonic() - started:.3f}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, save)
stray = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ],
    start_new_session=True,
)
(out / f"stray-{rank}").write_text(f"{stray.pid}\n")
if os.environ.get("HEARTBEAT_FILE"):
    Path(os.environ["HEARTBEAT_FILE"]).touch()
(out / f"started-{rank}").write_text(f"{os.getpid()}\n")
print(f"rank {rank}: started, waiting for a signal", flush=True)
while True:
    time.sleep(1)
