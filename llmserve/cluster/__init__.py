"""`llmserve ray`: llmserve as a Ray Serve application. An ingress reads which model a request names and
sends it, through Ray Serve's model multiplexing, to a replica that holds that model (loading it there
if none does); each replica is a whole llmserve app with its own registry under its own memory budget,
built by llmserve/build.py like `llmserve multi-model`'s. Only app.py, replica.py, ingress.py and
directory.py import Ray."""
