"""Repository tools: the demo and the soak. Not part of the lembro package; run them from
the repository root with ``make demo`` / ``make soak`` (``python -m tools.demo``).
"""
