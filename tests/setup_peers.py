"""Install the real peers tests need that pip cannot bring (Debian packages), best effort.

Tests that need a peer skip with a clear reason when it is missing, except under CI, where they fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

DEBIAN = {
    "prometheus-alertmanager": "prometheus-alertmanager",  # inbound Alertmanager end-to-end test
    "chromium": "chromium",                                # console browser test
    "chromedriver": "chromium-driver",
}


def main() -> int:
    missing = [pkg for cmd, pkg in DEBIAN.items() if shutil.which(cmd) is None]
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"setup_peers: cannot install {missing} (not root or no apt-get); their tests will skip",
              file=sys.stderr)
        return 0
    print(f"setup_peers: installing {' '.join(missing)} ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, stdout=subprocess.DEVNULL)
    res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                         check=False, stdout=subprocess.DEVNULL)
    if res.returncode != 0:
        print(f"setup_peers: apt-get install failed ({res.returncode}); dependent tests will skip", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
