"""The run's database: ``database`` (the SQLite archive of children, rounds and costs) and ``runs`` (the one way
to find run folders and open their archives). ``from evo.archive import Archive`` is the interface."""

from evo.archive.database import Archive, Child

__all__ = ["Archive", "Child"]
