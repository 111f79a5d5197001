"""The interactive terminal chat (`llmserve -i ...` in process, `llmserve chat --url ...` over HTTP)."""
