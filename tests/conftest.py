"""tests/ mirrors the layout (core/, infra/, train/, theory/, wsi/, book/, chapters/, data_prep/, notebooks/);
the fixture writers shared across folders (`slide_fixtures`) live here, importable from every folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
