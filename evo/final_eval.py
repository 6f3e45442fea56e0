"""`python -m evo.final_eval`: the command's name stays; its code is evo/analysis/final_eval.py."""
from evo.analysis.final_eval import cli

if __name__ == "__main__":
    cli()
