"""searchrl: teach language models to search, and improve them with their own searches.

See README.md for the commands and DESIGN notes for the architecture. Subpackages:
``tasks`` (verifiable problems), ``models``, ``engine`` (generation), ``train``,
``eval``, ``search`` and ``selftrain``.
"""

__version__ = "0.1.0"
