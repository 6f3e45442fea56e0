"""After a search: ``report`` (a run's summary and plots), ``lineage`` (lineage.html), ``compare`` (variants of a
sweep, Fig. 2, paired tests), ``heldout`` (the best programs retrained), ``final_eval`` (CLRS-30 out of
distribution), ``dataset`` (evaluated children as one file) and ``surrogate_quality`` (COLE's ranking). The search
never imports this package (tests/test_layout.py checks it)."""
