"""Real llama.cpp server fixtures (filled in by the llama.cpp work)."""
