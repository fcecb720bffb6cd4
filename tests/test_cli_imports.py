"""``prefloop --help`` stays instant: the command's modules import no heavy library at import time (the stage
CLIs import theirs inside ``main``). Checked in a fresh interpreter, by the modules it ends up holding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "numpy", "textual", "datasets", "matplotlib", "peft")


def test_the_command_and_its_help_import_no_heavy_library() -> None:
    code = ("import contextlib, io, json, sys\n"
            "from loop.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
