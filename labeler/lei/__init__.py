"""The LEI table: log templates (Drain3) and an LLM's interpretation of each, reviewed."""
