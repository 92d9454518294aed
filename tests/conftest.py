import os

# Tests never touch the network: the Hub is reached only through a local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
# As `import modeling` does (modeling/__init__.py): OpenMP threads sleep instead of spinning,
# whichever test loads torch first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
NODE = shutil.which("node")


@pytest.fixture
def require_node_tools():
    """`require_node_tools(packages, what, chromium=False)`: skip the test without Node, the npm
    `packages` in tests/browser (and Chromium if asked); fail instead where CI promised them
    (OPENAVATAR_REQUIRE_BROWSER=1, set by .ci/run after installing them)."""

    def require(packages: tuple[str, ...], what: str, chromium: bool = False) -> None:
        reason = None
        if chromium and not Path(CHROMIUM).is_file():
            reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
        elif NODE is None:
            reason = "Node.js is not installed"
        else:
            for package in packages:
                if not (BROWSER_DIR / "node_modules" / package).is_dir():
                    reason = f"{package} is not installed (run `npm ci` in tests/browser)"
                    break
        if reason and os.environ.get("OPENAVATAR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{what} required but {reason}")
        if reason:
            pytest.skip(reason)

    return require
