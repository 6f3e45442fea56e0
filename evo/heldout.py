"""`python -m evo.heldout`: the command's name stays; its code is evo/analysis/heldout.py."""
import sys

from evo.analysis.heldout import main

if __name__ == "__main__":
    sys.exit(main())
