"""evo: EvoPrompting, a code LM as the crossover and mutation operator of neural architecture search."""

__version__ = "0.1.0"
