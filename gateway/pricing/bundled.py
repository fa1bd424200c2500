"""Where litellm's bundled data files live, found without importing litellm.

Importing litellm takes seconds and does work at import time; the price table and the tiktoken
vocabularies it ships are plain files, so we locate its package directory through the import
system's finder (which reads no module code) and read them as data.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

PRICE_TABLE_FILE = "model_prices_and_context_window_backup.json"
TOKENIZERS_SUBDIR = Path("litellm_core_utils", "tokenizers")


@functools.cache
def litellm_dir() -> Path | None:
    """litellm's package directory, or None when litellm is not installed."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        # ValueError: litellm is in sys.modules with no __spec__ (a stub); treat as absent.
        return None
    if spec is None:
        return None
    candidates = list(spec.submodule_search_locations or ())
    if spec.origin:
        candidates.append(str(Path(spec.origin).parent))
    for candidate in candidates:
        path = Path(candidate)
        if path.is_dir():
            return path
    return None
