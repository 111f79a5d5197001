"""Unit tests of the wire types (llmserve/protocol/): no server, no model. A package, so that its test
modules may share basenames with the end-to-end tests in tests/ (test_embeddings.py)."""
