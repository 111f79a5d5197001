"""NVIDIA's tritonclient (HTTP), unchanged, against llmserve: python triton_client.py HOST:PORT.
Run in its own process by tests/server/test_tritonclient.py (tritonclient's HTTP client uses gevent)."""

import json
import sys

import numpy as np
import tritonclient.http as httpclient

url = sys.argv[1]
c = httpclient.InferenceServerClient(url=url)
out = {}
out["live"] = c.is_server_live()
out["ready"] = c.is_server_ready()
out["server"] = c.get_server_metadata()
out["index_before"] = c.get_model_repository_index()
c.load_model("tiny")
out["model_ready"] = c.is_model_ready("tiny", "1")
out["metadata"] = c.get_model_metadata("tiny")
inp = httpclient.InferInput("text_input", [1], "BYTES")
inp.set_data_from_numpy(np.array(["hello there"], dtype=object), binary_data=False)
wanted = [httpclient.InferRequestedOutput("text_output", binary_data=False)]
res = c.infer("tiny", [inp], outputs=wanted, parameters={"temperature": 0, "max_tokens": 8})
out["infer"] = res.get_response()
c.unload_model("tiny")
out["ready_after_unload"] = c.is_model_ready("tiny")
out["index_after"] = c.get_model_repository_index()
print(json.dumps(out, default=str))
