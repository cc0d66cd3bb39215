"""`python training/evaluate.py ...` from a clone: `keras-segmenter evaluate`, the same `main` (see its help)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_segmenter.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
