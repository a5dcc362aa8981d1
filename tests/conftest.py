"""pytest set-up: notebooks run on the CPU at fast scale with progress bars off (see nbenv.py)."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbenv import NB_ENV  # noqa: E402

os.environ.update(NB_ENV)
