"""Everything that talks to an LLM or to the workspace (cache.db)."""
