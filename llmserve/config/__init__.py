"""Configuration: the multi-model JSON file's entries and their options, sizes, keep-alive durations,
entries registered at run time. A leaf layer: imports only llmserve.errors.
"""
