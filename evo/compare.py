"""`python -m evo.compare`: the command's name stays; its code is evo/analysis/compare.py."""
import sys

from evo.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
