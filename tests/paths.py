"""Paths tests share; no Django imports, so subprocess scripts can import it too."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shared real datasets (tests that use them skip when the folder is absent).
SHARED_DATA = Path(os.environ.get("LEPTON_SHARED_DATA") or ROOT.parent / "shared" / "data")
