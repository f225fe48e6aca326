"""Make the shared test harness (consensus_harness.py) importable by the tests here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
