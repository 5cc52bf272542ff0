"""Everything that talks to an LLM or to the workspace (cache.db)."""
import os

# OpenMP threads (llama.cpp's, torch's, faiss's: each reads this once, when its runtime starts)
# busy-wait between jobs by default. On a 2-core machine that turns a 0.5 s Qwen 1.5B call into
# 10-25 s as soon as another runtime or process holds a core (measured at load 3-5); waiting
# passively keeps it near 0.5 s. Set here, before any of them is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
