"""kgpipe's runners: the CLI now; batch extraction, the vector store, search and the API next.

`pipeline` composes `kg` and `encoders`; nothing imports it back.
"""
