"""``python -m flaxcnn.train``: see :mod:`flaxcnn.train.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
