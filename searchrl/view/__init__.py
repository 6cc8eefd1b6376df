"""The run viewer: a run directory as a static site that needs no server (``searchrl view RUN_DIR``).

:mod:`.collect` reads what the stages recorded into one model (stages and their settings, result
tables and plots, graded samples with their problems, Guided-ReST generations with the guided prefix
found in the text, self-repair episodes turn by turn, search trees, training curves); :mod:`.sos`
reads a Stream-of-Search trace back into the tree it encodes; :mod:`.site` writes the pages, each
with its data embedded as escaped JSON and drawn by one vanilla script with ``textContent`` only,
so model text always shows as text. The viewer reads files only and imports no torch (it sits in
the base layer of the import contracts).
"""

from .collect import collect
from .site import DEFAULT_PAGE_SIZE, embed_json, write_site
from .sos import parse_trace

__all__ = ["collect", "write_site", "embed_json", "parse_trace", "DEFAULT_PAGE_SIZE"]
