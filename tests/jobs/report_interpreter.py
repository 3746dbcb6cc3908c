"""Test job for the job kinds (tests/test_supervisor.py): one line on stdout, `skyops-report <JSON>`, with
the interpreter it runs on, the environment variables a leak would show in, and its arguments."""

import importlib.util
import json
import os
import sys

print(
    "skyops-report "
    + json.dumps(
        {
            "executable": sys.executable,
            "prefix": sys.prefix,
            "virtual_env": os.environ.get("VIRTUAL_ENV"),
            "path": os.environ.get("PATH", ""),
            "pythonpath": os.environ.get("PYTHONPATH"),
            "uv_vars": sorted(k for k in os.environ if k == "UV" or k.startswith("UV_")),
            "argv": sys.argv[1:],
            "torch": importlib.util.find_spec("torch") is not None,
        }
    ),
    flush=True,
)
