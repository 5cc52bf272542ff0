"""LLM backends: llamacpp (default, in-process CPU), openai (any OpenAI-compatible server), tgi, vllm."""
