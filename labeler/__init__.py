"""Everything that talks to an LLM or to the workspace (cache.db)."""
import os

# OpenMP threads (llama.cpp's, torch's, faiss's: each reads this once, when its runtime starts)
# busy-wait between jobs by default. On a 2-core machine that makes a Qwen 1.5B call many times
# slower as soon as another runtime or process holds a core; waiting passively keeps it at its
# idle speed. Set here, before any of them is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
