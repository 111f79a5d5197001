"""One module per API: wire types -> generation jobs -> events -> wire types. No Starlette, no worker
internals.
"""
