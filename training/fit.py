"""`python training/fit.py ...`: the command `keras_segmenter.fit`, run from a clone (see its help)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_segmenter.fit import main, make_config  # noqa: E402, F401

if __name__ == "__main__":
    main()
