import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_report_header(config) -> str:
    """Say which shared data (Darknet's outputs, the cfg corpus) the run tests against, or why none."""
    from oracle import SHARED, SKIP_REASON

    return f"darkcfg shared data: {SHARED}" if SHARED is not None else \
        f"darkcfg shared data: none, the tests that need it skip: {SKIP_REASON}"
