"""`python -m evo.report RUN_FOLDER`: the command's name stays; its code is evo/analysis/report.py."""
from evo.analysis.report import main

if __name__ == "__main__":
    main()
