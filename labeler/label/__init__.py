"""Round 0: the LLM backends and prompts, the answer cache, the guard, the rules, and their aggregation."""
