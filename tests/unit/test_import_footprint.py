"""What each long-running process imports: the peak-RSS target counts every one.

Each check runs in a fresh interpreter, since this test process has imported
everything already. Importing redis-py costs a process about 19 MiB of RSS,
falcon about 17, PyJWT with cryptography and bcrypt about 10 (measured with
/proc/self/status on Python 3.11); a process that does not use them must not
pay for them. See bench/README.md, "Peak RSS".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("redis", "falcon", "jwt", "cryptography", "bcrypt", "ssl")

# The path of `dockyard serve` up to starting its children (`supervisor.run`
# replaced, so nothing is started), with the default configuration.
SUPERVISOR = """
import json, sys
from services import supervisor
supervisor.run = lambda children, *_: print(json.dumps(
    {"children": [c.name for c in children],
     "loaded": [m for m in %(heavy)r if m in sys.modules]}))
from services.cli import main
sys.argv = ["dockyard", "serve", "--data-dir", sys.argv[1], "--port", "0"]
try:
    main()
except SystemExit:
    pass
"""

# A router app as `dockyard router` builds it, without access control.
ROUTER = """
import json, sys
from services.router.app import create_app
from shared import config, service_auth
from pathlib import Path
secret = service_auth.ensure_secret_file(Path(sys.argv[1]) / "secret")
cfg = config.load(None, environ={"DOCKYARD_INTERNAL_SECRET_FILE": str(secret)})
create_app(cfg)
print(json.dumps({"loaded": [m for m in %(heavy)r if m in sys.modules]}))
"""


def _run(code: str, tmp_path: Path) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", code % {"heavy": HEAVY}, str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serve_supervisor_loads_no_client_or_web_library(tmp_path: Path) -> None:
    result = _run(SUPERVISOR, tmp_path)
    assert "router" in result["children"] or "router-1" in result["children"]
    assert "notifications" not in result["children"]  # no endpoint: no dispatcher process
    assert result["loaded"] == []


def test_router_without_access_control_loads_no_token_or_password_code(
        tmp_path: Path) -> None:
    loaded = _run(ROUTER, tmp_path)["loaded"]
    assert "falcon" in loaded and "redis" in loaded  # what a router does need
    assert not {"jwt", "bcrypt"} & set(loaded)
