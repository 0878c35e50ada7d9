"""The REST server behind `python -m handshape_tf.serve` (its command line and documentation).

`model`: TF Serving's REST semantics on a loaded SavedModel and the JSON <-> numpy conversions;
`http`: the HTTP front end (routes, body and connection bounds) and `make_server`.
"""
