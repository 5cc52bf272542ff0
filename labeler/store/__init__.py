"""The workspace (cache.db): its tables, its vectors, and what is read and written of labels."""
