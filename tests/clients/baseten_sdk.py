"""Baseten's own Python SDK against the gateway: what a backend that only changed its base URL sees.

Usage: baseten_sdk.py BASE_URL API_KEY DEPLOYMENT_ID REQUEST_ID...

Submits one job through the SDK (``async_predict_deployment``) to model ``demo``, then reads
the status of that job and of every REQUEST_ID (jobs the caller put in each state) with
``get_async_request_status``, which parses each record with the SDK's own response model.
Prints one JSON object per line, ``{"request_id", "status", "deployment_id"}``; exits non-zero
with the SDK's error if any call fails or any record does not parse.
"""

import json
import sys

from baseten.client import InferenceClient
from baseten.client.inferenceapi import AsyncPredictRequest


def main() -> None:
    base_url, api_key, deployment_id, *request_ids = sys.argv[1:]
    # A model's base URL, as `model-{id}.api.baseten.co` is; status reads at the gateway's
    # root, where any model's (or chain's) request can be read.
    with InferenceClient(api_key=api_key, base_url_override=f"{base_url}/models/demo") as model, \
            InferenceClient(api_key=api_key, base_url_override=base_url) as gateway:
        submitted = model.api.async_predict_deployment(
            deployment_id=deployment_id,
            request=AsyncPredictRequest(model_input={"from": "the baseten sdk"}),
        )
        for request_id in [submitted.request_id, *request_ids]:
            record = gateway.api.get_async_request_status(request_id=request_id)
            print(json.dumps({"request_id": record.request_id, "status": record.status,
                              "deployment_id": record.deployment_id}))


if __name__ == "__main__":
    main()
