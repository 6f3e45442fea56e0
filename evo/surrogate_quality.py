"""`python -m evo.surrogate_quality`: the command's name stays; its code is evo/analysis/surrogate_quality.py."""
import sys

from evo.analysis.surrogate_quality import main

if __name__ == "__main__":
    sys.exit(main())
