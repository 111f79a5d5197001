"""llmserve: an OpenAI-compatible multi-model LLM server. Importing this package stays light (no torch)."""

__version__ = "0.1.0"
