"""`python -m evo.lineage`: the command's name stays; its code is evo/analysis/lineage/__init__.py."""
import sys

from evo.analysis.lineage import main

if __name__ == "__main__":
    sys.exit(main())
