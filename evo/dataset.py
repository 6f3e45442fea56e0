"""`python -m evo.dataset`: the command's name stays; its code is evo/analysis/dataset.py."""
import sys

from evo.analysis.dataset import main

if __name__ == "__main__":
    sys.exit(main())
