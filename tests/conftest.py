"""pytest's fixtures and hooks; the helpers the tests share are in tests/testing.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
