"""Wire types only, one module per API (pydantic models, strict types, nothing heavy)."""
