"""The search itself, the paper's Algorithms 1-3: ``loop`` (Algorithm 1, the rounds), ``crossmut`` (Algorithm 2,
the LM as crossover and mutation; with ``prompt`` and ``repair``), ``filter_eval`` (Algorithm 3, the filter and
the evaluation of children; with ``program``'s static checks and code hashes), ``selection`` (the parents),
``tuning`` (the soft prompt between rounds), ``surrogate`` (COLE, not in the paper) and ``evaluators`` /
``devices`` (where children train: local processes, GPUs, SLURM). Nothing here imports ``evo.analysis``."""
